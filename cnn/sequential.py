"""The :class:`Sequential` container: layers applied one after another, with two fused pairs.

A batch norm followed by a ReLU runs as one pass (``BatchNorm.forward_relu``), and a max-pool followed by
a ``Dropout2D`` as another (``MaxPool2D.forward_dropout``); the second layer stays in the list, so names
and ``state_dict`` keys are those of ``torch.nn.Sequential``. Importable as ``cnn.model.Sequential`` and
``cnn.Sequential``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from cnn.activations import ReLU
from cnn.errors import CNNError
from cnn.layers import BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Dropout2D, Layer, MaxPool2D

__all__ = ["Sequential"]

_AFTER_INFERENCE: list[Layer] = []  # Sequential._ran after forward_inference (compared by identity)
_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _fuses_relu(layer: Layer, following: Layer | None) -> bool:
    """Whether ``layer`` and the ``following`` one run fused: a batch norm and exactly a ReLU."""
    return isinstance(layer, (BatchNorm1D, BatchNorm2D)) and type(following) is ReLU


_FRESH_OUTPUT = (Conv2D, Dense)
"""Layers whose forward returns a new array that they do not keep: a batch norm right after one may
overwrite it (``overwrite_input``)."""
_FRESH_INPUT_GRAD = (Conv2D, Dense, MaxPool2D)
"""Layers whose backward returns a new array that they do not keep: a batch norm right before one may
compute its own input gradient in it (``overwrite_grad``)."""


def _hands_over(layer: Layer | None, kinds: tuple[type, ...]) -> bool:
    """Whether ``layer`` (the one that produced the array at hand) is exactly one of ``kinds``."""
    return layer is not None and type(layer) in kinds


def _fuses_dropout(layer: Layer, following: Layer | None, x: np.ndarray) -> bool:
    """Whether ``layer`` and the ``following`` one run fused: a max-pool and exactly a ``Dropout2D`` on a
    floating-point input (the mask's dtype is then the pooled output's)."""
    return type(layer) is MaxPool2D and type(following) is Dropout2D and getattr(x, "dtype", None) in _FLOATS


class Sequential(Layer):
    """Layers applied one after another; itself a :class:`~cnn.layers.Layer`.

    ``forward`` runs ``layers[0] .. layers[-1]``; ``backward`` runs them in reverse. Parameter, gradient
    and buffer names are ``"<index>.<name>"`` (``"0.weight"``, ``"1.running_mean"``), as in
    ``torch.nn.Sequential``; the dicts are built on each access from the layers' own dicts, so they always
    hold the layers' live arrays.
    """

    def __init__(self, layers: Iterable[Layer]) -> None:
        self.layers: list[Layer] = list(layers)
        self.training = True
        self._ran: list[Layer] | None = None  # the (possibly fused) layers of the last forward

    # The Layer attributes, as live views of the children (no setters: assign to a child's dict instead).
    @property
    def params(self) -> dict[str, np.ndarray]:  # type: ignore[override]
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params.items()}

    @property
    def grads(self) -> dict[str, np.ndarray]:  # type: ignore[override]
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.grads.items()}

    @property
    def buffers(self) -> dict[str, np.ndarray]:  # type: ignore[override]
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.buffers.items()}

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> Layer:
        return self.layers[i]

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def forward(self, x: np.ndarray) -> np.ndarray:
        # A batch norm followed by a ReLU runs as one fused layer (BatchNorm.forward_relu: one pass over
        # the data instead of two), and so does a max-pool followed by a Dropout2D
        # (MaxPool2D.forward_dropout); the second layer stays in the list, so names and state_dict keys
        # are unchanged. The layers that ran are recorded for backward.
        ran: list[Layer] = []
        i, layers = 0, self.layers
        while i < len(layers):
            layer = layers[i]
            following = layers[i + 1] if i + 1 < len(layers) else None
            before = ran[-1] if ran else None
            if isinstance(layer, (BatchNorm1D, BatchNorm2D)) and _hands_over(before, _FRESH_OUTPUT):
                # The previous layer's fresh output: the batch norm keeps its centred values in it.
                fused = _fuses_relu(layer, following)
                x = (layer.forward_relu if fused else layer.forward)(x, overwrite_input=True)
                i += 2 if fused else 1
            elif _fuses_relu(layer, following):
                x = layer.forward_relu(x)  # type: ignore[attr-defined]
                i += 2
            elif _fuses_dropout(layer, following, x):
                x = layer.forward_dropout(x, following)  # type: ignore[attr-defined]
                i += 2
            else:
                x = layer.forward(x)
                i += 1
            ran.append(layer)
        self._ran = ran
        return x

    def forward_inference(self, x: np.ndarray) -> np.ndarray:
        """``forward(x)`` in eval mode, for inference only (``CNN.predict_proba`` and its siblings): equal
        up to float round-off, faster, and no :meth:`backward` may follow it.

        A ``Conv2D`` followed by a ``BatchNorm2D``, a ``ReLU`` and a ``MaxPool2D`` without padding (each
        optional, in that order; eval-mode dropout layers in between are the identity and skipped) runs
        as one :meth:`Conv2D.forward_inference`, a few samples at a time while they are in cache. Falls
        back to :meth:`forward` in training mode; a layer left in training mode on its own is not fused."""
        if self.training:
            return self.forward(x)
        i, layers = 0, self.layers

        def at(k: int, kind: type) -> bool:
            return k < len(layers) and type(layers[k]) is kind and not layers[k].training

        def skip_dropout(k: int) -> int:
            while at(k, Dropout) or at(k, Dropout2D):
                k += 1
            return k

        while i < len(layers):
            layer = layers[i]
            if type(layer) is Conv2D:
                k = i + 1
                bn = relu = pool = None
                if at(k, BatchNorm2D):
                    bn, k = layers[k], k + 1
                if at(k, ReLU):
                    relu, k = layers[k], k + 1
                    k = skip_dropout(k)
                    if at(k, MaxPool2D) and layers[k].padding == (0, 0):  # type: ignore[attr-defined]
                        pool, k = layers[k], k + 1
                x = layer.forward_inference(x, bn=bn, relu=relu is not None, pool=pool)  # type: ignore[arg-type]
                i = k
            elif at(i, Dropout) or at(i, Dropout2D):  # eval mode: the identity
                i += 1
            else:
                x = layer.forward(x)
                i += 1
        self._ran = _AFTER_INFERENCE  # a backward now would use stale caches: see backward
        return x

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self._ran is _AFTER_INFERENCE:
            raise CNNError("Sequential.backward after forward_inference: run forward first")
        ran = list(reversed(self.layers if self._ran is None else self._ran))
        after: Layer | None = None  # the layer whose backward produced grad_out
        relu_applied = False  # whether grad_out already went through a batch norm's fused ReLU
        for i, layer in enumerate(ran):
            before = ran[i + 1] if i + 1 < len(ran) else None
            if isinstance(layer, (BatchNorm1D, BatchNorm2D)):
                # dx in the fresh gradient's memory, where the layer after it made one
                overwrite = _hands_over(after, _FRESH_INPUT_GRAD)
                grad_out = layer.backward(grad_out, overwrite_grad=overwrite, relu_applied=relu_applied)
                relu_applied = False
            elif type(layer) is MaxPool2D and type(before) is BatchNorm2D and before.relu_fused:
                # The batch norm's ReLU mask applied on the pooled grid (see MaxPool2D.backward).
                grad_out = layer.backward(grad_out, relu_before=True)
                relu_applied = True
            else:
                grad_out = layer.backward(grad_out)
            after = layer
        return grad_out

    def train(self, mode: bool = True) -> Sequential:
        self.training = mode
        for layer in self.layers:
            layer.train(mode)
        return self

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        for layer in self.layers:
            input_shape = layer.output_shape(input_shape)
        return tuple(input_shape)

    def state_items(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """``(name, array)`` for every parameter then buffer of each layer, in layer order (torch order)."""
        for i, layer in enumerate(self.layers):
            for k, v in layer.params.items():
                yield f"{prefix}{i}.{k}", v
            for k, v in layer.buffers.items():
                yield f"{prefix}{i}.{k}", v

    def extra_repr(self) -> str:
        return "\n" + "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers)) + "\n"
