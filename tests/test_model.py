"""CNN and Sequential: structure, initialisation, gradients, training, inference, summary, feature maps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from cnn import CNN, Sequential
from cnn.activations import ReLU
from cnn.architecture import ArchConfig
from cnn.errors import CheckpointError, CNNError, ConfigError, DataError, TrainingDivergedError
from cnn.gradcheck import numerical_gradient, rel_error
from cnn.layers import BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Dropout2D, Flatten, MaxPool2D
from cnn.losses import CrossEntropyLoss
from cnn.optimizers import SGD, Adam
from cnn.schedulers import ExponentialLR

TINY = dict(input_shape=(1, 8, 8), num_classes=3, conv_channels=((4,), (6,)), dense_units=(8,))


def learnable_data(n: int, seed: int = 0, num_classes: int = 10, shape=(1, 28, 28)):
    """Each class is a fixed random image; samples are that image plus noise of the same scale."""
    rng = np.random.default_rng(seed)
    prototypes = rng.standard_normal((num_classes, *shape))
    y = rng.permutation(np.arange(n) % num_classes)
    X = prototypes[y] + rng.standard_normal((n, *shape))
    return X.astype(np.float32), y


# ----------------------------------------------------------------------------------------- structure
def test_default_cnn_is_the_seed_network_with_torch_style_keys() -> None:
    model = CNN()
    kinds = [type(layer) for layer in model.features] + [type(layer) for layer in model.classifier]
    block = lambda c: [Conv2D, BatchNorm2D, ReLU, Conv2D, BatchNorm2D, ReLU, MaxPool2D, Dropout2D]  # noqa: E731
    assert kinds == block(32) + block(64) + [Flatten, Dense, BatchNorm1D, ReLU, Dropout, Dense]
    assert model.features[7].p == 0.25 and model.classifier[4].p == 0.5
    sd = model.state_dict()
    assert len(sd) == 32 and model.num_parameters() == 468_138
    assert list(sd)[:6] == [
        "features.0.weight",
        "features.1.weight",
        "features.1.bias",
        "features.1.running_mean",
        "features.1.running_var",
        "features.1.num_batches_tracked",
    ]
    assert sd["features.0.weight"].shape == (32, 1, 3, 3)
    assert "features.0.bias" not in sd  # a conv followed by batch norm has no bias
    assert sd["classifier.1.weight"].shape == (128, 64 * 7 * 7)
    assert sd["classifier.5.weight"].shape == (10, 128) and sd["classifier.5.bias"].shape == (10,)
    assert all(v.dtype == np.float32 for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    assert model.config == ArchConfig()


def test_init_is_he_normal_and_deterministic_given_the_seed() -> None:
    a, b, c = CNN(seed=3), CNN(seed=3), CNN(seed=4)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])
    assert not np.array_equal(a.state_dict()["features.3.weight"], c.state_dict()["features.3.weight"])
    w = a.state_dict()["features.11.weight"]  # 64 x 64 x 3 x 3: fan_in 576
    assert abs(w.mean()) < 0.01 and abs(w.std() / np.sqrt(2 / 576) - 1) < 0.02


def test_dropout_masks_are_deterministic_given_the_seed() -> None:
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8))
    a, b = CNN(**TINY, seed=1), CNN(**TINY, seed=1)
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    # Same weights, another dropout stream: training outputs differ, eval outputs (no dropout) do not.
    c, d = CNN(**TINY, seed=1), CNN(**TINY, seed=1)
    np.testing.assert_array_equal(c.eval().forward(x), d.eval().forward(x))
    c.train().features[4].rng = np.random.default_rng(99)
    assert not np.array_equal(c.forward(x), d.train().forward(x))


def test_train_and_eval_reach_every_layer() -> None:
    model = CNN(**TINY).eval()
    assert not model.training
    assert all(not layer.training for layer in (*model.features, *model.classifier))
    model.train()
    assert all(layer.training for layer in (*model.features, *model.classifier))


def test_sequential_names_and_chains_its_layers() -> None:
    rng = np.random.default_rng(0)
    seq = Sequential([Dense(4, 3, dtype=np.float64, rng=rng), ReLU(), Dense(3, 2, dtype=np.float64, rng=rng)])
    assert list(seq.params) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert seq.params["2.weight"] is seq[2].params["weight"]
    x = rng.standard_normal((5, 4))
    np.testing.assert_array_equal(seq.forward(x), seq[2].forward(seq[1].forward(seq[0].forward(x))))
    assert seq.output_shape((4,)) == (2,) and len(seq) == 3
    assert seq.backward(np.ones((5, 2))).shape == (5, 4)


def assert_same_as_layer_by_layer(
    fused: Sequential, plain: Sequential, x: np.ndarray, y: np.ndarray, dout: np.ndarray
) -> None:
    """``y = fused.forward(x)`` and ``fused.backward(dout)`` (its input and parameter gradients) equal
    what ``plain``'s layers give run one after another."""
    ref = x
    for layer in plain:
        ref = layer.forward(ref)
    np.testing.assert_allclose(y, ref, rtol=1e-13, atol=1e-15)
    dx, ref_dx = fused.backward(dout), dout
    for layer in reversed(plain.layers):
        ref_dx = layer.backward(ref_dx)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-11, atol=1e-13)
    for name, g in plain.grads.items():
        np.testing.assert_allclose(fused.grads[name], g, rtol=1e-11, atol=1e-13, err_msg=name)


