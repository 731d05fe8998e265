"""Max and average pooling over ``kh x kw`` windows, one strided slice per kernel offset.

Max pool: ``y[n, c, oh, ow] = max_{i,j} xpad[n, c, oh*sh + i, ow*sw + j]`` (padding is -inf); the
backward routes each gradient to the first maximum of its window (row-major, as torch). Average pool
divides by ``kh*kw`` (padding counted). Channel blocks run in parallel. Loop versions:
:func:`cnn.kernels.reference.maxpool2d`, :func:`cnn.kernels.reference.avgpool2d`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnn.errors import CNNError
from cnn.kernels.columns import _offset_slices, conv_output_size
from cnn.kernels.memory import channel_major, empty
from cnn.kernels.threads import parallel


def _pool_out_hw(
    x_shape: tuple[int, ...], kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> tuple[int, int]:
    """(OH, OW) of a pooling window over ``x_shape`` (N, C, H, W)."""
    return (
        conv_output_size(x_shape[2], kernel[0], stride[0], padding[0]),
        conv_output_size(x_shape[3], kernel[1], stride[1], padding[1]),
    )


def maxpool2d_forward(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    cache: dict[str, Any],
    scale: np.ndarray | None = None,
) -> np.ndarray:
    """``y[n, c, oh, ow] = max_{i,j} xpad[n, c, oh*sh + i, ow*sw + j]`` (padding never wins: -inf).

    ``scale`` (N, C, 1, 1), e.g. a following ``Dropout2D``'s mask, fuses ``y * scale`` into the same
    pass (each channel block scaled while in cache); :func:`maxpool2d_backward` then applies it too.

    Strided views, one per kernel offset, are folded into a running maximum; ``cache['argmax']`` keeps
    the offset of the *first* maximum of each window (row-major, as torch) as uint8/uint16, for the
    backward pass. Channel blocks run in parallel. Output memory is channel-major.
    """
    n, c, h, w = x.shape
    oh, ow = _pool_out_hw(x.shape, kernel, stride, padding)
    kk = kernel[0] * kernel[1]
    xt = channel_major(x)  # (C, N, H, W)
    yt = empty((c, n, oh, ow), x.dtype)  # the output, channel-major
    argmax = empty((c, n, oh, ow), np.dtype(np.uint8 if kk < 256 else np.uint16))
    offsets = _offset_slices((h, w), (oh, ow), tuple(kernel), tuple(stride), tuple(padding))

    # When the first offset's windows cover the whole output (no padding at the top left), its values
    # start the running maximum as they are: no -inf fill, and one compare-and-update pass fewer.
    first_covers = (
        bool(offsets) and offsets[0][:2] == (0, 0) and offsets[0][2] == (slice(0, oh), slice(0, ow))
    )

    def work(lo: int, hi: int) -> None:
        best, idx, src = yt[lo:hi], argmax[lo:hi], xt[lo:hi]  # channels lo..hi: (hi-lo, N, ...)
        idx[...] = 0
        rest = offsets
        if first_covers:
            _, _, _, (ri, ci) = offsets[0]
            best[...] = src[:, :, ri, ci]
            rest = offsets[1:]
        else:
            best[...] = -np.inf
        for i, j, (ro, co), (ri, ci) in rest:
            cand, cur, cur_idx = src[:, :, ri, ci], best[:, :, ro, co], idx[:, :, ro, co]
            better = cand > cur  # strict: an equal later value never displaces the first maximum
            np.maximum(cur, cand, out=cur)
            # The offsets come in increasing row-major order k, so k exceeds every index stored so
            # far: "k where better, else unchanged" is max(idx, better * k), one pass fewer.
            np.maximum(cur_idx, better * cur_idx.dtype.type(i * kernel[1] + j), out=cur_idx)
        if scale_t is not None:
            best *= scale_t[lo:hi]

    scale_t = _scale_channel_major(scale, n, c, x.dtype)
    parallel(work, c)
    cache.update(argmax=argmax, x_shape=x.shape, scale_t=scale_t, out=yt)
    return np.swapaxes(yt, 0, 1)


def _scale_channel_major(scale: np.ndarray | None, n: int, c: int, dtype: np.dtype) -> np.ndarray | None:
    """A per-(sample, channel) ``scale`` (N, C, 1, 1) as a (C, N, 1, 1) view, to match channel blocks."""
    if scale is None:
        return None
    if scale.shape != (n, c, 1, 1):
        raise CNNError(f"max-pool scale must have shape {(n, c, 1, 1)}, got {scale.shape}")
    return np.swapaxes(scale.astype(dtype, copy=False), 0, 1)


def maxpool2d_backward(
    grad_out: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    cache: dict[str, Any],
    relu_before: bool = False,
) -> np.ndarray:
    """Routes each output gradient to the input position that won its window (the first maximum),
    times the forward's ``scale`` if it had one.

    ``relu_before=True``: the pooled input was a ReLU's output (>= 0), and the gradient is taken on
    through that ReLU too: only windows whose output is > 0 pass theirs on. The same as the ReLU's
    backward ``dx * [x > 0]`` after this one (a window's gradient lands on its maximum, which is > 0
    exactly when the output is), but on the pooled grid, a quarter of the values for a 2x2 pool, and
    without reading the ReLU's output."""
    argmax, (n, c, h, w), scale_t = cache["argmax"], cache["x_shape"], cache.get("scale_t")
    positive = cache["out"] if relu_before else None
    oh, ow = argmax.shape[2:]
    dyt = channel_major(grad_out)  # (C, N, OH, OW)
    dxt = empty((c, n, h, w), grad_out.dtype)  # dx, channel-major
    offsets = _offset_slices((h, w), (oh, ow), tuple(kernel), tuple(stride), tuple(padding))

    # Windows that tile the input (kernel == stride, no padding) never overlap: each offset's gradient
    # is written straight into its strided view, and only the rows/columns no window covers are zeroed.
    tiles = kernel == stride and padding == (0, 0)

    def work(lo: int, hi: int) -> None:
        dx, dy, idx = dxt[lo:hi], dyt[lo:hi], argmax[lo:hi]
        if scale_t is not None:
            dy = dy * scale_t[lo:hi]
        if positive is not None:  # a zero output (a zero maximum, or dropped) passes nothing on
            dy = np.multiply(dy, positive[lo:hi] > 0, out=dy if scale_t is not None else None)
        if tiles:
            dx[:, :, oh * stride[0] :] = 0
            dx[:, :, :, ow * stride[1] :] = 0
        else:
            dx[...] = 0
        for i, j, (ro, co), (ri, ci) in offsets:
            won = idx[:, :, ro, co] == i * kernel[1] + j
            if tiles:
                np.multiply(dy, won, out=dx[:, :, ri, ci])
            else:
                dx[:, :, ri, ci] += dy[:, :, ro, co] * won

    parallel(work, c)
    return np.swapaxes(dxt, 0, 1)


