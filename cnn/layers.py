"""Layers of the NumPy CNN library.

Every layer follows one protocol (see :class:`Layer`): ``forward(x)``, ``backward(grad_out) -> grad_in``,
``params`` and ``grads`` dicts with the same keys (torch names: ``weight``, ``bias``), ``buffers`` for
non-trained state, and a ``training`` flag set by ``train()`` / ``eval()``. Layout is NCHW and parameter
shapes are those of ``torch.nn``.
"""

from __future__ import annotations

import numpy as np


class Layer:
    """Base class of every layer.

    Attributes:
        params:   name -> trainable ndarray (``weight``, ``bias``, ...), updated in place by optimizers.
        grads:    name -> ndarray of the same shape as ``params[name]``. ``backward`` *overwrites* these
                  arrays in place (``grads[k][...] = ...``), never rebinds them, so the ``(param, grad)``
                  pairs an optimizer holds stay valid for the whole training.
        buffers:  name -> non-trained state saved with the model (BatchNorm's running statistics).
        training: True in training mode (dropout active, batch statistics), False in eval mode.
    """

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.training: bool = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def train(self, mode: bool = True) -> Layer:
        self.training = mode
        return self

    def eval(self) -> Layer:
        return self.train(False)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one sample's output (no batch axis) for one sample's ``input_shape``."""
        return tuple(input_shape)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"