def test_sequential_fuses_batchnorm_and_relu_with_the_same_results_and_names() -> None:
    rng = np.random.default_rng(0)

    def build() -> Sequential:
        r = np.random.default_rng(1)
        return Sequential(
            [
                Conv2D(2, 3, 3, padding=1, dtype=np.float64, rng=r),
                BatchNorm2D(3, dtype=np.float64),
                ReLU(),
                Flatten(),
                Dense(3 * 5 * 4, 4, dtype=np.float64, rng=r),
                BatchNorm1D(4, dtype=np.float64),
                ReLU(),
            ]
        )

    fused, plain = build(), build()
    assert list(fused.params) == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "4.weight",
        "4.bias",
        "5.weight",
        "5.bias",
    ]
    calls: list[str] = []
    fused[1].forward_relu = lambda x, f=fused[1].forward_relu, **kw: calls.append("bn+relu") or f(x, **kw)
    x, dout = rng.standard_normal((6, 2, 5, 4)), rng.standard_normal((6, 4))
    y = fused.forward(x)
    assert calls == ["bn+relu"]  # the pair ran fused ...
    assert_same_as_layer_by_layer(fused, plain, x, y, dout)  # ... and gives what the layers give


def test_sequential_lets_batch_norm_overwrite_only_arrays_that_no_one_else_holds() -> None:
    # A batch norm after a convolution (or dense layer) keeps its centred values in that layer's fresh
    # output, and computes its input gradient in the fresh gradient of the layer after it; a max-pool
    # after a batch norm + ReLU applies the ReLU's mask on the pooled grid. The same results as the
    # layers run one by one, and the caller's own x and dout are never written to.
    rng = np.random.default_rng(5)

    def build(first_norm: bool) -> Sequential:
        r = np.random.default_rng(1)
        head = [BatchNorm2D(2, dtype=np.float64)] if first_norm else []
        return Sequential(
            [
                *head,
                Conv2D(2, 3, 3, padding=1, dtype=np.float64, rng=r),
                BatchNorm2D(3, dtype=np.float64),
                ReLU(),
                MaxPool2D(2),
                BatchNorm2D(3, dtype=np.float64),
                Conv2D(3, 2, 1, dtype=np.float64, rng=r),
                BatchNorm2D(2, dtype=np.float64),
            ]
        )

    for first_norm in (False, True):
        given, plain = build(first_norm), build(first_norm)
        offset = int(first_norm)
        conv, norm = given[offset], given[offset + 1]
        outputs: list[np.ndarray] = []
        conv.forward = lambda x, f=conv.forward, out=outputs: out.append(f(x)) or out[-1]
        x = np.swapaxes(rng.standard_normal((2, 6, 6, 4)), 0, 1)  # channel-major, as the kernels write
        dout = np.swapaxes(rng.standard_normal((2, 6, 3, 2)), 0, 1)
        x_before, dout_before = x.copy(), dout.copy()
        pool = given[offset + 3]
        pool_calls: list[dict] = []
        pool.backward = lambda g, f=pool.backward, calls=pool_calls, **kw: calls.append(kw) or f(g, **kw)
        y = given.forward(x)
        assert np.shares_memory(norm._cache["centred"], outputs[0])  # the conv's output, handed over
        assert_same_as_layer_by_layer(given, plain, x, y, dout)
        assert pool_calls == [{"relu_before": True}]  # the batch norm's ReLU mask, on the pooled grid
        np.testing.assert_array_equal(x, x_before)
        np.testing.assert_array_equal(dout, dout_before)


