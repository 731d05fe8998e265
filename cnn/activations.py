"""Element-wise activations (and softmax) following the :class:`cnn.layers.Layer` protocol.

They have no parameters and keep the dtype of their input. Each forward keeps what its backward needs:
the input (ReLU, LeakyReLU) or the output (Sigmoid, Tanh, Softmax), whose derivatives are functions of it.
Only ReLU runs on a fast kernel (reference: :func:`cnn.kernels.reference.relu`); the others are one
NumPy expression each, written as their equation: their own reference.
"""

from __future__ import annotations

import numpy as np

from cnn import kernels
from cnn.layers import Layer


class ReLU(Layer):
    """``y = max(x, 0)``; ``dx = dy * [x > 0]`` (the gradient at 0 is 0, as torch).

    Reference: :func:`cnn.kernels.reference.relu`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._y = kernels.relu_forward(x)
        return self._y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        # y > 0 exactly where x > 0, so the output serves as the mask.
        assert self._y is not None, "backward before forward"
        return kernels.relu_backward(grad_out, self._y)


class LeakyReLU(Layer):
    """``y = x if x > 0 else negative_slope * x``; ``dx = dy * (1 if x > 0 else negative_slope)``."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        return np.where(x > 0, x, x * x.dtype.type(self.negative_slope))

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        assert self._x is not None, "backward before forward"
        slope = np.where(self._x > 0, 1.0, self.negative_slope).astype(grad_out.dtype)
        return grad_out * slope

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Layer):
    """``y = 1 / (1 + exp(-x))``, computed without overflow; ``dx = dy * y * (1 - y)``."""

    def __init__(self) -> None:
        super().__init__()
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        # exp(-|x|) never overflows: sigmoid(x) = 1/(1+e) for x >= 0, e/(1+e) for x < 0, e = exp(-|x|).
        e = np.exp(-np.abs(x))
        self._y = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)
        return self._y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        assert self._y is not None, "backward before forward"
        return grad_out * self._y * (1.0 - self._y)


class Tanh(Layer):
    """``y = tanh(x)``; ``dx = dy * (1 - y^2)``."""

    def __init__(self) -> None:
        super().__init__()
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._y = np.tanh(x)
        return self._y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        assert self._y is not None, "backward before forward"
        return grad_out * (1.0 - self._y * self._y)


class Softmax(Layer):
    """``y_i = exp(x_i - max x) / sum_j exp(x_j - max x)`` along ``axis``;
    ``dx = y * (dy - sum_j dy_j y_j)`` (the Jacobian-vector product, never the Jacobian)."""

    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        self.axis = int(axis)
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        z = x - x.max(axis=self.axis, keepdims=True)
        e = np.exp(z)
        self._y = e / e.sum(axis=self.axis, keepdims=True)
        return self._y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        y = self._y
        return y * (grad_out - (grad_out * y).sum(axis=self.axis, keepdims=True))

    def extra_repr(self) -> str:
        return f"axis={self.axis}"
