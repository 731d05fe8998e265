"""2-D convolution as im2col + one GEMM per block of samples, and its backward pass.

Forward: ``y[n, o, oh, ow] = bias[o] + sum_{c,i,j} weight[o, c, i, j] * xpad[n, c, oh*sh + i, ow*sw + j]``,
i.e. ``Y2 = W2 @ cols`` with ``W2`` (O, C*kh*kw) and ``cols`` (C*kh*kw, N*OH*OW), whose result (O, N*OH*OW)
is already the channel-major output. Loop version: :func:`cnn.kernels.reference.conv2d`.
"""

from __future__ import annotations

import numpy as np

from cnn.errors import CNNError
from cnn.kernels import threads
from cnn.kernels.columns import (
    _col2im_into,
    _im2col_into,
    _offset_slices,
    _row_columns_into,
    conv_output_size,
)
from cnn.kernels.memory import Workspace, _relu_into, _row_sums, channel_major, empty
from cnn.kernels.threads import parallel, parallel_chunks


def _transposed_input_gradient(
    c: int, o: int, kernel: tuple[int, int], stride: tuple, padding: tuple
) -> bool:
    """Whether a convolution's input gradient is computed as a convolution of the padded output gradient
    with the flipped transposed kernel (stride 1, padding < kernel, not many more output than input
    channels); otherwise it is ``col2im(W2^T @ dY2)``."""
    return stride == (1, 1) and padding[0] < kernel[0] and padding[1] < kernel[1] and o <= 2 * c


def _keeps_columns(c: int, o: int, kernel: tuple[int, int], stride: tuple, padding: tuple) -> bool:
    """Whether the forward keeps its im2col columns for ``dW = dY2 @ cols^T``: only where the input
    gradient is not a transposed convolution (strided layers; layers with many more output than input
    channels, such as a first layer, whose columns are small).

    Where it is, the backward builds the columns of the padded output gradient anyway and ``dW``
    follows from those (see :func:`conv2d_backward`), so the forward columns are made a few samples at
    a time in a per-thread buffer that stays in cache and is never kept."""
    return not _transposed_input_gradient(c, o, kernel, stride, padding)


