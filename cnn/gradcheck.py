"""Numerical gradient checking in float64 (centred differences): the one ``rel_error`` and numerical
gradient used by the tests, the tutorial notebook and the docs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max(|a| + |b|, 1e-8), elementwise, as in CS231n."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """d f() / d x by centred differences; ``x`` is perturbed in place and restored.

    ``f`` takes no argument and reads ``x`` (an input or a parameter array) through closure.
    """
    grad = np.zeros_like(x, dtype=np.float64)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])  # type: ignore[list-item]
    while not it.finished:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        fp = f()
        x[i] = old - h
        fm = f()
        x[i] = old
        grad[i] = (fp - fm) / (2 * h)
        it.iternext()
    return grad


def numerical_gradient_array(
    f: Callable[[], np.ndarray], x: np.ndarray, dout: np.ndarray, h: float = 1e-6
) -> np.ndarray:
    """Gradient of ``sum(f() * dout)`` with respect to ``x``: a random upstream gradient ``dout``."""
    return numerical_gradient(lambda: float(np.sum(f() * dout)), x, h)
