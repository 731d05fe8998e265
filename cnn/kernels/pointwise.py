"""Elementwise kernels: ReLU forward/backward and the inverted-dropout mask.

Loop versions: :func:`cnn.kernels.reference.relu`, :func:`cnn.kernels.reference.dropout`.
"""

from __future__ import annotations

import numpy as np

from cnn.kernels.memory import _flat, _relu_into, empty_like_layout
from cnn.kernels.threads import parallel


def relu_forward(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)``, elementwise, same memory layout as ``x``.

    Computed as a clip to ``[0, inf]`` (:func:`cnn.kernels.memory._relu_into`) on flat contiguous views,
    one block of elements per thread.
    """
    y = empty_like_layout(x)
    flat = _flat(x, y)
    if flat is None:
        _relu_into(x, y)
        return y
    xf, yf = flat

    def work(lo: int, hi: int) -> None:
        _relu_into(xf[lo:hi], yf[lo:hi])

    parallel(work, xf.size, min_block=1 << 18)  # smaller arrays: a dispatch costs more than it saves
    return y


def relu_backward(grad_out: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``grad_out * [y > 0]`` where ``y`` is the ReLU output (``y > 0`` exactly where the input was)."""
    flat = _flat(grad_out, y)
    if flat is None:
        return grad_out * (y > 0)
    dx = empty_like_layout(grad_out)
    gf, yf = flat
    dxf = dx.ravel(order="K")

    def work(lo: int, hi: int) -> None:
        np.multiply(gf[lo:hi], yf[lo:hi] > 0, out=dxf[lo:hi])

    parallel(work, gf.size, min_block=1 << 18)
    return dx


def dropout_mask(shape: tuple[int, ...], p: float, dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    """Inverted-dropout mask of ``shape``: ``1/(1-p)`` with probability ``1-p``, else 0, in ``dtype``.

    The uniform draws are made in ``dtype`` itself when it is float32/float64 (no float64 detour).
    """
    dtype = np.dtype(dtype)
    draw_dtype = dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)
    u = rng.random(shape, dtype=draw_dtype)
    mask = (u >= p).astype(dtype)
    mask *= dtype.type(1.0 / (1.0 - p))
    return mask