def avgpool2d_forward(
    x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> np.ndarray:
    """``y = sum of each kh x kw window of the zero-padded input / (kh*kw)`` (padding counted, as the
    torch default ``count_include_pad=True``)."""
    n, c, h, w = x.shape
    oh, ow = _pool_out_hw(x.shape, kernel, stride, padding)
    xt = channel_major(x)
    yt = np.zeros((c, n, oh, ow), dtype=x.dtype)
    for _, _, (ro, co), (ri, ci) in _offset_slices(
        (h, w), (oh, ow), tuple(kernel), tuple(stride), tuple(padding)
    ):
        yt[:, :, ro, co] += xt[:, :, ri, ci]
    yt *= yt.dtype.type(1.0 / (kernel[0] * kernel[1]))
    return np.swapaxes(yt, 0, 1)


def avgpool2d_backward(
    grad_out: np.ndarray,
    x_shape: tuple[int, int, int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> np.ndarray:
    """Each input pixel receives ``grad / (kh*kw)`` from every window that contains it."""
    n, c, h, w = x_shape
    oh, ow = grad_out.shape[2:]
    dyt = channel_major(grad_out) * grad_out.dtype.type(1.0 / (kernel[0] * kernel[1]))
    dxt = np.zeros((c, n, h, w), dtype=grad_out.dtype)
    for _, _, (ro, co), (ri, ci) in _offset_slices(
        (h, w), (oh, ow), tuple(kernel), tuple(stride), tuple(padding)
    ):
        dxt[:, :, ri, ci] += dyt[:, :, ro, co]
    return np.swapaxes(dxt, 0, 1)