def _chunk(per_sample_bytes: int, n: int) -> int:
    """Samples per chunk of columns: about ``_BLOCK_BYTES`` with the pool on; the whole batch with it off
    (``set_num_threads(1)``), where BLAS threads split one large GEMM better than many small ones."""
    if threads.get_num_threads() <= 1:
        return max(1, n)
    return max(1, min(n, _BLOCK_BYTES // max(1, per_sample_bytes)))


def conv2d_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    ws: Workspace,
) -> np.ndarray:
    """``y[n, o] = bias[o] + sum_{c,i,j} weight[o, c, i, j] * xpad[n, c, oh*sh + i, ow*sw + j]``.

    x (N, C, H, W), weight (O, C, kh, kw), bias (O,) or None -> y (N, O, OH, OW), channel-major memory.
    im2col, then one GEMM ``W2 @ cols``. Layers that keep their columns for the backward
    (:func:`_keeps_columns`) fill one buffer for the whole batch, a fixed block of samples per thread;
    the others work a few samples at a time (chunks handed out by :func:`parallel_chunks`) in a small
    per-thread buffer that stays in cache, and keep a reference to ``x`` instead.
    """
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    oh, ow = conv_output_size(h, kh, stride[0], padding[0]), conv_output_size(w, kw, stride[1], padding[1])
    keep = _keeps_columns(c, o, (kh, kw), stride, padding)
    xt = channel_major(x)  # (C, N, H, W)
    ws.meta.update(x_shape=x.shape, kept_columns=keep, xt=None if keep else xt)
    w2 = weight.reshape(o, -1)  # (O, C*kh*kw)
    yt = empty((o, n, oh, ow), x.dtype)  # the output, channel-major
    y2 = yt.reshape(o, n * oh * ow)  # (O, N*OH*OW)

    def columns_times_weight(cols_block: np.ndarray, lo: int, hi: int) -> None:
        # cols_block (C, kh, kw, hi-lo, OH, OW): the columns of samples lo..hi
        _im2col_into(xt[:, lo:hi], cols_block, (kh, kw), stride, padding)
        block = slice(lo * oh * ow, hi * oh * ow)
        _weight_times_columns(w2, cols_block.reshape(c * kh * kw, -1), y2[:, block], hi - lo)
        if bias is not None:
            y2[:, block] += bias[:, None]

    if keep:
        batch_cols = ws.get("cols", (c, kh, kw, n, oh, ow), x.dtype, zero=True)  # kept for the backward
        parallel(lambda lo, hi: columns_times_weight(batch_cols[:, :, :, lo:hi], lo, hi), n)
    elif _shifted(stride, (kh, kw), ow):
        w3 = _shifted_weight(weight)
        chunk = _shifted_chunk(c, o, (kh, kw), (oh, ow), x.dtype, n)

        def shifted_work(slot: int, lo: int, hi: int) -> None:
            block = y2[:, lo * oh * ow : hi * oh * ow]
            _shifted_conv_into(xt[:, lo:hi], w3, (kh, kw), padding, ws, str(slot), chunk, block)
            if bias is not None:
                block += bias[:, None]

        parallel_chunks(shifted_work, n, chunk)
    else:
        chunk = _chunk(c * kh * kw * oh * ow * x.dtype.itemsize, n)

        def chunk_work(slot: int, lo: int, hi: int) -> None:
            # Each thread's own buffer, allocated zeroed: the padding entries are never written, and every
            # chunk has the same padding pattern.
            cols_buffer = ws.get(f"fwd_cols@{slot}", (c, kh, kw, chunk, oh, ow), x.dtype, zero=True)
            columns_times_weight(cols_buffer[:, :, :, : hi - lo], lo, hi)

        parallel_chunks(chunk_work, n, chunk)
    return np.swapaxes(yt, 0, 1)


def _shifted(stride: tuple, kernel: tuple[int, int], out_width: int) -> bool:
    """Whether a forward that does not keep its columns runs as :func:`_shifted_conv_into`: stride 1, a
    kernel wider than one column, and an output at least ``_SHIFTED_MIN_WIDTH_PER_TAP * (kw - 1)`` wide
    (the padded grid computes ``kw - 1`` extra columns per row)."""
    return stride == (1, 1) and kernel[1] > 1 and out_width >= _SHIFTED_MIN_WIDTH_PER_TAP * (kernel[1] - 1)


_SHIFTED_MIN_WIDTH_PER_TAP = 12
"""With a 3x3 kernel: outputs at least 24 wide. Per sample, one thread, AMD Zen 5: a 32-channel 28x28
layer 0.109 -> 0.091 ms (1.19x), but a 14x14 layer 0.90-1.01x, its two extra columns being a seventh of
the grid. Measured in ``docs/library.md``."""


def _shifted_weight(weight: np.ndarray) -> np.ndarray:
    """``w3[(j, o), (c, i)] = weight[o, c, i, j]``: the weights of :func:`_shifted_conv_into`'s GEMM."""
    o, c, kh, kw = weight.shape
    return np.ascontiguousarray(weight.transpose(3, 0, 1, 2)).reshape(kw * o, c * kh)


def _shifted_chunk(
    c: int, o: int, kernel: tuple[int, int], out_hw: tuple[int, int], dtype: np.dtype, n: int
) -> int:
    """Samples per chunk of :func:`_shifted_conv_into`: its columns and partial products together about
    ``_BLOCK_BYTES``."""
    kh, kw = kernel
    oh, ow = out_hw
    return _chunk((c * kh + kw * o) * oh * (ow + kw - 1) * np.dtype(dtype).itemsize, n)


def _shifted_conv_into(
    xt: np.ndarray,
    w3: np.ndarray,
    kernel: tuple[int, int],
    padding: tuple[int, int],
    ws: Workspace,
    key: str,
    size: int,
    out2: np.ndarray,
) -> None:
    """A stride-1 convolution (no bias) of the samples ``xt`` (C, S, H, W), written to ``out2`` (O, S*OH*OW):

    ``y[o, n, r, q] = sum_j P[(j, o), (n, r, q + j)]`` with ``P = w3 @ cols`` over the width-padded grid
    (``cols``: the kernel rows' columns, :func:`_row_columns_into`; ``w3``: :func:`_shifted_weight`).
    ``kh`` column copies instead of ``kh * kw``, and a GEMM with ``kw`` times the rows (OpenBLAS runs the
    (kw*O, C*kh) shape faster than the thin (O, C*kh*kw) one), for ``kw - 1`` additions of shifted
    slices in cache. Its buffers are the workspace's ``fwd_rows@key`` (the columns of ``size`` samples,
    allocated zeroed: the padding entries are never written) and ``fwd_partial@key`` (``P``), one pair per
    thread. The same products as the im2col GEMM, added in another order (equal to float round-off).
    """
    c, s, h, w = xt.shape
    kh, kw = kernel
    o = w3.shape[0] // kw
    oh, ow = conv_output_size(h, kh, 1, padding[0]), conv_output_size(w, kw, 1, padding[1])
    wp = ow + kw - 1  # the width-padded grid
    cols = ws.get(f"fwd_rows@{key}", (c, kh, size, oh, wp), xt.dtype, zero=True)[:, :, :s]
    partial = ws.get(f"fwd_partial@{key}", (kw * o, size * oh * wp), xt.dtype)
    _row_columns_into(xt, cols, kh, padding)
    p2 = partial[:, : s * oh * wp]
    np.matmul(w3, cols.reshape(w3.shape[1], -1), out=p2)
    p5 = p2.reshape(kw, o, s, oh, wp)
    y4 = out2.reshape(o, s, oh, ow)
    np.add(p5[0, :, :, :, :ow], p5[1, :, :, :, 1 : 1 + ow], out=y4)
    for j in range(2, kw):
        np.add(y4, p5[j, :, :, :, j : j + ow], out=y4)


_PER_SAMPLE_MAX_ROWS = 32
"""Column rows (``C*kh*kw``) up to which a convolution's GEMMs over a block of samples run as one small
GEMM per sample (a first layer: 9 rows for one input channel, 27 for three). OpenBLAS runs the single
GEMM of such a thin shape at a fraction of its speed: at batch 128, per thread, the first layer's forward
GEMM took 0.73 ms and its ``dW`` 0.79 ms as one call, 0.38 and 0.22 ms per sample (AMD Zen 5; at 72 rows
the two were even, at 288 one call was faster). Measured in ``docs/library.md``."""


def _by_sample(a2: np.ndarray, samples: int) -> np.ndarray:
    """The (R, S*P) matrix of ``samples`` samples' columns as an (S, R, P) view. Splitting one axis is
    always possible without a copy, whatever the strides, so results can be written through it."""
    return a2.reshape(a2.shape[0], samples, -1).transpose(1, 0, 2)


def _weight_times_columns(w2: np.ndarray, cols2: np.ndarray, out2: np.ndarray, samples: int) -> None:
    """``out2 (O, S*P) = w2 (O, K) @ cols2 (K, S*P)``: one GEMM, or one per sample when K is small
    (:data:`_PER_SAMPLE_MAX_ROWS`). The same products either way; each output entry is one dot of
    length K."""
    if w2.shape[1] > _PER_SAMPLE_MAX_ROWS or samples <= 1:
        np.matmul(w2, cols2, out=out2)
    else:
        np.matmul(w2, _by_sample(cols2, samples), out=_by_sample(out2, samples))


def _columns_times_grad_t(cols2: np.ndarray, dy2: np.ndarray, samples: int) -> np.ndarray:
    """``cols2 (K, S*P) @ dy2 (O, S*P)^T -> (K, O)``: one GEMM, or, when K is small
    (:data:`_PER_SAMPLE_MAX_ROWS`), one per sample added in sample order (deterministic; a different
    summation order than one GEMM's, so equal to float round-off)."""
    if cols2.shape[0] > _PER_SAMPLE_MAX_ROWS or samples <= 1:
        return cols2 @ dy2.T
    per_sample = np.matmul(_by_sample(cols2, samples), _by_sample(dy2, samples).transpose(0, 2, 1))
    return per_sample.sum(axis=0)


_BLOCK_BYTES = 2 << 20
"""Target size of a chunk of columns (the convolution's forward columns when they are not kept, and its
input-gradient columns): about a core's L2 cache (how it was chosen: ``docs/library.md``)."""


def _flipped_transposed(weight: np.ndarray) -> np.ndarray:
    """``w'[c, o, i, j] = weight[o, c, kh-1-i, kw-1-j]``: the kernel of the stride-1 input gradient."""
    return np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))


