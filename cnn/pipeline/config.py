"""The pipeline's configuration: a typed schema of ``conf/`` (and so of ``params.yaml``) and its validation.

``conf/`` is plain Hydra YAML, composed into ``params.yaml`` by DVC's own Hydra composition (``dvc exp
run``) or by :func:`cnn.pipeline.compose_params` (``make repro``). DVC composes in its own process, where
our Python code is not loaded, so the YAML cannot name a ConfigStore schema in its defaults list. The schema
is applied when a stage loads the composed config instead: :func:`validate_config` merges it onto
:class:`PipelineConfig` (OmegaConf structured config: unknown keys and wrong types are rejected), then
checks ranges and the fit between model and data. Every failure is one :class:`~cnn.errors.ConfigError`
line naming the key, the value found and what is allowed, e.g.::

    params.yaml: optimizer.lr = -0.001 is not allowed; expected a number > 0

:func:`register_configs` stores the same dataclasses in Hydra's ConfigStore for Hydra apps that compose
in process (``cnn_pipeline_schema`` and ``<group>/schema``).

This module imports omegaconf (and hydra in :func:`register_configs`) lazily: ``import cnn`` stays light.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from omegaconf import MISSING

from cnn.architecture import ArchConfig
from cnn.errors import ConfigError
from cnn.optimizers import OPTIMIZER_KEYS
from cnn.schedulers import SCHEDULER_KEYS

__all__ = [
    "DATASETS",
    "FRAMEWORKS",
    "OPTIMIZERS",
    "SCHEDULERS",
    "DataConfig",
    "DatasetFacts",
    "EvaluateConfig",
    "ModelConfig",
    "OptimizerConfig",
    "PathsConfig",
    "PipelineConfig",
    "SchedulerConfig",
    "TrackingConfig",
    "TrainConfig",
    "arch_config",
    "register_configs",
    "train_config_for",
    "validate_config",
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

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


# ---------------------------------------------------------------------------------------------------------
# Schema: one dataclass per config group. Defaults equal conf/'s defaults; scheduler keys that only one
# scheduler reads default to None and are required by that scheduler.


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


_GROUPS: dict[str, type] = {f.name: f.default_factory for f in fields(PipelineConfig)}  # type: ignore[misc]
# Keys of `train` a per-framework override may set (the override tables themselves and the sweep's
# framework switch are not among them).
_TRAIN_OVERRIDABLE = tuple(
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
    for group, node in _GROUPS.items():
        cs.store(group=group, name="schema", node=node)


# ---------------------------------------------------------------------------------------------------------
# Validation


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _reject(source: str, key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{source}: {key} = {_show(value)} is not allowed; expected {allowed}")


def _expected_type(exc: Exception) -> str:
    """'a float' from OmegaConf's "... could not be converted to Float"; the enum choices for enums."""
    msg = str(exc).splitlines()[0]
    if m := re.search(r"expected one of \[(.*?)\]", msg):
        return "one of " + m.group(1)
    if m := re.search(r"converted to (\w+)", msg):
        return {
            "Integer": "an integer",
            "Float": "a number",
            "Boolean": "true or false",
            "String": "a string",
        }.get(m.group(1), m.group(1))
    if "is not Optional" in msg or "None" in msg:
        return "a value (null is not allowed here)"
    return msg