def test_sequential_fuses_maxpool_and_dropout2d_with_the_same_results_and_names() -> None:
    rng = np.random.default_rng(3)

    def build() -> Sequential:
        r = np.random.default_rng(1)
        return Sequential(
            [
                Conv2D(2, 3, 3, padding=1, dtype=np.float64, rng=r),
                MaxPool2D(2),
                Dropout2D(0.5, rng=np.random.default_rng(4)),
                Flatten(),
                Dense(3 * 3 * 2, 4, dtype=np.float64, rng=r),
            ]
        )

    fused, plain = build(), build()
    assert list(fused.params) == ["0.weight", "0.bias", "4.weight", "4.bias"]
    calls: list[str] = []
    fused[1].forward_dropout = lambda x, d, f=fused[1].forward_dropout: (
        calls.append("pool+dropout") or f(x, d)
    )
    for mode in (True, False):
        fused.train(mode), plain.train(mode)
        x, dout = rng.standard_normal((6, 2, 6, 5)), rng.standard_normal((6, 4))
        y = fused.forward(x)
        assert calls == ["pool+dropout"]  # the pair ran fused (also in eval: the dropout is the identity)
        calls.clear()
        assert_same_as_layer_by_layer(fused, plain, x, y, dout)  # ... and gives what the layers give


@pytest.mark.parametrize("use_batchnorm", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 5, 64])
def test_forward_inference_equals_the_eval_forward(dtype: type, n: int, use_batchnorm: bool) -> None:
    # The inference path fuses conv (+ batch norm) + ReLU (+ max-pool) into one pass per chunk of samples;
    # it must compute what the layers compute one by one in eval mode, with real statistics.
    model = CNN(seed=3, dtype=dtype, use_batchnorm=use_batchnorm)
    rng = np.random.default_rng(n)
    for _, layer in model.named_layers():
        if isinstance(layer, (BatchNorm1D, BatchNorm2D)):
            c = layer.num_features
            layer.buffers["running_mean"][...] = rng.standard_normal(c)
            layer.buffers["running_var"][...] = rng.uniform(0.2, 3.0, c)
            layer.params["weight"][...] = rng.uniform(0.5, 1.5, c)
            layer.params["bias"][...] = rng.standard_normal(c)
        elif isinstance(layer, Conv2D) and "bias" in layer.params:
            layer.params["bias"][...] = rng.standard_normal(layer.out_channels)
    x = rng.standard_normal((n, 1, 28, 28)).astype(dtype)
    model.eval()
    expected = model.forward(x)
    got = model.classifier.forward_inference(model.features.forward_inference(x))
    # the batch norms are folded into the convolutions: equal up to float round-off
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * np.abs(expected).max())
    z = np.exp(expected - expected.max(axis=1, keepdims=True))
    np.testing.assert_allclose(model.predict_proba(x), z / z.sum(axis=1, keepdims=True), rtol=tol, atol=tol)


def test_forward_inference_runs_the_plain_forward_in_training_and_allows_no_backward() -> None:
    model = CNN(**TINY, dtype=np.float64)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 1, 8, 8))
    train_out = Sequential(model.features.layers).forward_inference(x)  # training mode: the usual forward
    assert train_out.shape[0] == 4
    model.eval()
    model.features.forward_inference(x)
    with pytest.raises(CNNError, match="forward_inference"):
        model.features.backward(np.ones(model.features.output_shape((1, 8, 8)))[None].repeat(4, 0))
    conv = model.features[0]
    with pytest.raises(CNNError, match="before conv2d_forward"):  # its columns were reused: no stale state
        conv.backward(np.ones((4, *conv.output_shape((1, 8, 8)))))
    model.features.forward(x)  # a forward makes backward possible again
    model.features.backward(np.ones((4, *model.features.output_shape((1, 8, 8)))))


