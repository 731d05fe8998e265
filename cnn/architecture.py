"""The network's architecture as plain data, shared by the NumPy ``CNN`` and the ``TorchCNN`` twin.

Both frameworks build their layers from the same list of :class:`LayerSpec`, in the same order, inside
two sequences named ``features`` and ``classifier``. That is what makes their ``state_dict`` keys equal
(``features.0.weight``, ``classifier.1.bias``, ...) and their weights interchangeable.

Default (the seed network), for ``input_shape=(1, 28, 28)``::

    features:   [Conv2D(32, 3x3, pad 1) -> BatchNorm2D -> ReLU] x2 -> MaxPool2D(2) -> Dropout2D(0.25)
                [Conv2D(64, 3x3, pad 1) -> BatchNorm2D -> ReLU] x2 -> MaxPool2D(2) -> Dropout2D(0.25)
    classifier: Flatten -> Dense(128) -> BatchNorm1D -> ReLU -> Dropout(0.5) -> Dense(10)

A convolution or dense layer followed by batch norm has no bias (the norm's shift makes it redundant),
as in torchvision's models.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cnn.errors import ConfigError


@dataclass(frozen=True)
class LayerSpec:
    """One layer: ``kind`` is one of ``conv2d, batchnorm2d, relu, maxpool2d, dropout2d, flatten,
    dense, batchnorm1d, dropout``; ``kwargs`` are the constructor arguments both frameworks accept."""

    kind: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ArchConfig:
    """The constructor arguments of ``CNN`` / ``TorchCNN`` (dtype and seed aside)."""

    input_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    use_batchnorm: bool = True
    dropout_rate: float = 0.25
    conv_channels: tuple[tuple[int, ...], ...] = ((32, 32), (64, 64))
    kernel_size: int = 3
    dense_units: tuple[int, ...] = (128,)
    dense_dropout: float = 0.5

    def __post_init__(self) -> None:
        # Normalise lists (from JSON or YAML) to tuples so configs compare and hash equal.
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        object.__setattr__(
            self, "conv_channels", tuple(tuple(int(c) for c in blk) for blk in self.conv_channels)
        )
        object.__setattr__(self, "dense_units", tuple(int(u) for u in self.dense_units))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first argument that cannot build a network."""
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ConfigError(
                f"model.input_shape must be (channels, height, width) of positive ints, "
                f"got {self.input_shape}"
            )
        if self.num_classes < 2:
            raise ConfigError(f"model.num_classes must be >= 2, got {self.num_classes}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(
                f"model.kernel_size must be a positive odd int ('same' padding), got {self.kernel_size}"
            )
        for name in ("dropout_rate", "dense_dropout"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {p}")
        if not self.conv_channels or any(not blk for blk in self.conv_channels):
            raise ConfigError(
                f"model.conv_channels must be a non-empty list of non-empty blocks, got {self.conv_channels}"
            )
        if any(c < 1 for blk in self.conv_channels for c in blk) or any(u < 1 for u in self.dense_units):
            raise ConfigError("model.conv_channels and model.dense_units must be positive")
        _, h, w = self.input_shape
        for _ in self.conv_channels:
            h, w = h // 2, w // 2
            if h < 1 or w < 1:
                raise ConfigError(
                    f"model.input_shape {self.input_shape} is too small for "
                    f"{len(self.conv_channels)} conv blocks: each halves height and width"
                )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists); ``ArchConfig(**d)`` rebuilds it."""
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["conv_channels"] = [list(b) for b in self.conv_channels]
        d["dense_units"] = list(self.dense_units)
        return d


def build_spec(cfg: ArchConfig) -> dict[str, list[LayerSpec]]:
    """The layer lists ``{"features": [...], "classifier": [...]}`` for ``cfg``."""
    bn = cfg.use_batchnorm
    channels, h, w = cfg.input_shape
    features: list[LayerSpec] = []
    for block in cfg.conv_channels:
        for out in block:
            features.append(
                LayerSpec(
                    "conv2d",
                    dict(
                        in_channels=channels,
                        out_channels=out,
                        kernel_size=cfg.kernel_size,
                        padding=cfg.kernel_size // 2,
                        bias=not bn,
                    ),
                )
            )
            if bn:
                features.append(LayerSpec("batchnorm2d", dict(num_features=out)))
            features.append(LayerSpec("relu"))
            channels = out
        features.append(LayerSpec("maxpool2d", dict(kernel_size=2)))
        features.append(LayerSpec("dropout2d", dict(p=cfg.dropout_rate)))
        h, w = h // 2, w // 2

    classifier: list[LayerSpec] = [LayerSpec("flatten")]
    width = channels * h * w
    for units in cfg.dense_units:
        classifier.append(LayerSpec("dense", dict(in_features=width, out_features=units, bias=not bn)))
        if bn:
            classifier.append(LayerSpec("batchnorm1d", dict(num_features=units)))
        classifier.append(LayerSpec("relu"))
        classifier.append(LayerSpec("dropout", dict(p=cfg.dense_dropout)))
        width = units
    classifier.append(LayerSpec("dense", dict(in_features=width, out_features=cfg.num_classes, bias=True)))
    return {"features": features, "classifier": classifier}