def _typed(raw: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Merge ``raw`` onto the schema; unknown keys and wrong types become one ConfigError line."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

    try:
        if isinstance(raw, DictConfig):
            raw = OmegaConf.to_container(raw, resolve=True)
        merged = OmegaConf.merge(OmegaConf.structured(PipelineConfig), raw)
        return OmegaConf.to_container(merged, resolve=True, enum_to_str=True)  # type: ignore[return-value]
    except ConfigKeyError as exc:
        key = exc.full_key or str(exc.key)
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = _GROUPS.get(parent)
        allowed = [f.name for f in fields(node)] if node else list(_GROUPS)
        raise ConfigError(f"{source}: unknown key {key}; expected one of {', '.join(allowed)}") from exc
    except ValidationError as exc:
        raise _reject(source, exc.full_key or str(exc.key), exc.value, _expected_type(exc)) from exc
    except OmegaConfBaseException as exc:  # e.g. an interpolation that does not resolve
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{source}: {first}") from exc


def _check_complete(cfg: Mapping[str, Any], source: str, prefix: str = "") -> None:
    """Every schema key has a value: the values live in ``conf/`` only, the schema holds none."""
    for key, value in cfg.items():
        if isinstance(value, Mapping):
            _check_complete(value, source, f"{prefix}{key}.")
        elif isinstance(value, str) and value == "???":
            raise ConfigError(
                f"{source}: {prefix}{key} is missing; expected a value from conf/ "
                "(compose params.yaml with `python -m cnn.pipeline compose`)"
            )


def _check(ok: bool, source: str, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise _reject(source, key, value, allowed)


def _positive_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def _check_data(d: dict[str, Any], model: dict[str, Any], s: str) -> None:
    facts = DATASETS[d["name"]]
    k = facts.num_classes
    per_class = f"an integer >= {k} (one image per class at least)"
    _check(d["val_size"] >= k, s, "data.val_size", d["val_size"], per_class)
    _check(
        d["val_size"] < facts.train_images,
        s,
        "data.val_size",
        d["val_size"],
        f"fewer than the {facts.train_images} {d['name']} training images",
    )
    if d["train_size"] is not None:
        _check(d["train_size"] >= k, s, "data.train_size", d["train_size"], per_class + " or null")
        room = facts.train_images - d["val_size"]
        _check(
            d["train_size"] <= room,
            s,
            "data.train_size",
            d["train_size"],
            f"at most {room} ({facts.train_images} {d['name']} training images minus "
            f"data.val_size={d['val_size']}) or null",
        )
    if d["test_size"] is not None:
        _check(
            k <= d["test_size"] <= facts.test_images,
            s,
            "data.test_size",
            d["test_size"],
            f"an integer in [{k}, {facts.test_images}] ({d['name']} has {facts.test_images} test "
            "images) or null for all of them",
        )
    _check(d["seed"] >= 0, s, "data.seed", d["seed"], "an integer >= 0")
    _check(
        _positive_number(d["download_timeout_s"]),
        s,
        "data.download_timeout_s",
        d["download_timeout_s"],
        "a number of seconds > 0",
    )
    # The model has to fit the data: its input is one image, its output one score per class.
    _check(
        tuple(model["input_shape"]) == facts.image_shape,
        s,
        "model.input_shape",
        model["input_shape"],
        f"{list(facts.image_shape)}, the shape of one {d['name']} image",
    )
    _check(
        model["num_classes"] == facts.num_classes,
        s,
        "model.num_classes",
        model["num_classes"],
        f"{facts.num_classes}, the number of {d['name']} classes",
    )


def _check_model(m: dict[str, Any], s: str) -> None:
    for key in ("dropout_rate", "dense_dropout"):
        _check(0.0 <= m[key] < 1.0, s, f"model.{key}", m[key], "a probability in [0, 1)")
    try:
        arch_config(m)
    except ConfigError as exc:
        raise ConfigError(f"{s}: {exc}") from exc


def _check_optimizer(o: dict[str, Any], s: str) -> None:
    _check(_positive_number(o["lr"]), s, "optimizer.lr", o["lr"], "a number > 0")
    _check(o["weight_decay"] >= 0, s, "optimizer.weight_decay", o["weight_decay"], "a number >= 0")
    for key in OPTIMIZER_KEYS[o["name"]]:  # the keys the library's optimizer of that name reads
        _check(
            o[key] is not None, s, f"optimizer.{key}", o[key], f"a value: optimizer.name={o['name']} reads it"
        )
    if o["name"] == "sgd":
        _check(0.0 <= o["momentum"] < 1.0, s, "optimizer.momentum", o["momentum"], "a number in [0, 1)")
        _check(
            not o["nesterov"] or o["momentum"] > 0,
            s,
            "optimizer.nesterov",
            o["nesterov"],
            "false when optimizer.momentum is 0 (Nesterov needs momentum)",
        )
    else:
        # Silently ignoring a momentum the user asked for would be worse than refusing it.
        momentum_set = o["momentum"] not in (None, 0)
        _check(
            not momentum_set and not o["nesterov"],
            s,
            "optimizer.momentum" if momentum_set else "optimizer.nesterov",
            o["momentum"] if momentum_set else o["nesterov"],
            f"unset: momentum and nesterov are read by optimizer.name=sgd only, not {o['name']}",
        )
        betas = o["betas"]
        _check(
            len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas),
            s,
            "optimizer.betas",
            betas,
            "two numbers in [0, 1)",
        )
        _check(_positive_number(o["eps"]), s, "optimizer.eps", o["eps"], "a number > 0")


def _check_scheduler(c: dict[str, Any], epochs: int, lr: float, s: str) -> None:
    name = c["name"]
    _check(
        0 <= c["warmup_epochs"] < epochs,
        s,
        "scheduler.warmup_epochs",
        c["warmup_epochs"],
        f"an integer in [0, train.epochs={epochs})",
    )
    # The keys the library's scheduler of that name reads (cnn.schedulers); T_max: null = train.epochs.
    for key in (k for k in SCHEDULER_KEYS[name] if k != "T_max"):
        _check(c[key] is not None, s, f"scheduler.{key}", c[key], f"a value: scheduler.name={name} reads it")
    if name == "step":
        _check(c["step_size"] >= 1, s, "scheduler.step_size", c["step_size"], "an integer >= 1 (epochs)")
    if name in ("step", "exponential"):
        _check(0.0 < c["gamma"] <= 1.0, s, "scheduler.gamma", c["gamma"], "a number in (0, 1]")
    if name == "cosine":
        _check(
            c["T_max"] is None or c["T_max"] >= 1,
            s,
            "scheduler.T_max",
            c["T_max"],
            "an integer >= 1 (epochs) or null for train.epochs",
        )
        _check(
            0.0 <= c["eta_min"] < lr,
            s,
            "scheduler.eta_min",
            c["eta_min"],
            f"a number in [0, optimizer.lr={lr})",
        )
    if name == "plateau":
        _check(0.0 < c["factor"] < 1.0, s, "scheduler.factor", c["factor"], "a number in (0, 1)")
        _check(c["patience"] >= 0, s, "scheduler.patience", c["patience"], "an integer >= 0 (epochs)")


def _check_train(t: dict[str, Any], s: str, prefix: str = "train") -> None:
    _check(t["epochs"] >= 1, s, f"{prefix}.epochs", t["epochs"], "an integer >= 1")
    _check(t["batch_size"] >= 1, s, f"{prefix}.batch_size", t["batch_size"], "an integer >= 1")
    _check(t["seed"] >= 0, s, f"{prefix}.seed", t["seed"], "an integer >= 0")
    _check(
        t["threads"] is None or t["threads"] >= 1,
        s,
        f"{prefix}.threads",
        t["threads"],
        "an integer >= 1, or null for all cores",
    )
    _check(
        bool(_DEVICE.match(t["device"])),
        s,
        f"{prefix}.device",
        t["device"],
        "one of auto, cpu, cuda, cuda:N, mps",
    )
    _check(bool(t["checkpoint_dir"]), s, f"{prefix}.checkpoint_dir", t["checkpoint_dir"], "a folder")


def _check_overrides(train: dict[str, Any], s: str) -> None:
    """``train.numpy`` / ``train.torch`` may only override the shared training keys."""
    for fw in FRAMEWORKS:
        for key in train[fw]:
            if key not in _TRAIN_OVERRIDABLE:
                raise ConfigError(
                    f"{s}: unknown key train.{fw}.{key}; expected one of {', '.join(_TRAIN_OVERRIDABLE)}"
                )


def _check_evaluate(e: dict[str, Any], s: str) -> None:
    for key in ("batch_size", "num_samples", "max_misclassified", "feature_map_channels"):
        _check(e[key] >= 1, s, f"evaluate.{key}", e[key], "an integer >= 1")


def _check_paths(p: dict[str, Any], s: str) -> None:
    for key, value in p.items():
        if isinstance(value, dict):
            for fw in FRAMEWORKS:
                _check(bool(value.get(fw)), s, f"paths.{key}.{fw}", value.get(fw), "a file name")
        else:
            _check(bool(value), s, f"paths.{key}", value, "a file or folder name")


def validate_config(cfg: Mapping[str, Any], source: str = "params.yaml") -> dict[str, Any]:
    """Check a composed config and return it as a plain dict with every schema key filled in.

    Args:
        cfg: the composed config (``params.yaml`` loaded, a Hydra ``DictConfig`` or a plain dict).
        source: what to call it in messages (a file name).

    Raises:
        ConfigError: one line naming the first bad key, its value and what is allowed: unknown keys,
            wrong types, unknown optimizer/scheduler/dataset names, lr <= 0, batch size or epochs < 1,
            subset sizes larger than the data, an input shape or class count that does not fit the
            data, dropout outside [0, 1), evaluate/plot sizes < 1, and the other ranges of the schema.
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{source}: expected a mapping of config groups, found {type(cfg).__name__}")
    out = _typed(cfg, source)
    _check_complete(out, source)
    _check_model(out["model"], source)
    _check_data(out["data"], out["model"], source)
    _check_optimizer(out["optimizer"], source)
    _check_overrides(out["train"], source)
    _check_train(out["train"], source)
    for fw in FRAMEWORKS:
        if out["train"][fw]:
            _check_train(train_config_for(out, fw, source), source, prefix=f"train.{fw}")
    _check_scheduler(out["scheduler"], out["train"]["epochs"], out["optimizer"]["lr"], source)
    if not out["tracking"]["experiment"]:
        raise _reject(source, "tracking.experiment", out["tracking"]["experiment"], "a non-empty name")
    _check_evaluate(out["evaluate"], source)
    _check_paths(out["paths"], source)
    return out


def train_config_for(cfg: Mapping[str, Any], framework: str, source: str = "params.yaml") -> dict[str, Any]:
    """``cfg["train"]`` with ``cfg["train"][framework]``'s overrides applied (typed like the rest).

    The result has the shared keys only (no ``numpy``/``torch`` tables); ``framework`` is set to the
    framework asked for.
    """
    if framework not in FRAMEWORKS:
        raise ConfigError(
            f"framework = {_show(framework)} is not allowed; expected one of {', '.join(FRAMEWORKS)}"
        )
    from omegaconf import OmegaConf
    from omegaconf.errors import ValidationError

    train = {k: v for k, v in cfg["train"].items() if k not in FRAMEWORKS}
    overrides = dict(cfg["train"].get(framework) or {})
    try:
        merged = OmegaConf.merge(
            OmegaConf.structured(TrainConfig), train, overrides, {"framework": framework}
        )
    except ValidationError as exc:
        key = f"train.{framework}.{exc.full_key or exc.key}"
        raise _reject(source, key, exc.value, _expected_type(exc)) from exc
    out: dict[str, Any] = OmegaConf.to_container(merged, resolve=True, enum_to_str=True)  # type: ignore[assignment]
    for fw in FRAMEWORKS:
        out.pop(fw, None)
    return out


def arch_config(model: Mapping[str, Any]) -> ArchConfig:
    """The :class:`~cnn.architecture.ArchConfig` of a ``model`` config group (its ``name`` dropped)."""
    return ArchConfig(**{k: v for k, v in model.items() if k != "name"})
