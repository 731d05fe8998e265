"""Sliding-window geometry and im2col/col2im: the copies that turn a convolution into one GEMM.

For an input ``x`` (N, C, H, W), a ``kh x kw`` window, stride ``(sh, sw)`` and zero padding ``(ph, pw)``,
the columns are ``cols[(c, i, j), (n, oh, ow)] = xpad[n, c, oh*sh + i, ow*sw + j]``, shape
(C*kh*kw, N*OH*OW), and col2im is their adjoint (each column entry added back onto its pixel). Both are
one slice copy (or ``+=``) per kernel offset ``(i, j)``, never a loop over pixels; the loop version is
:func:`cnn.kernels.reference.im2col`. Padding entries are never written: buffers start zeroed.
"""

from __future__ import annotations

import functools

import numpy as np

from cnn.errors import CNNError
from cnn.kernels.memory import channel_major, empty_channel_major

IntPair = int | tuple[int, int]


def pair(value: IntPair, name: str) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(3, 1) -> (3, 1)``. Raises :class:`CNNError` naming ``name`` otherwise."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value), int(value)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        return int(value[0]), int(value[1])
    raise CNNError(f"{name} must be an int or a pair of ints, got {value!r}")


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a sliding window: ``floor((size + 2*padding - kernel) / stride) + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def _valid_range(out_size: int, in_size: int, offset: int, stride: int, pad: int) -> tuple[int, int, int]:
    """Output positions ``o`` in ``[o_lo, o_hi)`` whose input ``o*stride + offset - pad`` lies inside
    ``[0, in_size)``, and the first such input index."""
    shift = offset - pad
    o_lo = max(0, -(shift // stride))  # ceil(-shift / stride) when shift < 0
    o_hi = max(o_lo, min(out_size, (in_size - 1 - shift) // stride + 1))
    return o_lo, o_hi, o_lo * stride + shift


@functools.lru_cache(maxsize=512)
def _offset_slices(
    in_hw: tuple[int, int],
    out_hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> tuple[tuple[int, int, tuple[slice, slice], tuple[slice, slice]], ...]:
    """For each kernel offset (i, j): the (rows, cols) slices of the output grid whose input pixel is
    inside the image, and the matching strided slices of the input. Offsets that only ever see padding
    are left out. Cached per geometry: the chunked convolutions ask for the same slices hundreds of
    times per training step."""
    found = []
    for i in range(kernel[0]):
        r_lo, r_hi, r0 = _valid_range(out_hw[0], in_hw[0], i, stride[0], padding[0])
        for j in range(kernel[1]):
            c_lo, c_hi, c0 = _valid_range(out_hw[1], in_hw[1], j, stride[1], padding[1])
            if r_hi == r_lo or c_hi == c_lo:
                continue  # this offset only ever sees padding
            out_sl = (slice(r_lo, r_hi), slice(c_lo, c_hi))
            in_sl = (
                slice(r0, r0 + stride[0] * (r_hi - r_lo - 1) + 1, stride[0]),
                slice(c0, c0 + stride[1] * (c_hi - c_lo - 1) + 1, stride[1]),
            )
            found.append((i, j, out_sl, in_sl))
    return tuple(found)


def _im2col_into(
    xt: np.ndarray,
    cols6: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> None:
    """``cols6[c, i, j, n, oh, ow] = xpad[c, n, oh*sh + i, ow*sw + j]`` for the in-image entries only.

    ``xt`` is channel-major (C, N, H, W); entries that fall in the padding are not written (the caller's
    buffer holds zeros there). One slice copy per kernel offset.
    """
    oh, ow = cols6.shape[4:]
    for i, j, (ro, co), (ri, ci) in _offset_slices(
        xt.shape[2:], (oh, ow), tuple(kernel), tuple(stride), tuple(padding)
    ):
        cols6[:, i, j, :, ro, co] = xt[:, :, ri, ci]


def _row_columns_into(xt: np.ndarray, cols5: np.ndarray, kh: int, padding: tuple[int, int]) -> None:
    """``cols5[c, i, n, r, t] = xpad[c, n, r + i, t]`` for the in-image entries: the columns of the kernel's
    rows only, over the width-padded grid (stride 1).

    ``xt`` is channel-major (C, N, H, W), ``cols5`` (C, kh, N, OH, W + 2*pw) and holds zeros where the
    padding falls (never written). One slice copy per kernel row, whole image rows at a time. With
    them a stride-1 convolution is one GEMM and a sum of ``kw`` shifted slices
    (:func:`cnn.kernels.conv._shifted_conv_into`); loop version: :func:`cnn.kernels.reference.conv2d`.
    """
    h, w = xt.shape[2:]
    oh = cols5.shape[3]
    ph, pw = padding
    for i in range(kh):
        r_lo, r_hi = max(0, ph - i), min(oh, h + ph - i)
        if r_hi > r_lo:
            cols5[:, i, :, r_lo:r_hi, pw : pw + w] = xt[:, :, r_lo + i - ph : r_hi + i - ph, :]


def _col2im_into(
    cols6: np.ndarray,
    dxt: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> None:
    """Adjoint of :func:`_im2col_into`: ``dxt`` (C, N, H, W) = sum over offsets of the column entries
    that were copied from each pixel. One slice ``+=`` per kernel offset; padding entries are dropped."""
    dxt[...] = 0
    oh, ow = cols6.shape[4:]
    for i, j, (ro, co), (ri, ci) in _offset_slices(
        dxt.shape[2:], (oh, ow), tuple(kernel), tuple(stride), tuple(padding)
    ):
        dxt[:, :, ri, ci] += cols6[:, i, j, :, ro, co]


def im2col(
    x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> np.ndarray:
    """Columns of ``x`` (N, C, H, W) for a sliding ``kernel`` window: shape (C*kh*kw, N*OH*OW).

    ``cols[(c*kh + i)*kw + j, (n*OH + oh)*OW + ow] = xpad[n, c, oh*sh + i, ow*sw + j]``, so that a
    convolution is ``weight.reshape(O, -1) @ cols``.
    """
    n, c, h, w = x.shape
    oh, ow = (
        conv_output_size(h, kernel[0], stride[0], padding[0]),
        conv_output_size(w, kernel[1], stride[1], padding[1]),
    )
    cols6 = np.zeros((c, kernel[0], kernel[1], n, oh, ow), dtype=x.dtype)
    _im2col_into(channel_major(x), cols6, kernel, stride, padding)
    return cols6.reshape(c * kernel[0] * kernel[1], n * oh * ow)


def col2im(
    cols: np.ndarray,
    x_shape: tuple[int, int, int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> np.ndarray:
    """Adjoint of :func:`im2col`: ``cols`` (C*kh*kw, N*OH*OW) -> (N, C, H, W), overlaps summed."""
    n, c, h, w = x_shape
    oh, ow = (
        conv_output_size(h, kernel[0], stride[0], padding[0]),
        conv_output_size(w, kernel[1], stride[1], padding[1]),
    )
    dx = empty_channel_major(x_shape, cols.dtype)
    _col2im_into(
        cols.reshape(c, kernel[0], kernel[1], n, oh, ow), np.swapaxes(dx, 0, 1), kernel, stride, padding
    )
    return dx