def test_backward_without_input_gradient_returns_none_with_the_same_parameter_gradients() -> None:
    model = CNN(**TINY, dtype=np.float64)
    rng = np.random.default_rng(2)
    x, y, ce = rng.standard_normal((4, 1, 8, 8)), rng.integers(0, 3, 4), CrossEntropyLoss()

    def step(input_grad: bool) -> np.ndarray | None:
        for layer in model.features.layers + model.classifier.layers:
            if hasattr(layer, "rng"):
                layer.rng = np.random.default_rng(5)  # the same dropout masks every time
        ce.forward(model.forward(x), y)
        return model.backward(ce.backward(), input_grad=input_grad)

    dx = step(True)
    grads = [g.copy() for _, g in model.parameters()]
    assert step(False) is None
    for (_, g), ref in zip(model.parameters(), grads):
        np.testing.assert_array_equal(g, ref)
    np.testing.assert_array_equal(step(True), dx)  # the default computes dx again


def test_parameters_are_the_live_arrays_an_optimizer_updates() -> None:
    model = CNN(**TINY, dtype=np.float64)
    pairs = model.parameters()
    assert len(pairs) == len([k for k in model.state_dict() if k.split(".")[-1] in ("weight", "bias")])
    assert (
        pairs[0][0] is model.features[0].params["weight"] and pairs[0][1] is model.features[0].grads["weight"]
    )
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8))
    before = model.eval().forward(x)
    pairs[-1][0][...] += 1.0  # the last Dense bias
    np.testing.assert_allclose(model.forward(x), before + 1.0)


@pytest.mark.parametrize("use_batchnorm", [True, False])
def test_backward_matches_numerical_gradients_through_the_whole_network(use_batchnorm: bool) -> None:
    model = CNN(
        input_shape=(2, 6, 5),
        num_classes=3,
        conv_channels=((2,), (3,)),
        dense_units=(4,),
        use_batchnorm=use_batchnorm,
        dropout_rate=0.0,
        dense_dropout=0.0,
        dtype=np.float64,
    )
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((3, 2, 6, 5)), np.array([0, 2, 1])
    ce = CrossEntropyLoss()

    def loss() -> float:
        return ce.forward(model.forward(x), y)

    def assert_close(analytic: np.ndarray, numeric: np.ndarray, name: str) -> None:
        # Relative error 1e-6, plus an absolute floor for entries that are exactly 0 analytically: the
        # batch norm after the dense layer cancels any shift shared by the whole batch (e.g. a bias).
        assert rel_error(analytic, numeric) < 1e-6 or np.all(
            np.abs(analytic - numeric) <= 1e-6 * (np.abs(analytic) + np.abs(numeric)) + 1e-10
        ), name

    loss()
    dx = model.backward(ce.backward())
    grads = [g.copy() for _, g in model.parameters()]
    assert_close(dx, numerical_gradient(loss, x, h=1e-5), "x")
    names = [f"{n}.{k}" for n, layer in model.named_layers() for k in layer.params]
    for name, (param, _), analytic in zip(names, model.parameters(), grads):
        assert_close(analytic, numerical_gradient(loss, param, h=1e-5), name)


# ---------------------------------------------------------------------------------------- inference
def test_predict_family_is_batched_and_consistent() -> None:
    model = CNN(**TINY, dtype=np.float64)
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((23, 1, 8, 8)), rng.integers(0, 3, 23)
    logits = model.eval().forward(X)
    model.train()
    proba = model.predict_proba(X, batch_size=5)
    np.testing.assert_allclose(proba, np.exp(logits) / np.exp(logits).sum(1, keepdims=True), rtol=1e-12)
    np.testing.assert_array_equal(model.predict(X, batch_size=4), logits.argmax(1))
    assert model.predict(X).dtype == np.int64
    ev = model.evaluate(X, y, batch_size=6)
    assert ev["loss"] == pytest.approx(CrossEntropyLoss().forward(logits, y), rel=1e-12)
    assert ev["accuracy"] == model.score(X, y) == np.mean(logits.argmax(1) == y)
    assert model.training  # the mode is restored
    assert model.predict(X[0]).shape == (1,)  # one image without a batch axis


