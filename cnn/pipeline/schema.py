"""The typed schema of ``conf/`` (and so of ``params.yaml``): one dataclass per config group.

The dataclasses state each key's type; the values live in ``conf/`` only (a key without one is ``MISSING``
here). The optimizer and scheduler names are the library's registries (:data:`cnn.optimizers.OPTIMIZER_KEYS`,
:data:`cnn.schedulers.SCHEDULER_KEYS`). :mod:`cnn.pipeline.config` validates a composed config against this
schema and checks the ranges; :func:`register_configs` stores the schema in Hydra's ConfigStore.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from cnn.optimizers import OPTIMIZER_KEYS
from cnn.schedulers import SCHEDULER_KEYS

__all__ = [
    "DATASETS",
    "FRAMEWORKS",
    "GROUPS",
    "MISSING",
    "OPTIMIZERS",
    "SCHEDULERS",
    "TRAIN_OVERRIDABLE",
    "DType",
    "DataConfig",
    "DatasetFacts",
    "DatasetName",
    "EvaluateConfig",
    "Framework",
    "ModelConfig",
    "OptimizerConfig",
    "OptimizerName",
    "PathsConfig",
    "PipelineConfig",
    "PlateauMode",
    "SchedulerConfig",
    "SchedulerName",
    "TrackingConfig",
    "TrainConfig",
    "register_configs",
]


# ---------------------------------------------------------------------------------------------------------
# Vocabulary. Enum member names are the words users type (`optimizer=sgd`, `-S scheduler.name=cosine`).


class DatasetName(str, Enum):
    mnist = "mnist"
    fashion_mnist = "fashion_mnist"


# The optimizer and scheduler names are the library's registries (cnn.optimizers, cnn.schedulers).
OptimizerName = Enum("OptimizerName", {name: name for name in OPTIMIZER_KEYS}, type=str)  # type: ignore[misc]
SchedulerName = Enum("SchedulerName", {name: name for name in SCHEDULER_KEYS}, type=str)  # type: ignore[misc]


class PlateauMode(str, Enum):
    min = "min"
    max = "max"


class DType(str, Enum):
    float32 = "float32"
    float64 = "float64"


class Framework(str, Enum):
    numpy = "numpy"
    torch = "torch"


OPTIMIZERS: tuple[str, ...] = tuple(m.name for m in OptimizerName)
SCHEDULERS: tuple[str, ...] = tuple(m.name for m in SchedulerName)
FRAMEWORKS: tuple[str, ...] = tuple(m.name for m in Framework)


@dataclass(frozen=True)
class DatasetFacts:
    """What the config is checked against before any data is read: the published sizes of the datasets."""

    train_images: int
    test_images: int
    image_shape: tuple[int, int, int]
    num_classes: int


DATASETS: dict[str, DatasetFacts] = {
    "mnist": DatasetFacts(train_images=60_000, test_images=10_000, image_shape=(1, 28, 28), num_classes=10),
    "fashion_mnist": DatasetFacts(
        train_images=60_000, test_images=10_000, image_shape=(1, 28, 28), num_classes=10
    ),
}


# ---------------------------------------------------------------------------------------------------------
# Schema: one dataclass per config group.


#: omegaconf.MISSING, spelled out so that this module imports omegaconf only when validating.
MISSING: Any = "???"

# Types and ranges only: every value lives in conf/ (MISSING here = "conf/ must set it"). None on the keys
# one option reads and others do not (momentum, gamma, ...) means "not set": the option's YAML sets it.


@dataclass
class DataConfig:
    name: DatasetName = MISSING
    source_dir: str | None = MISSING
    raw_dir: str = MISSING
    processed_dir: str = MISSING
    train_size: int | None = MISSING
    val_size: int = MISSING
    test_size: int | None = MISSING
    seed: int = MISSING
    mirrors: list[str] | None = MISSING  # HTTPS base URLs; None = torchvision's mirrors, [] = no download
    download_timeout_s: float = MISSING


@dataclass
class ModelConfig:
    name: str = MISSING
    input_shape: list[int] = MISSING
    num_classes: int = MISSING
    use_batchnorm: bool = MISSING
    dropout_rate: float = MISSING
    conv_channels: list[list[int]] = MISSING
    kernel_size: int = MISSING
    dense_units: list[int] = MISSING
    dense_dropout: float = MISSING


@dataclass
class OptimizerConfig:
    name: OptimizerName = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    momentum: float | None = None  # sgd only
    nesterov: bool | None = None  # sgd only
    betas: list[float] | None = None  # adam, adamw
    eps: float | None = None  # adam, adamw


@dataclass
class SchedulerConfig:
    name: SchedulerName = MISSING
    step_size: int | None = None  # step
    gamma: float | None = None  # step, exponential
    T_max: int | None = None  # cosine; None = train.epochs
    eta_min: float | None = None  # cosine
    factor: float | None = None  # plateau
    patience: int | None = None  # plateau
    mode: PlateauMode | None = None  # plateau
    warmup_epochs: int = MISSING


@dataclass
class TrainConfig:
    epochs: int = MISSING
    batch_size: int = MISSING
    seed: int = MISSING
    threads: int | None = MISSING
    device: str = MISSING
    dtype: DType = MISSING
    deterministic: bool = MISSING
    channels_last: bool | None = MISSING  # None: on for the CPU (faster there), off on GPUs
    compile: bool = MISSING
    amp: bool = MISSING
    resume: bool = MISSING
    checkpoint_dir: str = MISSING
    framework: Framework = MISSING
    # Per-framework overrides of the keys above (checked against them in validate_config).
    numpy: dict[str, Any] = field(default_factory=dict)
    torch: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrackingConfig:
    uri: str | None = MISSING
    experiment: str = MISSING


@dataclass
class EvaluateConfig:
    batch_size: int = MISSING  # evaluate: inference batch (metrics pass and images/s)
    num_samples: int = MISSING  # plot: images in sample_predictions.png
    max_misclassified: int = MISSING  # plot: images in misclassified.png
    feature_map_channels: int = MISSING  # plot: channels per conv layer in feature_maps.png


@dataclass
class PathsConfig:
    """The ``paths`` group: folders and file names of every output (``conf/paths/default.yaml``)."""

    models_dir: str = MISSING
    model_files: dict[str, str] = MISSING
    run_pointer: str = MISSING
    checkpoint_files: dict[str, str] = MISSING
    metrics_dir: str = MISSING
    train_metrics: dict[str, str] = MISSING
    evaluate_metrics: str = MISSING
    plots_dir: str = MISSING
    history: dict[str, str] = MISSING
    confusion: dict[str, str] = MISSING
    reports_dir: str = MISSING
    predictions: str = MISSING
    disagreements: str = MISSING
    comparison: str = MISSING
    per_class: str = MISSING
    experiment_runs: str = MISSING
    figures_dir: str = MISSING


@dataclass
class PipelineConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


GROUPS: dict[str, type] = {f.name: f.default_factory for f in fields(PipelineConfig)}  # type: ignore[misc]
# Keys of `train` a per-framework override may set (the override tables themselves and the sweep's
# framework switch are not among them).
TRAIN_OVERRIDABLE = tuple(
    f.name for f in fields(TrainConfig) if f.name not in ("numpy", "torch", "framework")
)


def register_configs() -> None:
    """Store the schema in Hydra's ConfigStore: ``cnn_pipeline_schema`` and ``<group>/schema``.

    A Hydra app composing in process can put ``cnn_pipeline_schema`` first in its defaults list to get
    typed composition; :func:`validate_config` applies the same schema either way.
    """
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="cnn_pipeline_schema", node=PipelineConfig)
    for group, node in GROUPS.items():
        cs.store(group=group, name="schema", node=node)
