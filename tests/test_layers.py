"""Specification of the layers: exact gradients (float64 central differences), equality with torch.nn,
dropout semantics, dtypes, shapes and the Layer protocol."""

from __future__ import annotations

import numpy as np
import pytest

from cnn.activations import ReLU
from cnn.errors import CNNError
from cnn.gradcheck import numerical_gradient_array, rel_error
from cnn.layers import (
    AvgPool2D,
    BatchNorm1D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Dropout2D,
    Flatten,
    Layer,
    MaxPool2D,
)

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (N, C, H, W), out_channels, kernel_size, stride, padding: kernel 1 and 5, stride 2, padding 2,
# non-square inputs and kernels, odd sizes.
CONV_CASES = [
    ((2, 3, 7, 6), 4, 3, 1, 1),
    ((2, 2, 9, 7), 3, 3, 2, 2),
    ((3, 3, 5, 5), 2, 1, 1, 0),
    ((2, 2, 8, 9), 3, 5, 1, 2),
    ((2, 2, 7, 5), 2, (3, 1), (2, 1), (1, 0)),
    ((1, 1, 6, 6), 2, 2, 2, 0),
]
# (N, C, H, W), kernel_size, stride, padding
POOL_CASES = [
    ((2, 3, 8, 8), 2, None, 0),
    ((2, 2, 7, 9), 3, 2, 1),
    ((1, 2, 9, 6), (3, 2), (2, 1), (1, 1)),
    ((2, 1, 5, 5), 2, 1, 0),
    ((2, 2, 11, 7), 5, 2, 2),
]