def test_predicting_many_images_holds_one_batch_at_a_time() -> None:
    def peak_bytes(n_images: int) -> int:
        model = CNN(conv_channels=((8,), (8,)), dense_units=(16,))  # fresh: no buffers from earlier calls
        X = np.zeros((n_images, 1, 28, 28), dtype=np.float32)
        tracemalloc.start()
        try:
            assert model.predict(X, batch_size=64).shape == (n_images,)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    one_batch, ten_batches = peak_bytes(64), peak_bytes(640)
    # Unbatched, 640 images would need 10x the activations of 64; batched, only the output grows.
    assert ten_batches < 1.5 * one_batch


def test_bad_inputs_raise_data_errors_that_name_the_problem() -> None:
    model = CNN(**TINY)
    X = np.zeros((4, 1, 8, 8))
    with pytest.raises(DataError, match=r"X must have shape \(N, 1, 8, 8\), got \(4, 1, 8, 9\)"):
        model.predict(np.zeros((4, 1, 8, 9)))
    with pytest.raises(DataError, match=r"y holds label 3, outside \[0, 3\)"):
        model.evaluate(X, np.array([0, 1, 2, 3]))
    with pytest.raises(DataError, match=r"y must have shape \(4,\)"):
        model.fit(X, np.zeros(3, int), epochs=1, verbose=0)
    with pytest.raises(DataError, match="integer class ids"):
        model.score(X, np.array([0.5, 1, 2, 0]))


def test_from_config_accepts_the_model_config_and_rejects_unknown_keys() -> None:
    cfg = {"name": "seed_cnn", **ArchConfig(**TINY).to_dict()}
    model = CNN.from_config(cfg, dtype=np.float64, seed=5)
    assert model.config == ArchConfig(**TINY) and model.dtype == np.float64 and model.seed == 5
    with pytest.raises(ConfigError, match="unknown model config key 'dropout'"):
        CNN.from_config({"dropout": 0.1})
    with pytest.raises(ConfigError, match="dtype must be a float"):
        CNN(dtype=np.int32)


# -------------------------------------------------------------------------------------- state dicts
def test_load_state_dict_is_strict_and_names_the_first_mismatch() -> None:
    model = CNN(**TINY)
    sd = model.state_dict()
    other = {**sd, "features.0.weight": np.zeros((5, 1, 3, 3), np.float32)}
    with pytest.raises(CheckpointError) as info:
        model.load_state_dict(other, source="x.npz")
    assert str(info.value) == (
        "x.npz: shape mismatch for 'features.0.weight': model has (4, 1, 3, 3), checkpoint has (5, 1, 3, 3)"
    )
    with pytest.raises(CheckpointError, match=r"missing key 'classifier\.5\.bias'"):
        model.load_state_dict({k: v for k, v in sd.items() if k != "classifier.5.bias"})
    with pytest.raises(CheckpointError, match=r"unexpected key 'features\.99\.weight'"):
        model.load_state_dict({**sd, "features.99.weight": np.zeros(1)})
    with pytest.raises(CheckpointError, match=r"'features\.0\.weight' has dtype <U1"):
        model.load_state_dict({**sd, "features.0.weight": np.full((4, 1, 3, 3), "a")})


def test_load_state_dict_changes_nothing_when_it_fails_and_tolerates_missing_batch_counts() -> None:
    model, donor = CNN(**TINY, seed=0), CNN(**TINY, seed=1)
    before = model.state_dict()
    bad = {**donor.state_dict(), "classifier.5.bias": np.zeros(7, np.float32)}
    with pytest.raises(CheckpointError):
        model.load_state_dict(bad)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    converted = {k: v for k, v in donor.state_dict().items() if not k.endswith("num_batches_tracked")}
    model.load_state_dict(converted)  # e.g. from the torch twin's to_numpy
    np.testing.assert_array_equal(
        model.state_dict()["features.0.weight"], donor.state_dict()["features.0.weight"]
    )


