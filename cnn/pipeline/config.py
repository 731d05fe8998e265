"""The pipeline's configuration checked: a composed ``conf/`` (``params.yaml``) against the schema and ranges.

``conf/`` is plain Hydra YAML, composed into ``params.yaml`` by DVC's own Hydra composition (``dvc exp
run``) or by :func:`cnn.pipeline.compose_params` (``make repro``). DVC composes in its own process, where
our Python code is not loaded, so the YAML cannot name a ConfigStore schema in its defaults list. The schema
is applied when a stage loads the composed config instead: :func:`validate_config` merges it onto
:class:`PipelineConfig` (:mod:`cnn.pipeline.schema`, an OmegaConf structured config: unknown keys, wrong
types and missing values are rejected), then checks ranges (those of the optimizer and scheduler
hyper-parameters are the library's ``OPTIMIZER_RANGES`` / ``SCHEDULER_RANGES``) and the fit between model
and data. Every failure is one :class:`~cnn.errors.ConfigError`
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
from dataclasses import fields
from typing import Any, cast

from cnn.architecture import ArchConfig
from cnn.errors import ConfigError
from cnn.optimizers import OPTIMIZER_KEYS, OPTIMIZER_RANGES
from cnn.pipeline.schema import (
    DATASETS,
    FRAMEWORKS,
    GROUPS,
    MISSING,
    OPTIMIZERS,
    SCHEDULERS,
    TRAIN_OVERRIDABLE,
    DataConfig,
    DatasetFacts,
    EvaluateConfig,
    ModelConfig,
    OptimizerConfig,
    PathsConfig,
    PipelineConfig,
    SchedulerConfig,
    TrackingConfig,
    TrainConfig,
    register_configs,
)
from cnn.schedulers import SCHEDULER_KEYS, SCHEDULER_RANGES

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


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


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
            raw = cast(dict[str, Any], OmegaConf.to_container(raw, resolve=True))
        merged = OmegaConf.merge(OmegaConf.structured(PipelineConfig), raw)
        return OmegaConf.to_container(merged, resolve=True, enum_to_str=True)  # type: ignore[return-value]
    except ConfigKeyError as exc:
        key = exc.full_key or str(exc.key)
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = GROUPS.get(parent)
        allowed = [f.name for f in fields(node)] if node else list(GROUPS)
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
        elif isinstance(value, str) and value == MISSING:
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
    name = o["name"]
    for key in ("lr", "weight_decay", *OPTIMIZER_KEYS[name]):  # the keys the library's optimizer reads
        _check(o[key] is not None, s, f"optimizer.{key}", o[key], f"a value: optimizer.name={name} reads it")
        if key in OPTIMIZER_RANGES:
            expected, ok = OPTIMIZER_RANGES[key]
            _check(ok(o[key]), s, f"optimizer.{key}", o[key], expected)
    if name == "sgd":
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
            f"unset: momentum and nesterov are read by optimizer.name=sgd only, not {name}",
        )


def _check_scheduler(c: dict[str, Any], epochs: int, lr: float, s: str) -> None:
    name = c["name"]
    _check(
        0 <= c["warmup_epochs"] < epochs,
        s,
        "scheduler.warmup_epochs",
        c["warmup_epochs"],
        f"an integer in [0, train.epochs={epochs})",
    )
    for key in SCHEDULER_KEYS[name]:  # the keys the library's scheduler of that name reads
        if key != "T_max":  # T_max: null = train.epochs
            _check(
                c[key] is not None, s, f"scheduler.{key}", c[key], f"a value: scheduler.name={name} reads it"
            )
        if key in SCHEDULER_RANGES:
            expected, ok = SCHEDULER_RANGES[key]
            _check(ok(c[key]), s, f"scheduler.{key}", c[key], expected)
    if name == "cosine":
        _check(
            0.0 <= c["eta_min"] < lr,
            s,
            "scheduler.eta_min",
            c["eta_min"],
            f"a number in [0, optimizer.lr={lr})",
        )


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
            if key not in TRAIN_OVERRIDABLE:
                raise ConfigError(
                    f"{s}: unknown key train.{fw}.{key}; expected one of {', '.join(TRAIN_OVERRIDABLE)}"
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
