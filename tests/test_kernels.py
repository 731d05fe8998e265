"""The fast kernels in ``cnn.kernels`` against the slow loop implementations in ``cnn.kernels.reference``,
with the thread pool on and off, for every memory layout they may receive."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from cnn import kernels
from cnn.errors import CNNError
from cnn.kernels import conv as conv_kernels
from cnn.kernels import memory
from cnn.kernels import reference as ref
from cnn.kernels import threads as thread_pool

# (N, C, H, W), kernel, stride, padding. Includes padding > kernel/2 (offsets that only see padding),
# stride 2 with odd sizes, non-square everything, and kernel 1.
WINDOW_CASES = [
    ((2, 3, 6, 5), (3, 3), (1, 1), (1, 1)),
    ((2, 2, 7, 9), (3, 3), (2, 2), (2, 2)),
    ((1, 2, 5, 6), (1, 1), (1, 1), (0, 0)),
    ((3, 1, 9, 7), (5, 3), (2, 1), (2, 0)),
    ((2, 2, 4, 4), (3, 3), (2, 2), (3, 3)),
    ((2, 2, 8, 8), (2, 2), (2, 2), (0, 0)),
]
# The convolutions also take a case with C*kh*kw = 45 column rows, whose GEMMs run once per block of
# samples (the cases above, at most 27 rows, run one GEMM per sample: conv._PER_SAMPLE_MAX_ROWS), and
# stride-1 cases at least 12 columns wide per extra kernel column, which run as the width-shifted GEMM
# (conv._shifted) when they keep no columns (out_channels <= 2 * C).
CONV_CASES = [
    *WINDOW_CASES,
    ((3, 5, 6, 5), (3, 3), (2, 1), (1, 1)),
    ((2, 2, 4, 25), (3, 3), (1, 1), (1, 1)),
    ((1, 3, 5, 27), (3, 3), (1, 1), (0, 0)),
    ((2, 2, 3, 13), (2, 2), (1, 1), (0, 0)),
    ((2, 2, 4, 26), (3, 3), (1, 1), (2, 1)),
    ((3, 2, 6, 26), (5, 3), (1, 1), (2, 1)),
]
POOL_CASES = [c for c in WINDOW_CASES if c[3][0] * 2 <= c[1][0] and c[3][1] * 2 <= c[1][1]]
THREADS = [1, 2, 3]


@pytest.fixture(params=THREADS, ids=lambda n: f"{n}threads")
def threads(request, monkeypatch):
    """Run with 1, 2 and 3 threads; the small test arrays are split too (the kernels otherwise run
    work below ``cnn.kernels.threads._MIN_TASK`` elements per thread inline)."""
    before = kernels.get_num_threads()
    kernels.set_num_threads(request.param)
    monkeypatch.setattr(thread_pool, "_MIN_TASK", 1)
    yield request.param
    kernels.set_num_threads(before)


def channel_major_copy(x: np.ndarray) -> np.ndarray:
    """The same NCHW array, stored as (C, N, H, W): the layout the kernels themselves return."""
    return np.swapaxes(np.ascontiguousarray(np.swapaxes(x, 0, 1)), 0, 1)


def strided_view(x: np.ndarray) -> np.ndarray:
    """The same values as a non-contiguous view: every other row and column of a larger array."""
    n, c, h, w = x.shape
    big = np.zeros((n, c, 2 * h, 2 * w), dtype=x.dtype)
    big[:, :, ::2, ::2] = x
    view = big[:, :, ::2, ::2]
    assert not view.flags.c_contiguous and not np.swapaxes(view, 0, 1).flags.c_contiguous
    return view


def layouts(x: np.ndarray) -> list[np.ndarray]:
    """``x`` in every memory layout a kernel may receive: C order, channel-major, strided."""
    return [x, channel_major_copy(x), strided_view(x)]


@pytest.mark.parametrize(("shape", "k", "s", "p"), WINDOW_CASES)
def test_im2col_and_col2im_equal_the_loop_reference(rng, shape, k, s, p):
    x = rng.standard_normal(shape)
    cols = kernels.im2col(x, k, s, p)
    np.testing.assert_array_equal(cols, ref.im2col(x, k, s, p))
    g = rng.standard_normal(cols.shape)
    np.testing.assert_allclose(kernels.col2im(g, shape, k, s, p), ref.col2im(g, shape, k, s, p), rtol=1e-13)


@pytest.mark.parametrize(("shape", "k", "s", "p"), WINDOW_CASES)
def test_col2im_is_the_adjoint_of_im2col(rng, shape, k, s, p):
    x = rng.standard_normal(shape)
    cols = kernels.im2col(x, k, s, p)
    g = rng.standard_normal(cols.shape)
    # <im2col(x), g> == <x, col2im(g)> for every x, g
    assert np.sum(cols * g) == pytest.approx(np.sum(x * kernels.col2im(g, shape, k, s, p)), rel=1e-12)


@pytest.mark.parametrize(("shape", "k", "s", "p"), CONV_CASES)
@pytest.mark.parametrize("out_channels", [1, 2, 7])  # 7 > 2*C takes the col2im path even at stride 1
def test_conv2d_kernels_equal_the_loop_reference(rng, threads, shape, k, s, p, out_channels):
    w = rng.standard_normal((out_channels, shape[1], *k))
    b = rng.standard_normal(out_channels)
    ws = kernels.Workspace()
    for x in layouts(rng.standard_normal(shape)):
        y = kernels.conv2d_forward(x, w, b, s, p, ws)
        np.testing.assert_allclose(y, ref.conv2d(x, w, b, s, p), rtol=1e-12, atol=1e-12)
        dy = rng.standard_normal(y.shape)
        dw, db = np.empty_like(w), np.empty_like(b)
        dx = kernels.conv2d_backward(dy, w, s, p, ws, dw, db)
        rdx, rdw, rdb = ref.conv2d_backward(x, w, dy, s, p)
        np.testing.assert_allclose(dx, rdx, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dw, rdw, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(db, rdb, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("shape", "k", "s", "p"), CONV_CASES)
@pytest.mark.parametrize("out_channels", [2, 7])  # both block layouts (chunks; one block per thread)
@pytest.mark.parametrize(("relu", "pool"), [(False, None), (True, None), (True, 2), (False, 3)])
def test_conv2d_forward_eval_equals_the_loop_reference_of_its_layers(
    rng, threads, shape, k, s, p, out_channels, relu, pool
):
    # The inference kernel: convolution, then ReLU and max-pool, as the loops compose them.
    w, b = rng.standard_normal((out_channels, shape[1], *k)), rng.standard_normal(out_channels)
    for x in layouts(rng.standard_normal(shape)):
        expected = ref.conv2d(x, w, b, s, p)
        if pool is not None and min(expected.shape[2:]) < pool:
            continue
        if relu:
            expected = ref.relu(expected, expected)[0]
        window = None
        if pool is not None:
            window = ((pool, pool), (2, 2))  # overlapping windows when pool > 2
            expected = ref.maxpool2d(expected, *window, (0, 0))[0]
        got = kernels.conv2d_forward_eval(x, w, b, s, p, kernels.Workspace(), relu=relu, pool=window)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("out_channels", [2, 7])  # both input-gradient paths
def test_conv2d_backward_without_input_gradient_computes_only_the_parameter_gradients(
    rng, threads, out_channels
):
    x, w, b = (
        rng.standard_normal((3, 2, 6, 5)),
        rng.standard_normal((out_channels, 2, 3, 3)),
        np.zeros(out_channels),
    )
    ws = kernels.Workspace()
    dy = rng.standard_normal(kernels.conv2d_forward(x, w, b, (1, 1), (1, 1), ws).shape)
    dw, db = np.empty_like(w), np.empty_like(b)
    assert kernels.conv2d_backward(dy, w, (1, 1), (1, 1), ws, dw, db, input_grad=False) is None
    _, rdw, rdb = ref.conv2d_backward(x, w, dy, (1, 1), (1, 1))
    np.testing.assert_allclose(dw, rdw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, rdb, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("shape", "k", "s", "p"), WINDOW_CASES[:2])
@pytest.mark.parametrize("out_channels", [2, 7])
def test_conv2d_backward_in_one_sample_chunks_equals_the_reference(
    rng, monkeypatch, shape, k, s, p, out_channels
):
    monkeypatch.setattr(conv_kernels, "_BLOCK_BYTES", 1)  # forces chunks of one sample
    monkeypatch.setattr(thread_pool, "_num_threads", 2)
    x = rng.standard_normal((5, *shape[1:]))
    w = rng.standard_normal((out_channels, shape[1], *k))
    ws = kernels.Workspace()
    y = kernels.conv2d_forward(x, w, None, s, p, ws)
    dy = rng.standard_normal(y.shape)
    dw = np.empty_like(w)
    dx = kernels.conv2d_backward(dy, w, s, p, ws, dw, None)
    rdx, rdw, _ = ref.conv2d_backward(x, w, dy, s, p)
    np.testing.assert_allclose(dx, rdx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, rdw, rtol=1e-12, atol=1e-12)


def test_a_wide_stride_one_forward_runs_as_the_width_shifted_gemm_in_reused_chunks(rng, monkeypatch):
    # 28 columns wide, 3x3, stride 1, as the seed network's second convolution: the kernel rows' columns
    # over the width-padded grid, one GEMM, three shifted slices added; two-sample chunks whose buffers are
    # reused and whose padding stays zero, in the training forward and in the inference kernel.
    calls = []
    shifted = conv_kernels._shifted_conv_into
    monkeypatch.setattr(conv_kernels, "_shifted_conv_into", lambda *a: calls.append(1) or shifted(*a))
    monkeypatch.setattr(conv_kernels, "_BLOCK_BYTES", 2 * (3 * 3 + 3 * 4) * 4 * 30 * 8)  # 2 samples
    monkeypatch.setattr(thread_pool, "_num_threads", 2)
    w, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    ws = kernels.Workspace()
    kernels.conv2d_forward(rng.standard_normal((5, 3, 4, 28)), w, b, (1, 1), (1, 1), ws)
    buffers = {name: buf for name, buf in ws._buffers.items() if name.startswith("fwd_")}
    assert sorted({name.split("@")[0] for name in buffers}) == ["fwd_partial", "fwd_rows"]
    assert all(buf.shape == (3, 3, 2, 4, 30) for name, buf in buffers.items() if name.startswith("fwd_rows"))
    x = rng.standard_normal((5, 3, 4, 28))
    y = kernels.conv2d_forward(x, w, b, (1, 1), (1, 1), ws)
    assert all(ws._buffers[name] is buf for name, buf in buffers.items())
    np.testing.assert_allclose(y, ref.conv2d(x, w, b, (1, 1), (1, 1)), rtol=1e-12, atol=1e-12)
    # The backward stays im2col + GEMM (the shifted form of it measured slower: docs/library.md).
    dy = rng.standard_normal(y.shape)
    rdx, rdw, rdb = ref.conv2d_backward(x, w, dy, (1, 1), (1, 1))
    dw, db = np.empty_like(w), np.empty_like(b)
    dx = kernels.conv2d_backward(dy, w, (1, 1), (1, 1), ws, dw, db)
    for got, expected in ((dx, rdx), (dw, rdw), (db, rdb)):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert kernels.conv2d_backward(dy, w, (1, 1), (1, 1), ws, dw, db, input_grad=False) is None
    np.testing.assert_allclose(dw, rdw, rtol=1e-12, atol=1e-12)
    pooled = kernels.conv2d_forward_eval(x, w, b, (1, 1), (1, 1), ws, relu=True, pool=((2, 2), (2, 2)))
    conv = ref.conv2d(x, w, b, (1, 1), (1, 1))
    expected = ref.maxpool2d(ref.relu(conv, conv)[0], (2, 2), (2, 2), (0, 0))[0]
    np.testing.assert_allclose(pooled, expected, rtol=1e-12, atol=1e-12)
    assert all(ws._buffers[name] is buf for name, buf in buffers.items())
    assert len(calls) == 3 * 3  # two forwards and the inference kernel, 3 chunks of at most 2 samples each
    # Narrower outputs, or outputs that keep their columns (more than 2 * C output channels), do not.
    calls.clear()
    kernels.conv2d_forward(rng.standard_normal((2, 3, 4, 23)), w, b, (1, 1), (1, 1), kernels.Workspace())
    kernels.conv2d_forward(x, rng.standard_normal((7, 3, 3, 3)), None, (1, 1), (1, 1), kernels.Workspace())
    assert calls == []


def test_conv2d_column_buffer_is_reused_and_its_padding_stays_zero(rng):
    # 2 * 3 < 7 output channels: the input gradient takes the col2im path, so the forward keeps its columns.
    w = rng.standard_normal((7, 3, 3, 3))
    ws = kernels.Workspace()
    kernels.conv2d_forward(rng.standard_normal((2, 3, 5, 5)), w, None, (1, 1), (1, 1), ws)
    buffer = ws._buffers["cols"]
    x = rng.standard_normal((2, 3, 5, 5))
    y = kernels.conv2d_forward(x, w, None, (1, 1), (1, 1), ws)
    assert ws._buffers["cols"] is buffer
    np.testing.assert_allclose(y, ref.conv2d(x, w, None, (1, 1), (1, 1)), rtol=1e-12, atol=1e-12)


def test_stride_one_conv2d_keeps_no_batch_sized_columns_and_reuses_its_chunk_buffers(rng, monkeypatch):
    # The weight gradient comes from the output-gradient columns: the forward keeps only small chunk
    # buffers (here of 2 samples), reused from call to call, whose padding entries stay zero.
    monkeypatch.setattr(conv_kernels, "_BLOCK_BYTES", 2 * 3 * 9 * 25 * 8)
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    ws = kernels.Workspace()
    kernels.conv2d_forward(rng.standard_normal((5, 3, 5, 5)), w, b, (1, 1), (1, 1), ws)
    assert "cols" not in ws._buffers
    chunk_buffers = {name: buf for name, buf in ws._buffers.items() if name.startswith("fwd_cols")}
    assert chunk_buffers and all(buf.shape[3] <= 2 for buf in chunk_buffers.values())
    x = rng.standard_normal((5, 3, 5, 5))
    y = kernels.conv2d_forward(x, w, b, (1, 1), (1, 1), ws)
    assert all(ws._buffers[name] is buf for name, buf in chunk_buffers.items())
    np.testing.assert_allclose(y, ref.conv2d(x, w, b, (1, 1), (1, 1)), rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dw, db = np.empty_like(w), np.empty_like(b)
    dx = kernels.conv2d_backward(dy, w, (1, 1), (1, 1), ws, dw, db)
    rdx, rdw, rdb = ref.conv2d_backward(x, w, dy, (1, 1), (1, 1))
    for got, want in ((dx, rdx), (dw, rdw), (db, rdb)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_conv2d_backward_uses_the_input_of_its_own_forward(rng):
    # The stride-1 weight gradient reads the forward's input, not a copy of its columns: a later forward
    # through another Workspace (another layer) must not disturb it.
    w = rng.standard_normal((3, 2, 3, 3))
    ws, other = kernels.Workspace(), kernels.Workspace()
    x = rng.standard_normal((2, 2, 6, 6))
    y = kernels.conv2d_forward(x, w, None, (1, 1), (1, 1), ws)
    kernels.conv2d_forward(rng.standard_normal((2, 2, 6, 6)), w, None, (1, 1), (1, 1), other)
    dy = rng.standard_normal(y.shape)
    dw = np.empty_like(w)
    kernels.conv2d_backward(dy, w, (1, 1), (1, 1), ws, dw, None, input_grad=False)
    np.testing.assert_allclose(dw, ref.conv2d_backward(x, w, dy, (1, 1), (1, 1))[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("shape", "k", "s", "p"), POOL_CASES)
def test_maxpool_kernels_equal_the_loop_reference_with_ties(rng, threads, shape, k, s, p):
    for x in layouts(np.round(rng.standard_normal(shape), 1)):  # rounding makes ties frequent
        cache: dict = {}
        y = kernels.maxpool2d_forward(x, k, s, p, cache)
        dy = rng.standard_normal(y.shape)
        ry, rdx = ref.maxpool2d(x, k, s, p, dy)
        np.testing.assert_array_equal(y, ry)
        np.testing.assert_allclose(
            kernels.maxpool2d_backward(dy, k, s, p, cache), rdx, rtol=1e-13, atol=1e-15
        )


@pytest.mark.parametrize(("shape", "k", "s", "p"), POOL_CASES)
def test_maxpool_with_a_channel_scale_equals_the_reference_pool_times_the_scale(rng, threads, shape, k, s, p):
    # The fused max-pool + Dropout2D: y = maxpool(x) * scale[n, c], dx = maxpool_backward(dy * scale).
    scale = rng.choice([0.0, 2.0], size=(shape[0], shape[1], 1, 1))
    for x in layouts(np.round(rng.standard_normal(shape), 1)):
        cache: dict = {}
        y = kernels.maxpool2d_forward(x, k, s, p, cache, scale=scale)
        dy = rng.standard_normal(y.shape)
        ry, rdx = ref.maxpool2d(x, k, s, p, dy * scale)
        np.testing.assert_array_equal(y, ry * scale)
        np.testing.assert_allclose(
            kernels.maxpool2d_backward(dy, k, s, p, cache), rdx, rtol=1e-13, atol=1e-15
        )
        kernels.maxpool2d_forward(x, k, s, p, cache)  # a plain forward after a scaled one is plain again
        np.testing.assert_allclose(
            kernels.maxpool2d_backward(dy, k, s, p, cache), ref.maxpool2d(x, k, s, p, dy)[1]
        )


@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize(("shape", "k", "s", "p"), POOL_CASES)
def test_maxpool_backward_through_the_relu_before_it_equals_the_relu_backward_after_it(
    rng, threads, shape, k, s, p, scaled
):
    # relu_before=True: the pool's input is a ReLU's output (>= 0, many zeros, ties among them); the
    # mask applied on the pooled grid gives exactly the ReLU's backward dx * [x > 0] after the pool's.
    scale = rng.choice([0.0, 2.0], size=(shape[0], shape[1], 1, 1)) if scaled else None
    for x in layouts(np.maximum(np.round(rng.standard_normal(shape), 1), 0)):
        assert 0 < np.count_nonzero(x) < x.size
        cache: dict = {}
        y = kernels.maxpool2d_forward(x, k, s, p, cache, scale=scale)
        dy = rng.standard_normal(y.shape)
        plain = kernels.maxpool2d_backward(dy, k, s, p, cache)
        through = kernels.maxpool2d_backward(dy, k, s, p, cache, relu_before=True)
        np.testing.assert_array_equal(through, plain * (x > 0))


def test_batchnorm_backward_given_the_gradient_through_its_relu_equals_the_fused_backward(rng, threads):
    shape, c = (4, 3, 5, 3), 3
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.uniform(-0.5, 0.5, c)
    x, dy = rng.standard_normal(shape) * 3 + 2, rng.standard_normal(shape)
    cache: dict = {}
    y, _, _ = kernels.batchnorm_forward_train(x, gamma, beta, 1e-5, cache, relu=True)
    grads = [np.empty(c) for _ in range(4)]
    dx = kernels.batchnorm_backward_train(dy, gamma, cache, grads[0], grads[1])
    for overwrite in (False, True):
        masked = channel_major_copy(dy * (y > 0))
        dx2 = kernels.batchnorm_backward_train(
            masked, gamma, cache, grads[2], grads[3], overwrite_grad=overwrite, relu_applied=True
        )
        np.testing.assert_array_equal(dx2, dx)
        np.testing.assert_array_equal(grads[2], grads[0])
        np.testing.assert_array_equal(grads[3], grads[1])


def test_maxpool_scale_of_the_wrong_shape_is_a_clear_error(rng):
    with pytest.raises(CNNError, match=r"scale must have shape \(2, 3, 1, 1\)"):
        kernels.maxpool2d_forward(
            rng.standard_normal((2, 3, 4, 4)), (2, 2), (2, 2), (0, 0), {}, np.ones((2, 3))
        )


@pytest.mark.parametrize(("shape", "k", "s", "p"), POOL_CASES)
def test_avgpool_kernels_equal_the_loop_reference(rng, shape, k, s, p):
    for x in layouts(rng.standard_normal(shape)):
        y = kernels.avgpool2d_forward(x, k, s, p)
        dy = rng.standard_normal(y.shape)
        ry, rdx = ref.avgpool2d(x, k, s, p, dy)
        np.testing.assert_allclose(y, ry, rtol=1e-13)
        np.testing.assert_allclose(kernels.avgpool2d_backward(dy, shape, k, s, p), rdx, rtol=1e-13)


@pytest.mark.parametrize("shape", [(4, 3, 5, 3), (7, 5), (2, 9, 1, 1)])
def test_batchnorm_kernels_equal_the_loop_reference(rng, threads, shape):
    c = shape[1]
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    for x in layouts(rng.standard_normal(shape) * 3 + 2) if len(shape) == 4 else [rng.standard_normal(shape)]:
        cache: dict = {}
        y, mean, var = kernels.batchnorm_forward_train(x, gamma, beta, 1e-5, cache)
        dy = rng.standard_normal(shape)
        dgamma, dbeta = np.empty(c), np.empty(c)
        dx = kernels.batchnorm_backward_train(dy, gamma, cache, dgamma, dbeta)
        ry, rdx, rdgamma, rdbeta, rmean, rvar = ref.batchnorm_train(x, gamma, beta, 1e-5, dy)
        for ours, theirs in [
            (y, ry),
            (dx, rdx),
            (dgamma, rdgamma),
            (dbeta, rdbeta),
            (mean, rmean),
            (var, rvar),
        ]:
            np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(4, 3, 5, 3), (7, 5), (2, 9, 1, 1)])
def test_batchnorm_with_fused_relu_equals_the_reference_then_relu(rng, threads, shape):
    c = shape[1]
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.uniform(-0.5, 0.5, c)
    for x in layouts(rng.standard_normal(shape) * 3 + 2) if len(shape) == 4 else [rng.standard_normal(shape)]:
        cache: dict = {}
        y, mean, var = kernels.batchnorm_forward_train(x, gamma, beta, 1e-5, cache, relu=True)
        dy = rng.standard_normal(shape)
        dgamma, dbeta = np.empty(c), np.empty(c)
        dx = kernels.batchnorm_backward_train(dy, gamma, cache, dgamma, dbeta)
        bn_y = ref.batchnorm_train(x, gamma, beta, 1e-5, dy)[0]
        mask = bn_y > 0
        assert 0 < mask.sum() < mask.size
        # The ReLU's gradient is routed first: the batch norm sees dy * [y > 0].
        _, rdx, rdgamma, rdbeta, rmean, rvar = ref.batchnorm_train(x, gamma, beta, 1e-5, dy * mask)
        for ours, theirs in [
            (y, np.maximum(bn_y, 0)),
            (dx, rdx),
            (dgamma, rdgamma),
            (dbeta, rdbeta),
            (mean, rmean),
            (var, rvar),
        ]:
            np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", [(4, 3, 5, 3), (7, 5)])
def test_batchnorm_given_its_input_and_gradient_computes_the_same_in_their_memory(rng, threads, shape, relu):
    # overwrite_input / overwrite_grad: the caller gives the arrays away (Sequential does for a previous
    # layer's fresh output or input gradient); the results are the same bit for bit, and in channel-major
    # memory they are computed in place: the centred input in x, dx in dy. Any other layout is copied.
    c = shape[1]
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.uniform(-0.5, 0.5, c)
    x0, dy0 = rng.standard_normal(shape) * 3 + 2, rng.standard_normal(shape)
    cache: dict = {}
    y, mean, var = kernels.batchnorm_forward_train(x0, gamma, beta, 1e-5, cache, relu=relu)
    dgamma, dbeta = np.empty(c), np.empty(c)
    dx = kernels.batchnorm_backward_train(dy0, gamma, cache, dgamma, dbeta)

    def copies(a: np.ndarray) -> list[np.ndarray]:
        return [a.copy(), channel_major_copy(a)] + ([strided_view(a)] if a.ndim == 4 else [])

    for x, dy in zip(copies(x0), copies(dy0)):
        channel_major = np.swapaxes(x, 0, 1).flags.c_contiguous
        given: dict = {}
        y2, mean2, var2 = kernels.batchnorm_forward_train(
            x, gamma, beta, 1e-5, given, relu=relu, overwrite_input=True
        )
        g2, b2 = np.empty(c), np.empty(c)
        dx2 = kernels.batchnorm_backward_train(dy, gamma, given, g2, b2, overwrite_grad=True)
        for ours, theirs in [(y2, y), (mean2, mean), (var2, var), (dx2, dx), (g2, dgamma), (b2, dbeta)]:
            np.testing.assert_array_equal(ours, theirs)
        assert np.shares_memory(given["centred"], x) == channel_major
        assert np.shares_memory(dx2, dy) == channel_major
        if channel_major:
            np.testing.assert_array_equal(x, x0 - mean.reshape((1, c) + (1,) * (len(shape) - 2)))


def test_batchnorm_float32_statistics_survive_a_large_mean(rng, threads):
    # Two-pass statistics: var of (1e4 + small noise) must not cancel to garbage in float32.
    x = (1e4 + rng.standard_normal((64, 4, 8, 8))).astype(np.float32)
    _, _, var = kernels.batchnorm_forward_train(x, np.ones(4, np.float32), np.zeros(4, np.float32), 1e-5, {})
    np.testing.assert_allclose(var, x.astype(np.float64).var(axis=(0, 2, 3)), rtol=1e-3)


@pytest.mark.parametrize("shape", [(4, 3, 5, 3), (7, 5)])
def test_eval_batchnorm_kernels_equal_the_loop_reference(rng, shape):
    c = shape[1]
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    running_mean, running_var = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)
    for x in layouts(rng.standard_normal(shape)) if len(shape) == 4 else [rng.standard_normal(shape)]:
        cache: dict = {}
        y = kernels.batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, 1e-5, cache)
        dy = rng.standard_normal(shape)
        dgamma, dbeta = np.empty(c), np.empty(c)
        dx = kernels.batchnorm_backward_eval(dy, gamma, cache, dgamma, dbeta)
        ry, rdx, rdgamma, rdbeta = ref.batchnorm_eval(x, gamma, beta, running_mean, running_var, 1e-5, dy)
        for ours, theirs in [(y, ry), (dx, rdx), (dgamma, rdgamma), (dbeta, rdbeta)]:
            np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_kernels_equal_the_loop_reference(rng, threads, bias):
    x, w = rng.standard_normal((37, 20)), rng.standard_normal((40, 20))
    b = rng.standard_normal(40) if bias else None
    y = kernels.linear_forward(x, w, b)
    dy = rng.standard_normal(y.shape)
    dw, db = np.empty_like(w), (np.empty(40) if bias else None)
    dx = kernels.linear_backward(dy, x, w, dw, db)
    ry, rdx, rdw, rdb = ref.linear(x, w, b, dy)
    for ours, theirs in [(y, ry), (dx, rdx), (dw, rdw)]:
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    if bias:
        np.testing.assert_allclose(db, rdb, rtol=1e-12, atol=1e-12)
    else:
        assert rdb is None


def test_relu_kernels_equal_the_loop_reference_for_every_layout(rng, threads):
    x = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    ry, rdx = ref.relu(x, dy)
    for xl in layouts(x):
        y = kernels.relu_forward(xl)
        np.testing.assert_array_equal(y, ry)
        for dyl in layouts(dy):
            np.testing.assert_array_equal(kernels.relu_backward(dyl, y), rdx)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_dropout_mask_equals_the_loop_reference_for_the_same_draws(dtype):
    mask = kernels.dropout_mask((6, 5, 4), 0.3, np.dtype(dtype), np.random.default_rng(5))
    expected = ref.dropout_mask((6, 5, 4), 0.3, np.dtype(dtype), np.random.default_rng(5))
    assert mask.dtype == expected.dtype == dtype
    np.testing.assert_array_equal(mask, expected)
    assert 0 < (mask == 0).sum() < mask.size


def test_relu_kernels_split_large_arrays_over_threads_exactly(rng, monkeypatch):
    monkeypatch.setattr(thread_pool, "_num_threads", 2)
    x = channel_major_copy(rng.standard_normal((4, 8, 128, 129)).astype(np.float32))  # > 2 * 2**18 values
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y = kernels.relu_forward(x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    np.testing.assert_array_equal(kernels.relu_backward(channel_major_copy(dy), y), dy * (x > 0))


def test_kernels_return_channel_major_nchw_arrays(rng):
    x = rng.standard_normal((2, 3, 6, 6))
    y = kernels.conv2d_forward(
        x, rng.standard_normal((4, 3, 3, 3)), None, (1, 1), (1, 1), kernels.Workspace()
    )
    assert y.shape == (2, 4, 6, 6)
    assert np.swapaxes(y, 0, 1).flags.c_contiguous


def test_float32_in_float32_out(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    ws = kernels.Workspace()
    y = kernels.conv2d_forward(x, w, None, (1, 1), (1, 1), ws)
    dw = np.empty_like(w)
    assert y.dtype == kernels.conv2d_backward(y, w, (1, 1), (1, 1), ws, dw, None).dtype == np.float32
    assert kernels.dropout_mask((5, 5), 0.5, np.dtype(np.float32), rng).dtype == np.float32


def test_recycled_outputs_are_never_ones_the_caller_still_holds():
    recycler = memory._Recycler()
    kept = recycler.empty((256, 256), np.float32)
    kept[...] = 1.0
    view = recycler.empty((256, 256), np.float32)[::2]  # held through a view only
    other = recycler.empty((256, 256), np.float32)
    assert other is not kept and other.base is None and not np.shares_memory(other, view)
    del other
    assert recycler.empty((256, 256), np.float32) is not kept  # the dropped one comes back instead
    np.testing.assert_array_equal(kept, 1.0)


def test_recycler_reuses_dropped_arrays_and_keeps_its_memory_bounded(monkeypatch):
    recycler = memory._Recycler()
    monkeypatch.setattr(recycler, "MAX_BYTES", 3 * 256 * 256 * 4)
    first = recycler.empty((256, 256), np.float32)
    address = first.__array_interface__["data"][0]
    del first
    assert recycler.empty((256, 256), np.float32).__array_interface__["data"][0] == address
    for shape in [(128, 512), (512, 128), (64, 1024), (1024, 64)]:  # other shapes evict unused ones
        recycler.empty(shape, np.float32)
    assert recycler._bytes <= recycler.MAX_BYTES


def test_split_covers_the_range_in_balanced_contiguous_blocks():
    assert kernels.split(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert kernels.split(2, 4) == [(0, 1), (1, 2)]
    assert kernels.split(5, 1) == [(0, 5)]


def test_parallel_returns_results_in_block_order_and_uses_several_threads(threads):
    names: set[str] = set()
    lock = threading.Lock()
    barrier = threading.Barrier(threads, timeout=10)

    def work(lo: int, hi: int) -> list[int]:
        with lock:
            names.add(threading.current_thread().name)
        barrier.wait()  # every block runs at the same time, so each needs its own thread
        return list(range(lo, hi))

    results = kernels.parallel(work, 12)
    assert [i for block in results for i in block] == list(range(12))
    assert len(results) == len(names) == threads


def test_parallel_reraises_a_worker_failure_and_stays_usable(monkeypatch):
    monkeypatch.setattr(thread_pool, "_num_threads", 2)

    def work(lo: int, hi: int) -> None:
        if lo > 0:
            raise RuntimeError("block failed")

    with pytest.raises(RuntimeError, match="block failed"):
        kernels.parallel(work, 4)
    assert kernels.parallel(lambda lo, hi: hi - lo, 4) == [2, 2]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
@pytest.mark.timeout(60)  # the failure mode is a hang
def test_a_forked_child_gets_a_working_pool(monkeypatch):
    import os

    monkeypatch.setattr(thread_pool, "_num_threads", 2)
    kernels.parallel(lambda lo, hi: None, 4)  # the parent's pool exists now
    pid = os.fork()
    if pid == 0:  # child: would hang on the parent's (absent) worker threads without the fork hook
        ok = kernels.parallel(lambda lo, hi: hi - lo, 4) == [2, 2]
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_set_num_threads_rejects_nonsense():
    with pytest.raises(CNNError, match="positive int"):
        kernels.set_num_threads(0)


def test_work_below_the_dispatch_threshold_runs_inline(monkeypatch):
    # A worker's wake-up costs more than ~64K elements of NumPy work: small layers (the classifier's
    # (N, 128) batch norm at batch 32) run in one block, per-channel work of a conv layer is split.
    monkeypatch.setattr(thread_pool, "_num_threads", 2)
    small = kernels.parallel(lambda lo, hi: (lo, hi), 128, min_block=thread_pool._min_block(32))
    large = kernels.parallel(lambda lo, hi: (lo, hi), 32, min_block=thread_pool._min_block(32 * 28 * 28))
    assert small == [(0, 128)]
    assert large == [(0, 16), (16, 32)]


def test_stride_one_conv2d_gradients_do_not_depend_on_the_threads_or_their_timing(rng, monkeypatch):
    # Chunks go to whichever thread is free, but each chunk's share is added in chunk order: the same
    # bits with 2 or 3 threads, every time. (With the pool off a chunk is the whole batch: equal to
    # float32 round-off.)
    monkeypatch.setattr(conv_kernels, "_BLOCK_BYTES", 4 * 9 * 36 * 4)  # one-sample chunks of dcols
    x = rng.standard_normal((7, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = np.zeros(4, np.float32)
    dy = rng.standard_normal((7, 4, 6, 6)).astype(np.float32)
    results = []
    before = kernels.get_num_threads()
    try:
        for n_threads in (2, 3, 2, 2, 1):
            kernels.set_num_threads(n_threads)
            ws = kernels.Workspace()
            y = kernels.conv2d_forward(x, w, b, (1, 1), (1, 1), ws)
            dw, db = np.empty_like(w), np.empty_like(b)
            dx = kernels.conv2d_backward(dy, w, (1, 1), (1, 1), ws, dw, db)
            results.append((y.copy(), dx.copy(), dw, db))
    finally:
        kernels.set_num_threads(before)
    for other in results[1:-1]:
        for got, first in zip(other, results[0]):
            np.testing.assert_array_equal(got, first)
    for got, first in zip(results[-1], results[0]):
        np.testing.assert_allclose(got, first, rtol=1e-5, atol=1e-5)


def test_the_pool_holds_blas_at_one_thread_while_it_runs_and_blas_held_keeps_it_there(monkeypatch):
    # Each worker's GEMMs must run on its own core: BLAS is held at one thread during a dispatch and
    # restored after it; inside blas_held (a whole fit) it stays at one thread across dispatches.
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

    if not blas_threads():
        pytest.skip("no BLAS library that threadpoolctl can control")
    monkeypatch.setattr(thread_pool, "_num_threads", 2)
    seen: list[list[int]] = []
    lock = threading.Lock()

    def work(lo: int, hi: int) -> None:
        with lock:
            seen.append(blas_threads())

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        kernels.parallel(work, 2)
        assert seen and all(set(s) == {1} for s in seen)
        assert set(blas_threads()) == {2}  # restored after the dispatch
        seen.clear()
        with kernels.blas_held():
            assert set(blas_threads()) == {1}
            kernels.parallel(work, 2)
            assert set(blas_threads()) == {1}  # still held between dispatches
        assert seen and all(set(s) == {1} for s in seen)
        assert set(blas_threads()) == {2}


# Each fast kernel and the loop version in cnn.kernels.reference that the tests above compare it with.
LOOP_VERSION = {
    "im2col": ref.im2col,
    "col2im": ref.col2im,
    "conv2d_forward": ref.conv2d,
    "conv2d_backward": ref.conv2d_backward,
    "conv2d_forward_eval": ref.conv2d,
    "maxpool2d_forward": ref.maxpool2d,
    "maxpool2d_backward": ref.maxpool2d,
    "avgpool2d_forward": ref.avgpool2d,
    "avgpool2d_backward": ref.avgpool2d,
    "batchnorm_forward_train": ref.batchnorm_train,
    "batchnorm_backward_train": ref.batchnorm_train,
    "batchnorm_forward_eval": ref.batchnorm_eval,
    "batchnorm_backward_eval": ref.batchnorm_eval,
    "linear_forward": ref.linear,
    "linear_backward": ref.linear,
    "relu_forward": ref.relu,
    "relu_backward": ref.relu,
    "dropout_mask": ref.dropout_mask,
}
# The public names of cnn.kernels that compute no mathematics of their own.
INFRASTRUCTURE = {
    "IntPair",
    "Workspace",
    "blas_held",
    "channel_major",
    "conv_output_size",
    "empty",
    "empty_channel_major",
    "empty_like_layout",
    "get_num_threads",
    "pair",
    "parallel",
    "parallel_chunks",
    "set_num_threads",
    "split",
}


def test_every_fast_kernel_has_a_loop_version_in_the_reference():
    assert set(kernels.__all__) - INFRASTRUCTURE == set(LOOP_VERSION)
    for fast, loops in LOOP_VERSION.items():
        assert loops.__module__ == "cnn.kernels.reference" and loops.__doc__, fast
        assert f":func:`{loops.__name__}`" in ref.__doc__, (
            f"{loops.__name__} missing from the reference table"
        )