def t(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


# Step of the central differences: large enough that round-off in the summed objective stays far below
# 1e-6 relative even for small gradient entries, small enough that the O(h^2) truncation error does too.
H = 1e-5


def input_grad_error(layer: Layer, x: np.ndarray, dout: np.ndarray) -> float:
    layer.forward(x)
    analytic = layer.backward(dout)
    numeric = numerical_gradient_array(lambda: layer.forward(x), x, dout, h=H)
    return rel_error(analytic, numeric)


def param_grad_errors(layer: Layer, x: np.ndarray, dout: np.ndarray) -> dict[str, float]:
    errors = {}
    for name, p in layer.params.items():
        layer.forward(x)
        layer.backward(dout)
        analytic = layer.grads[name].copy()
        numeric = numerical_gradient_array(lambda: layer.forward(x), p, dout, h=H)
        errors[name] = rel_error(analytic, numeric)
    return errors


def distinct_values(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values at least 0.01 apart: no ties in a max-pool window, so finite differences never cross a kink."""
    return rng.permutation(np.arange(np.prod(shape), dtype=np.float64)).reshape(shape) * 0.01 - 1.0


# ------------------------------------------------------------------------------------------ gradients


@pytest.mark.parametrize(("shape", "out_ch", "k", "s", "p"), CONV_CASES)
def test_conv2d_gradients_match_central_differences(rng, shape, out_ch, k, s, p):
    layer = Conv2D(shape[1], out_ch, k, stride=s, padding=p, dtype=np.float64, rng=rng)
    layer.params["bias"][...] = rng.standard_normal(out_ch)
    x = rng.standard_normal(shape)
    dout = rng.standard_normal((shape[0], *layer.output_shape(shape[1:])))
    assert input_grad_error(layer, x, dout) < 1e-6
    for name, err in param_grad_errors(layer, x, dout).items():
        assert err < 1e-6, name


@pytest.mark.parametrize(("shape", "k", "s", "p"), POOL_CASES)
@pytest.mark.parametrize("pool", [MaxPool2D, AvgPool2D])
def test_pool_input_gradient_matches_central_differences(rng, pool, shape, k, s, p):
    layer = pool(k, stride=s, padding=p)
    x = distinct_values(rng, shape)
    dout = rng.standard_normal((shape[0], *layer.output_shape(shape[1:])))
    assert input_grad_error(layer, x, dout) < 1e-6


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(("layer_cls", "shape"), [(BatchNorm2D, (4, 3, 5, 3)), (BatchNorm1D, (6, 5))])
def test_batchnorm_gradients_match_central_differences(rng, layer_cls, shape, training):
    layer = layer_cls(shape[1], dtype=np.float64)
    layer.params["weight"][...] = rng.uniform(0.5, 1.5, shape[1])
    layer.params["bias"][...] = rng.standard_normal(shape[1])
    layer.buffers["running_mean"][...] = rng.standard_normal(shape[1])
    layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, shape[1])
    layer.train(training)
    x = rng.standard_normal(shape) * 2.0 + 0.5
    dout = rng.standard_normal(shape)
    assert input_grad_error(layer, x, dout) < 1e-6
    for name, err in param_grad_errors(layer, x, dout).items():
        assert err < 1e-6, name


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(("layer_cls", "shape"), [(BatchNorm2D, (4, 3, 5, 3)), (BatchNorm1D, (6, 5))])
def test_fused_batchnorm_relu_gradients_match_central_differences(rng, layer_cls, shape, training):
    # forward_relu is max(bn(x), 0) in one pass; its backward takes the gradient of the ReLU's output.
    layer = layer_cls(shape[1], dtype=np.float64)
    layer.params["weight"][...] = rng.uniform(0.5, 1.5, shape[1])
    layer.params["bias"][...] = rng.uniform(-0.5, 0.5, shape[1])
    layer.buffers["running_mean"][...] = rng.standard_normal(shape[1])
    layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, shape[1])
    layer.train(training)
    x = rng.standard_normal(shape) * 2.0 + 0.5
    dout = rng.standard_normal(shape)
    y = layer.forward_relu(x)
    assert 0 < np.count_nonzero(y) < y.size  # the ReLU both passes and blocks some units
    analytic = layer.backward(dout)
    grads = {k: g.copy() for k, g in layer.grads.items()}
    assert rel_error(analytic, numerical_gradient_array(lambda: layer.forward_relu(x), x, dout, h=H)) < 1e-6
    for name, p in layer.params.items():
        numeric = numerical_gradient_array(lambda: layer.forward_relu(x), p, dout, h=H)
        assert rel_error(grads[name], numeric) < 1e-6, name


@pytest.mark.parametrize(("layer_cls", "shape"), [(BatchNorm2D, (4, 3, 5, 3)), (BatchNorm1D, (6, 5))])
def test_fused_batchnorm_relu_equals_batchnorm_then_relu_over_training_steps_then_eval(rng, layer_cls, shape):
    fused, plain = layer_cls(shape[1], dtype=np.float64), layer_cls(shape[1], dtype=np.float64)
    relu = ReLU()
    for layer in (fused, plain):
        layer.params["bias"][...] = np.linspace(-0.5, 0.5, shape[1])
    for mode in [True] * 3 + [False] * 2:
        fused.train(mode), plain.train(mode)
        x, dout = rng.standard_normal(shape) * 2.0 + 0.5, rng.standard_normal(shape)
        y = fused.forward_relu(x)
        np.testing.assert_allclose(y, relu.forward(plain.forward(x)), rtol=1e-13, atol=1e-15)
        dx, ref_dx = fused.backward(dout), plain.backward(relu.backward(dout))
        np.testing.assert_allclose(dx, ref_dx, rtol=1e-11, atol=1e-13)
        for name in ("weight", "bias"):
            np.testing.assert_allclose(fused.grads[name], plain.grads[name], rtol=1e-11, atol=1e-13)
        for name, buf in plain.buffers.items():
            np.testing.assert_array_equal(fused.buffers[name], buf)
        # A plain forward after a fused one is plain again: no ReLU mask left behind.
        np.testing.assert_allclose(fused.forward(x), plain.forward(x), rtol=1e-13, atol=1e-15)
        fused.backward(dout), plain.backward(dout)
        np.testing.assert_allclose(fused.grads["bias"], plain.grads["bias"], rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize(("k", "s", "p"), [(2, 2, 0), (3, 2, 1)])
def test_fused_maxpool_dropout2d_gradient_matches_central_differences(rng, k, s, p):
    # forward_dropout is Dropout2D(MaxPool2D(x)) in one pass; its backward takes the gradient of the
    # dropout's output. The mask is re-drawn from the same seed on each call, so the function is fixed.
    pool, drop = MaxPool2D(k, s, p), Dropout2D(0.5)
    x, seed = rng.standard_normal((3, 4, 7, 6)), 5

    def fused() -> np.ndarray:
        drop.rng = np.random.default_rng(seed)
        return pool.forward_dropout(x, drop)

    y = fused()
    assert 0 < np.count_nonzero(drop._mask) < drop._mask.size  # some maps dropped, some kept
    dout = rng.standard_normal(y.shape)
    analytic = pool.backward(dout)
    assert rel_error(analytic, numerical_gradient_array(fused, x, dout, h=H)) < 1e-6


@pytest.mark.parametrize("p", [0.0, 0.4])
def test_fused_maxpool_dropout2d_equals_maxpool_then_dropout2d_in_training_and_eval(rng, p):
    fused_pool, fused_drop = MaxPool2D(2), Dropout2D(p, rng=np.random.default_rng(7))
    pool, drop = MaxPool2D(2), Dropout2D(p, rng=np.random.default_rng(7))
    for mode in [True, True, False]:
        fused_drop.train(mode), drop.train(mode)
        x = rng.standard_normal((5, 3, 6, 8)).astype(np.float32)  # float32: the mask's dtype too
        y, ref = fused_pool.forward_dropout(x, fused_drop), drop.forward(pool.forward(x))
        assert y.dtype == ref.dtype == np.float32
        np.testing.assert_array_equal(y, ref)  # the same draws from the same rng, the same products
        dout = rng.standard_normal(y.shape).astype(np.float32)
        np.testing.assert_array_equal(fused_pool.backward(dout), pool.backward(drop.backward(dout)))
        # The dropout layer keeps its mask, and a plain pool forward after a fused one is plain again.
        np.testing.assert_array_equal(fused_drop.backward(dout), drop.backward(dout))
        np.testing.assert_array_equal(fused_pool.forward(x), pool.forward(x))
        np.testing.assert_array_equal(fused_pool.backward(dout), pool.backward(dout))


def test_conv2d_without_input_gradient_returns_none_and_the_same_parameter_gradients(rng):
    shape = (3, 2, 7, 6)
    a, b = Conv2D(2, 4, 3, padding=1, dtype=np.float64), Conv2D(2, 4, 3, padding=1, dtype=np.float64)
    b.params["weight"][...] = a.params["weight"]
    b.needs_input_grad = False
    x, dout = rng.standard_normal(shape), rng.standard_normal((3, 4, 7, 6))
    a.forward(x), b.forward(x)
    assert a.backward(dout).shape == shape
    assert b.backward(dout) is None
    for name in a.grads:
        np.testing.assert_array_equal(b.grads[name], a.grads[name])


@pytest.mark.parametrize("bias", [True, False])
def test_dense_gradients_match_central_differences(rng, bias):
    layer = Dense(7, 4, bias=bias, dtype=np.float64, rng=rng)
    x = rng.standard_normal((5, 7))
    dout = rng.standard_normal((5, 4))
    assert input_grad_error(layer, x, dout) < 1e-6
    for name, err in param_grad_errors(layer, x, dout).items():
        assert err < 1e-6, name


# ------------------------------------------------------------------------------------- against torch


@pytest.mark.parametrize(("shape", "out_ch", "k", "s", "p"), CONV_CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_equals_torch_forward_and_gradients(rng, shape, out_ch, k, s, p, bias):
    layer = Conv2D(shape[1], out_ch, k, stride=s, padding=p, bias=bias, dtype=np.float64, rng=rng)
    if bias:
        layer.params["bias"][...] = rng.standard_normal(out_ch)
    ref = torch.nn.Conv2d(shape[1], out_ch, k, stride=s, padding=p, bias=bias, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(t(layer.params["weight"]))
        if bias:
            ref.bias.copy_(t(layer.params["bias"]))
    x = rng.standard_normal(shape)
    xt = t(x).requires_grad_()
    y = layer.forward(x)
    yt = ref(xt)
    dout = rng.standard_normal(y.shape)
    yt.backward(t(dout))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.backward(dout), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["weight"], ref.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
    if bias:
        np.testing.assert_allclose(layer.grads["bias"], ref.bias.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("shape", "k", "s", "p"), POOL_CASES)
@pytest.mark.parametrize(
    ("ours", "theirs"), [(MaxPool2D, torch.nn.MaxPool2d), (AvgPool2D, torch.nn.AvgPool2d)]
)
def test_pool_equals_torch_forward_and_gradient(rng, ours, theirs, shape, k, s, p):
    # Rounded values make ties common (as after a ReLU): the gradient must go where torch sends it.
    x = np.round(rng.standard_normal(shape), 1)
    layer, ref = ours(k, stride=s, padding=p), theirs(k, stride=s, padding=p)
    xt = t(x).requires_grad_()
    y, yt = layer.forward(x), ref(xt)
    dout = rng.standard_normal(y.shape)
    yt.backward(t(dout))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.backward(dout), xt.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_maxpool_gradient_goes_to_first_maximum_on_ties():
    layer = MaxPool2D(2)
    layer.forward(np.zeros((1, 1, 2, 2)))
    np.testing.assert_array_equal(layer.backward(np.ones((1, 1, 1, 1)))[0, 0], [[1.0, 0.0], [0.0, 0.0]])


@pytest.mark.parametrize(
    ("ours", "theirs", "shape"),
    [(BatchNorm2D, torch.nn.BatchNorm2d, (4, 3, 5, 3)), (BatchNorm1D, torch.nn.BatchNorm1d, (6, 5))],
)
def test_batchnorm_equals_torch_over_training_steps_then_eval(rng, ours, theirs, shape):
    layer = ours(shape[1], eps=1e-3, momentum=0.2, dtype=np.float64)
    ref = theirs(shape[1], eps=1e-3, momentum=0.2, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(t(rng.uniform(0.5, 1.5, shape[1])))
        ref.bias.copy_(t(rng.standard_normal(shape[1])))
    layer.params["weight"][...] = ref.weight.detach().numpy()
    layer.params["bias"][...] = ref.bias.detach().numpy()
    for mode in ["train"] * 3 + ["eval"] * 2:
        layer.train(mode == "train")
        ref.train(mode == "train")
        x = rng.standard_normal(shape) * 3.0 + 1.0
        xt = t(x).requires_grad_()
        ref.zero_grad()
        y, yt = layer.forward(x), ref(xt)
        dout = rng.standard_normal(shape)
        yt.backward(t(dout))
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.backward(dout), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.grads["weight"], ref.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.grads["bias"], ref.bias.grad.numpy(), rtol=1e-10, atol=1e-12)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            np.testing.assert_allclose(
                layer.buffers[name], getattr(ref, name).numpy(), rtol=1e-12, err_msg=name
            )
    assert set(layer.params) | set(layer.buffers) == set(ref.state_dict())


def test_batchnorm_running_variance_is_unbiased_and_momentum_weights_the_new_batch(rng):
    layer = BatchNorm1D(1, momentum=0.1, dtype=np.float64)
    x = np.array([[1.0], [2.0], [6.0]])
    layer.forward(x)
    assert layer.buffers["running_mean"][0] == pytest.approx(0.9 * 0.0 + 0.1 * 3.0)
    assert layer.buffers["running_var"][0] == pytest.approx(0.9 * 1.0 + 0.1 * np.var(x, ddof=1))


@pytest.mark.parametrize("bias", [True, False])
def test_dense_equals_torch_linear(rng, bias):
    layer = Dense(6, 3, bias=bias, dtype=np.float64, rng=rng)
    ref = torch.nn.Linear(6, 3, bias=bias, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(t(layer.params["weight"]))
        if bias:
            ref.bias.copy_(t(rng.standard_normal(3)))
            layer.params["bias"][...] = ref.bias.numpy()
    x = rng.standard_normal((4, 6))
    xt = t(x).requires_grad_()
    y, yt = layer.forward(x), ref(xt)
    dout = rng.standard_normal(y.shape)
    yt.backward(t(dout))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.backward(dout), xt.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.grads["weight"], ref.weight.grad.numpy(), rtol=1e-12)
    if bias:
        np.testing.assert_allclose(layer.grads["bias"], ref.bias.grad.numpy(), rtol=1e-12)


def test_flatten_equals_torch_flatten_and_backward_restores_shape(rng):
    x = rng.standard_normal((3, 2, 4, 5))
    layer = Flatten()
    y = layer.forward(x)
    np.testing.assert_array_equal(y, torch.nn.Flatten()(t(x)).numpy())
    assert layer.output_shape((2, 4, 5)) == (40,)
    np.testing.assert_array_equal(layer.backward(y), x)


# ------------------------------------------------------------------------------------------ dropout


@pytest.mark.parametrize("p", [0.25, 0.5, 0.8])
def test_dropout_keeps_each_unit_with_probability_one_minus_p_and_scales_kept_units(p):
    layer = Dropout(p, rng=np.random.default_rng(1))
    y = layer.forward(np.ones((200, 500), dtype=np.float32))
    kept = y != 0
    assert abs(kept.mean() - (1 - p)) < 0.005  # 100k draws: std of the mean is < 0.0016
    np.testing.assert_allclose(y[kept], 1.0 / (1.0 - p), rtol=1e-6)
    assert abs(y.mean() - 1.0) < 0.02  # inverted dropout: the expectation is preserved


def test_dropout_backward_uses_the_forward_mask():
    layer = Dropout(0.5, rng=np.random.default_rng(2))
    y = layer.forward(np.ones((10, 10)))
    np.testing.assert_array_equal(layer.backward(np.ones((10, 10))), y)


@pytest.mark.parametrize("layer_cls", [Dropout, Dropout2D])
def test_dropout_is_the_identity_in_eval_mode(rng, layer_cls):
    layer = layer_cls(0.5, rng=rng).eval()
    x = rng.standard_normal((4, 3, 2, 2))
    np.testing.assert_array_equal(layer.forward(x), x)
    np.testing.assert_array_equal(layer.backward(x), x)


def test_dropout2d_drops_whole_channels_with_probability_p():
    layer = Dropout2D(0.3, rng=np.random.default_rng(3))
    y = layer.forward(np.ones((400, 50, 3, 4), dtype=np.float32))
    per_channel = y.reshape(400, 50, -1)
    # Every feature map is either all zero or all 1/(1-p).
    assert np.all(per_channel.min(axis=2) == per_channel.max(axis=2))
    kept = per_channel[:, :, 0] != 0
    assert abs(kept.mean() - 0.7) < 0.01  # 20k channels
    np.testing.assert_allclose(per_channel[:, :, 0][kept], 1 / 0.7, rtol=1e-6)


@pytest.mark.parametrize("layer_cls", [Dropout, Dropout2D])
def test_dropout_is_reproducible_from_its_rng(layer_cls):
    x = np.ones((4, 3, 5, 5), dtype=np.float32)
    a = layer_cls(0.5, rng=np.random.default_rng(7)).forward(x)
    b = layer_cls(0.5, rng=np.random.default_rng(7)).forward(x)
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- dtypes, shapes, protocol


def _float32_network(rng: np.random.Generator) -> list[Layer]:
    return [
        Conv2D(1, 4, 3, padding=1, bias=False, rng=rng),
        BatchNorm2D(4),
        MaxPool2D(2),
        AvgPool2D(2),
        Dropout2D(0.25, rng=rng),
        Flatten(),
        Dense(4 * 3 * 3, 5, bias=False, rng=rng),
        BatchNorm1D(5),
        Dropout(0.5, rng=rng),
        Dense(5, 3, rng=rng),
    ]


def test_float32_stays_float32_through_forward_and_backward(rng):
    layers = _float32_network(rng)
    x = rng.standard_normal((4, 1, 12, 12)).astype(np.float32)
    for layer in layers:
        x = layer.forward(x)
        assert x.dtype == np.float32, type(layer).__name__
    g = np.ones_like(x)
    for layer in reversed(layers):
        g = layer.backward(g)
        assert g.dtype == np.float32, type(layer).__name__
        for name in layer.params:
            assert layer.params[name].dtype == layer.grads[name].dtype == np.float32


def test_output_shape_agrees_with_forward(rng):
    x = rng.standard_normal((2, 1, 12, 12)).astype(np.float32)
    for layer in _float32_network(rng):
        y = layer.forward(x)
        assert layer.output_shape(x.shape[1:]) == y.shape[1:], type(layer).__name__
        x = y


def test_backward_overwrites_the_same_grad_arrays(rng):
    layer = Conv2D(2, 3, 3, rng=rng, dtype=np.float64)
    held = dict(layer.grads)
    x = rng.standard_normal((2, 2, 5, 5))
    dout = rng.standard_normal((2, 3, 3, 3))
    layer.forward(x)
    layer.backward(dout)
    first = held["weight"].copy()
    layer.forward(x)
    layer.backward(dout)
    assert all(layer.grads[k] is held[k] for k in held)
    np.testing.assert_array_equal(held["weight"], first)  # overwritten, not accumulated


def test_he_normal_initialisation_and_torch_parameter_shapes():
    conv = Conv2D(16, 64, 3, rng=np.random.default_rng(0))
    dense = Dense(400, 300, rng=np.random.default_rng(0))
    assert conv.params["weight"].shape == (64, 16, 3, 3) and dense.params["weight"].shape == (300, 400)
    assert conv.params["weight"].std() == pytest.approx(np.sqrt(2 / (16 * 9)), rel=0.03)
    assert dense.params["weight"].std() == pytest.approx(np.sqrt(2 / 400), rel=0.03)
    assert not conv.params["bias"].any() and not dense.params["bias"].any()
    a, b = Conv2D(3, 4, 3, rng=np.random.default_rng(5)), Conv2D(3, 4, 3, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a.params["weight"], b.params["weight"])


def test_kernel_stride_padding_accept_int_or_pair():
    layer = Conv2D(1, 1, (3, 5), stride=(2, 1), padding=(0, 2))
    assert (layer.kernel_size, layer.stride, layer.padding) == ((3, 5), (2, 1), (0, 2))
    assert MaxPool2D(3).stride == (3, 3) and AvgPool2D((2, 3), stride=1).stride == (1, 1)


@pytest.mark.parametrize(
    ("build", "x_shape", "message"),
    [
        (lambda: Conv2D(3, 4, 3), (2, 2, 8, 8), "in_channels=3"),
        (lambda: Conv2D(1, 4, 5), (2, 1, 3, 3), "does not fit"),
        (lambda: Dense(5, 2), (2, 4), "in_features=5"),
        (lambda: BatchNorm2D(3), (2, 3, 4), r"\(N, C, H, W\)"),
        (lambda: BatchNorm1D(3), (1, 3), "more than 1 value"),
        (lambda: MaxPool2D(3), (1, 1, 2, 2), "does not fit"),
    ],
)
def test_bad_input_shapes_raise_a_clear_error(build, x_shape, message):
    with pytest.raises(CNNError, match=message):
        build().forward(np.zeros(x_shape, dtype=np.float32))


@pytest.mark.parametrize(
    "build",
    [
        lambda: Conv2D(1, 1, 0),
        lambda: Conv2D(1, 1, "3"),
        lambda: MaxPool2D(2, padding=2),
        lambda: Dropout(1.0),
        lambda: BatchNorm2D(0),
        lambda: Dense(3, 2, dtype=np.int32),
    ],
)
def test_bad_constructor_arguments_raise_cnn_error(build):
    with pytest.raises(CNNError):
        build()