def conv2d_backward(
    grad_out: np.ndarray,
    weight: np.ndarray,
    stride: tuple[int, int],
    padding: tuple[int, int],
    ws: Workspace,
    grad_weight: np.ndarray,
    grad_bias: np.ndarray | None,
    input_grad: bool = True,
) -> np.ndarray | None:
    """Gradients of :func:`conv2d_forward`; writes ``grad_weight`` / ``grad_bias`` in place, returns dx
    (None with ``input_grad=False``, which skips its computation: a first layer's dx is unused).

    ``db = sum_{n,oh,ow} dY``. With the forward columns kept: ``dW2 = dY2 @ cols^T`` (dY2 = grad
    (O, N*OH*OW)) and ``dx = col2im(W2^T @ dY2)``.

    Otherwise (stride 1, padding < kernel: :func:`_transposed_input_gradient`) dx is the convolution of
    dY, padded by ``k - 1 - p``, with the flipped transposed kernel: ``dx2 = W'2 @ dcols`` with
    ``dcols[(o, a, b), (n, h, w)] = dYpad[o, n, h + a, w + b]``, and the same columns give the weight
    gradient without the forward's: ``dW[o, c, i, j] = sum_{n,h,w} dcols[(o, kh-1-i, kw-1-j), (n, h, w)]
    * x[n, c, h, w]``, i.e. ``G = dcols @ x2^T`` with its offsets flipped back. The columns are made a
    few samples at a time in a per-thread buffer that stays in cache; the per-chunk parts of ``G`` and
    ``db`` are added in chunk order, so the result does not depend on which thread took which chunk.
    """
    if "x_shape" not in ws.meta:
        raise CNNError("conv2d_backward called before conv2d_forward: no forward state to reuse")
    n, c, h, w = ws.meta["x_shape"]
    o, _, kh, kw = weight.shape
    oh, ow = grad_out.shape[2:]
    dyt = channel_major(grad_out)  # (O, N, OH, OW)
    dy2 = dyt.reshape(o, n * oh * ow)  # (O, N*OH*OW)
    dxt = empty((c, n, h, w), weight.dtype) if input_grad else None  # dx, channel-major
    dtype = weight.dtype

    if ws.meta["kept_columns"]:
        cols = ws.get("cols", (c, kh, kw, n, oh, ow), dtype, zero=True).reshape(c * kh * kw, -1)  # forward's
        w2_t = np.ascontiguousarray(weight.reshape(o, -1).T)  # (C*kh*kw, O)
        chunk = _chunk(c * kh * kw * oh * ow * weight.itemsize, n)

        def work(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray | None]:
            out_block = slice(lo * oh * ow, hi * oh * ow)
            if input_grad:  # dcols a few samples at a time, in a small per-thread buffer
                cols_buffer = ws.get(
                    f"dx_cols@{lo}", (c, kh, kw, min(chunk, hi - lo), oh, ow), dtype, zero=True
                )
                for s0 in range(lo, hi, chunk):
                    s1 = min(hi, s0 + chunk)
                    cols_block = cols_buffer[:, :, :, : s1 - s0]  # (C, kh, kw, s1-s0, OH, OW)
                    np.matmul(
                        w2_t, dy2[:, s0 * oh * ow : s1 * oh * ow], out=cols_block.reshape(c * kh * kw, -1)
                    )
                    _col2im_into(cols_block, dxt[:, s0:s1], (kh, kw), stride, padding)  # type: ignore[index]
            # This block's share of dW2^T (K, O): computed transposed, OpenBLAS's faster orientation here.
            dw_t = _columns_times_grad_t(cols[:, out_block], dy2[:, out_block], hi - lo)
            return dw_t, None if grad_bias is None else _row_sums(dy2[:, out_block])

        parts = parallel(work, n)
    else:
        tpad = (kh - 1 - padding[0], kw - 1 - padding[1])  # padding of dY in the transposed convolution
        w_flipped = _flipped_transposed(weight).reshape(c, -1)  # (C, O*kh*kw)
        x2 = ws.meta["xt"].reshape(c, n * h * w)  # the forward's input, (C, N*H*W)
        chunk = _chunk(o * kh * kw * h * w * weight.itemsize, n)

        def chunk_work(slot: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray | None]:
            cols_buffer = ws.get(f"dx_cols@{slot}", (o, kh, kw, chunk, h, w), dtype, zero=True)
            cols_block = cols_buffer[:, :, :, : hi - lo]  # (O, kh, kw, hi-lo, H, W)
            dcols = cols_block.reshape(o * kh * kw, -1)  # (O*kh*kw, (hi-lo)*H*W)
            _im2col_into(dyt[:, lo:hi], cols_block, (kh, kw), (1, 1), tpad)
            pixels = slice(lo * h * w, hi * h * w)
            if dxt is not None:  # input_grad
                np.matmul(w_flipped, dcols, out=dxt.reshape(c, -1)[:, pixels])
            g = dcols @ x2[:, pixels].T  # this chunk's part of G, rows (o, a, b)
            return g, None if grad_bias is None else _row_sums(dy2[:, lo * oh * ow : hi * oh * ow])

        parts = parallel_chunks(chunk_work, n, chunk)

    g_total, db_total = parts[0]
    for g, db in parts[1:]:
        g_total += g
        if db_total is not None:
            db_total += db
    if ws.meta["kept_columns"]:
        grad_weight[...] = g_total.T.reshape(grad_weight.shape)
    else:  # G[(o, a, b), c] holds dW[o, c, kh-1-a, kw-1-b]
        grad_weight[...] = g_total.reshape(o, kh, kw, c)[:, ::-1, ::-1, :].transpose(0, 3, 1, 2)
    if grad_bias is not None:
        grad_bias[...] = db_total
    return None if dxt is None else np.swapaxes(dxt, 0, 1)