def test_state_dict_is_a_snapshot() -> None:
    model = CNN(**TINY)
    sd = model.state_dict()
    sd["features.0.weight"][...] = 0.0
    assert np.any(model.state_dict()["features.0.weight"] != 0.0)


# ----------------------------------------------------------------------------------- summary, maps
def test_summary_prints_and_returns_a_table_with_shapes_counts_and_total(capsys) -> None:
    text = CNN().summary()
    assert capsys.readouterr().out == text + "\n"
    lines = text.splitlines()
    assert lines[0].split() == ["Layer", "(type)", "Output", "shape", "Param", "#"]
    row = next(line for line in lines if line.startswith("features.0 Conv2D"))
    assert row.split()[-5:] == ["(None,", "32,", "28,", "28)", "288"]
    assert next(line for line in lines if line.startswith("classifier.1 Dense")).endswith("401,408")
    assert "(None, 64, 7, 7)" in next(line for line in lines if line.startswith("features.15 Dropout2D"))
    assert "Total params: 468,138" in lines
    assert CNN(**TINY).summary(print_fn=None) and capsys.readouterr().out == ""


def test_feature_maps_are_one_per_conv_layer_after_its_activation() -> None:
    model = CNN()
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    maps = model.get_feature_maps(x)
    assert [(m["layer"], m["module"], m["feature_map"].shape) for m in maps] == [
        ("block1.conv1", "features.2", (2, 32, 28, 28)),
        ("block1.conv2", "features.5", (2, 32, 28, 28)),
        ("block2.conv1", "features.10", (2, 64, 14, 14)),
        ("block2.conv2", "features.13", (2, 64, 14, 14)),
    ]
    assert all(m["feature_map"].min() >= 0 for m in maps)  # after ReLU
    single = model.get_feature_maps(x[0])
    assert single[0]["feature_map"].shape == (32, 28, 28)
    np.testing.assert_allclose(single[3]["feature_map"], maps[3]["feature_map"][0], rtol=1e-5, atol=1e-6)
    assert model.training


# ------------------------------------------------------------------------------------------ training
def test_default_cnn_learns_from_chance_to_90_percent() -> None:
    X_all, y_all = learnable_data(220, seed=0)  # one draw: training and validation share the prototypes
    X, y, X_val, y_val = X_all[:160], y_all[:160], X_all[160:], y_all[160:]
    model = CNN(seed=0)
    assert model.score(X, y) < 0.3
    seen = []

    class Recorder:
        def on_epoch_end(self, epoch: int, logs: dict) -> None:
            seen.append((epoch, sorted(logs)))

    history = model.fit(X, y, epochs=3, batch_size=16, validation_data=(X_val, y_val), callbacks=[Recorder()],
                        verbose=0)  # fmt: skip
    assert model.score(X, y) >= 0.9
    assert history["val_accuracy"][-1] >= 0.9
    assert history["loss"][-1] < history["loss"][0]
    assert history["lr"] == [1e-3] * 3 and len(history["epoch_time"]) == 3
    keys = ["accuracy", "epoch_time", "loss", "lr", "samples_per_sec", "val_accuracy", "val_loss"]
    assert seen == [(1, keys), (2, keys), (3, keys)]


def test_fit_steps_the_scheduler_once_per_epoch_and_records_the_rate_used() -> None:
    model = CNN(**TINY, dtype=np.float64)
    X, y = learnable_data(24, num_classes=3, shape=(1, 8, 8))
    h = model.fit(X, y, epochs=4, batch_size=8, learning_rate=0.1, optimizer="sgd", scheduler="step",
                  scheduler_kwargs={"step_size": 2, "gamma": 0.5}, verbose=0)  # fmt: skip
    assert h["lr"] == [0.1, 0.1, 0.05, 0.05]
    assert h["val_loss"] == [None] * 4


def test_fit_accepts_optimizer_and_scheduler_objects() -> None:
    model = CNN(**TINY, dtype=np.float64)
    X, y = learnable_data(16, num_classes=3, shape=(1, 8, 8))
    opt = SGD(model.parameters(), lr=0.2)
    h = model.fit(
        X, y, epochs=2, batch_size=8, optimizer=opt, scheduler=lambda o: ExponentialLR(o, 0.5), verbose=0
    )
    assert h["lr"] == [0.2, 0.1] and opt.step_count == 4