def conv2d_forward_eval(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    ws: Workspace,
    relu: bool = False,
    pool: tuple[tuple[int, int], tuple[int, int]] | None = None,
) -> np.ndarray:
    """Inference only: :func:`conv2d_forward`, then optionally a ReLU and a max-pool ``pool = (kernel,
    stride)`` without padding, applied to each block of samples while it is in cache (an eval-mode batch
    norm in between is folded into ``weight`` and ``bias`` by the caller:
    :meth:`cnn.layers.Conv2D.forward_inference`).

    ``max_pool(relu(y)) = relu(max_pool(y))``, so the ReLU runs on the pooled values, a quarter of them
    for a 2x2 pool. Nothing is kept for a backward pass. The threads take the forward's blocks of
    samples (so each GEMM multiplies the same columns); each builds its columns and, with ``pool``, its
    pre-pool output in its own buffer, so the full-size convolution output is never written.
    """
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    oh, ow = conv_output_size(h, kh, stride[0], padding[0]), conv_output_size(w, kw, stride[1], padding[1])
    xt = channel_major(x)  # (C, N, H, W)
    w2 = weight.reshape(o, -1)  # (O, C*kh*kw)
    dtype = x.dtype
    if pool is not None:
        pk, ps = pool
        ph, pw = conv_output_size(oh, pk[0], ps[0], 0), conv_output_size(ow, pk[1], ps[1], 0)
        windows = _offset_slices((oh, ow), (ph, pw), tuple(pk), tuple(ps), (0, 0))
        out = empty((o, n, ph, pw), dtype)
    else:
        out = empty((o, n, oh, ow), dtype)
        y2 = out.reshape(o, n * oh * ow)

    shifted = not _keeps_columns(c, o, (kh, kw), stride, padding) and _shifted(stride, (kh, kw), ow)
    w3 = _shifted_weight(weight) if shifted else None

    def block_work(cols_block: np.ndarray | None, key: str, size: int, lo: int, hi: int) -> None:
        # samples lo..hi, their columns in ``cols_block`` (None: the shifted GEMM's buffers, per ``key``);
        # ``size`` samples fit the buffers named ``key``
        if pool is None:
            yb = y2[:, lo * oh * ow : hi * oh * ow]
        else:
            yb = ws.get(f"eval_out@{key}", (o, size * oh * ow), dtype)[:, : (hi - lo) * oh * ow]
        if cols_block is None:
            _shifted_conv_into(xt[:, lo:hi], w3, (kh, kw), padding, ws, key, size, yb)  # type: ignore[arg-type]
        else:
            _im2col_into(xt[:, lo:hi], cols_block, (kh, kw), stride, padding)
            _weight_times_columns(w2, cols_block.reshape(c * kh * kw, -1), yb, hi - lo)
        if bias is not None:
            yb += bias[:, None]
        if pool is not None:  # as maxpool2d_forward: the first window offset, then a running maximum
            src, yb = yb.reshape(o, hi - lo, oh, ow), out[:, lo:hi]
            _, _, _, (ri, ci) = windows[0]
            yb[...] = src[:, :, ri, ci]
            for _, _, (ro, co), (ri, ci) in windows[1:]:
                np.maximum(yb[:, :, ro, co], src[:, :, ri, ci], out=yb[:, :, ro, co])
        if relu:  # as relu_forward
            _relu_into(yb, yb)

    # The column buffers are the forward's own (no more memory than a forward in eval mode), so the
    # forward state they held is dropped: a conv2d_backward now raises instead of using them.
    ws.meta.clear()
    if _keeps_columns(c, o, (kh, kw), stride, padding):
        batch_cols = ws.get("cols", (c, kh, kw, n, oh, ow), dtype, zero=True)
        parallel(lambda lo, hi: block_work(batch_cols[:, :, :, lo:hi], str(lo), hi - lo, lo, hi), n)
    elif shifted:
        chunk = _shifted_chunk(c, o, (kh, kw), (oh, ow), dtype, n)
        parallel_chunks(lambda slot, lo, hi: block_work(None, str(slot), chunk, lo, hi), n, chunk)
    else:
        chunk = _chunk(c * kh * kw * oh * ow * dtype.itemsize, n)

        def chunk_work(slot: int, lo: int, hi: int) -> None:
            cols_buffer = ws.get(f"fwd_cols@{slot}", (c, kh, kw, chunk, oh, ow), dtype, zero=True)
            block_work(cols_buffer[:, :, :, : hi - lo], str(slot), chunk, lo, hi)

        parallel_chunks(chunk_work, n, chunk)
    return np.swapaxes(out, 0, 1)