def test_fit_without_shuffle_uses_the_data_in_order() -> None:
    X, y = learnable_data(20, num_classes=3, shape=(1, 8, 8))
    a, b = CNN(**TINY, dtype=np.float64), CNN(**TINY, dtype=np.float64)
    a.fit(X, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    # The same steps by hand: batches 0:8, 8:16, 16:20 with fit's default optimizer.
    opt = Adam(b.parameters(), lr=1e-3)
    ce = CrossEntropyLoss()
    b.train()
    for s in (slice(0, 8), slice(8, 16), slice(16, 20)):
        ce.forward(b.forward(X[s]), y[s])
        b.backward(ce.backward())
        opt.step()
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k], err_msg=k)


def test_nan_loss_stops_training_naming_epoch_and_batch_and_writes_nothing(tmp_path) -> None:
    X, y = learnable_data(40, num_classes=3, shape=(1, 8, 8))
    X[21, 0, 3, 3] = np.nan  # in the third batch of 8 when not shuffled
    model = CNN(**TINY)
    with pytest.raises(TrainingDivergedError) as info:
        model.fit(X, y, epochs=2, batch_size=8, shuffle=False, verbose=0, checkpoint_path=tmp_path / "ck.npz")
    assert str(info.value) == "loss is nan at epoch 1, batch 3/5; try a lower learning rate (now 0.001)"
    assert list(tmp_path.iterdir()) == []
    # The diverged batch made no update: the weights are those after the two batches before it.
    two_batches = CNN(**TINY)
    two_batches.fit(X[:16], y[:16], epochs=1, batch_size=8, shuffle=False, verbose=0)
    for (w, _), (expected, _) in zip(model.parameters(), two_batches.parameters(), strict=True):
        np.testing.assert_array_equal(w, expected)


def test_fit_validates_its_arguments() -> None:
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the tests run as a background job
    model = CNN(**TINY)
    X, y = learnable_data(8, num_classes=3, shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        model.fit(X, y, epochs=0)
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        model.fit(X, y, epochs=1, batch_size=0)
    with pytest.raises(ConfigError, match=r"optimizer\.name"):
        model.fit(X, y, epochs=1, optimizer="rmsprop", verbose=0)
    with pytest.raises(ConfigError, match="resume=True needs a checkpoint_path"):
        model.fit(X, y, epochs=1, resume=True, verbose=0)
    assert signal.getsignal(signal.SIGINT) is handler_before  # a rejected fit leaves the handler alone


def test_scheduler_none_with_a_warm_up_still_warms_up() -> None:
    model = CNN(**TINY, dtype=np.float64)
    X, y = learnable_data(8, num_classes=3, shape=(1, 8, 8))
    h = model.fit(X, y, epochs=3, batch_size=8, learning_rate=0.3, scheduler="none",
                  scheduler_kwargs={"warmup_epochs": 2}, verbose=0)  # fmt: skip
    assert h["lr"] == pytest.approx([0.1, 0.2, 0.3])


ROOT = Path(__file__).resolve().parents[1]
# The from-scratch library: every module of cnn/ but the PyTorch twin (torch_*) and the pipeline side.
FROM_SCRATCH = sorted(
    p
    for p in [*(ROOT / "cnn").glob("*.py"), *(ROOT / "cnn" / "kernels").glob("*.py")]
    if not p.name.startswith("torch_") and p.name != "__init__.py"
)


def test_the_from_scratch_modules_never_import_torch():
    # Imported (in a fresh interpreter) and read: NumPy and the standard library only, torch nowhere.
    assert len(FROM_SCRATCH) >= 12, FROM_SCRATCH
    names = [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in FROM_SCRATCH]
    code = f"import sys, cnn.kernels, {', '.join(names)}; print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "False"
    for path in [*FROM_SCRATCH, ROOT / "cnn" / "kernels" / "__init__.py"]:
        source = path.read_text()
        assert "import torch" not in source and "from torch" not in source, path
