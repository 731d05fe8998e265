"""conf/ (Hydra) -> params.yaml -> validated config: composition, presets and the one-line config errors."""

from __future__ import annotations

import configparser
import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

hydra = pytest.importorskip("hydra")
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from cnn.errors import ConfigError  # noqa: E402
from cnn.pipeline import compose_params, load_params, optimizer_kwargs, scheduler_kwargs  # noqa: E402
from cnn.pipeline.config import (  # noqa: E402
    DATASETS,
    OPTIMIZERS,
    SCHEDULERS,
    PipelineConfig,
    register_configs,
    train_config_for,
    validate_config,
)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
GROUPS = ("data", "model", "optimizer", "scheduler", "train", "tracking", "evaluate", "experiment")


def composed(*overrides: str) -> dict[str, Any]:
    """conf/ composed with Hydra's compose API, resolved, as a plain dict."""
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def with_value(cfg: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(cfg)
    node = out
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    return out


# ---------------------------------------------------------------------------------------------------------
# params.yaml is the composition of conf/


def test_params_yaml_equals_the_composition_of_conf():
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="config")
    OmegaConf.resolve(cfg)
    params = (ROOT / "params.yaml").read_text()
    assert yaml.safe_load(params) == OmegaConf.to_container(cfg), (
        "params.yaml drifted from conf/: run `python -m cnn.pipeline compose` (make repro does) and commit it"
    )
    # Byte for byte what DVC's Hydra composition writes, so `dvc exp run` leaves it unchanged.
    assert params == OmegaConf.to_yaml(cfg)


def test_dvc_composes_params_yaml_from_conf_with_hydra():
    parser = configparser.ConfigParser()
    parser.read_string((ROOT / ".dvc" / "config").read_text().replace("    ", ""))
    assert parser.getboolean("hydra", "enabled")
    assert parser.get("hydra", "config_dir", fallback="conf") == "conf"
    assert parser.get("hydra", "config_name", fallback="config") == "config"


def test_compose_params_writes_what_hydra_composes_and_validates_it(tmp_path):
    out = tmp_path / "params.yaml"
    cfg = compose_params(["experiment=smoke", "optimizer=sgd", "optimizer.lr=0.05"], output=out)
    assert yaml.safe_load(out.read_text()) == composed(
        "experiment=smoke", "optimizer=sgd", "optimizer.lr=0.05"
    )
    assert cfg["optimizer"]["name"] == "sgd" and cfg["optimizer"]["lr"] == 0.05
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no temporary file left


def test_compose_params_leaves_the_previous_file_when_the_composition_is_invalid(tmp_path):
    out = tmp_path / "params.yaml"
    out.write_text("previous\n")
    with pytest.raises(ConfigError, match=r"optimizer.lr = -1.0 is not allowed; expected a number > 0"):
        compose_params(["optimizer.lr=-1"], output=out)
    with pytest.raises(
        ConfigError, match=r"optimizer = 'adamx' is not allowed; expected one of adam, adamw, sgd"
    ):
        compose_params(["optimizer=adamx"], output=out)
    with pytest.raises(ConfigError, match=r"Could not override 'optimizer.foo'"):
        compose_params(["optimizer.foo=1"], output=out)
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


# ---------------------------------------------------------------------------------------------------------
# Presets


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_preset_composes_into_a_valid_config(experiment):
    cfg = validate_config(composed(f"experiment={experiment}"))
    assert set(cfg) == {"data", "model", "optimizer", "scheduler", "train", "tracking", "evaluate", "paths"}


@pytest.mark.parametrize(
    ("group", "option"),
    [(g, o) for g in GROUPS if g != "experiment" for o in options(g)],
)
def test_every_group_option_composes_into_a_valid_config(group, option):
    cfg = validate_config(composed(f"{group}={option}"))
    if "name" in cfg[group]:
        assert cfg[group]["name"] == option or group == "tracking"


def test_the_default_experiment_is_the_seed_benchmark():
    cfg = composed()
    assert cfg == composed("experiment=seed_benchmark")
    assert (cfg["data"]["name"], cfg["data"]["train_size"], cfg["data"]["val_size"]) == ("mnist", 5000, 1000)
    assert cfg["data"]["test_size"] is None  # the full 10,000-image test set
    assert (cfg["train"]["epochs"], cfg["train"]["batch_size"]) == (5, 32)
    assert (cfg["optimizer"]["name"], cfg["optimizer"]["lr"], cfg["scheduler"]["name"]) == (
        "adam",
        1e-3,
        "none",
    )
    assert cfg["model"]["name"] == "seed_cnn"
    assert cfg["model"]["conv_channels"] == [[32, 32], [64, 64]] and cfg["model"]["dense_units"] == [128]
    # One architecture and one seed for both frameworks: no per-framework overrides by default.
    assert cfg["train"]["numpy"] == {} and cfg["train"]["torch"] == {}


def test_full_mnist_trains_on_55000_images_with_a_cosine_schedule_over_all_epochs():
    cfg = validate_config(composed("experiment=full_mnist"))
    assert cfg["data"]["train_size"] is None and cfg["data"]["val_size"] == 5000  # 60,000 - 5,000 = 55,000
    assert cfg["scheduler"]["name"] == "cosine"
    assert cfg["scheduler"]["T_max"] == cfg["train"]["epochs"] >= 10
    # T_max follows train.epochs through the interpolation in conf/scheduler/cosine.yaml.
    assert composed("experiment=full_mnist", "train.epochs=20")["scheduler"]["T_max"] == 20


def test_smoke_is_a_few_hundred_images_and_one_epoch():
    cfg = validate_config(composed("experiment=smoke"))
    assert cfg["data"]["train_size"] + cfg["data"]["val_size"] <= 500
    assert cfg["data"]["test_size"] is not None and cfg["data"]["test_size"] <= 500
    assert cfg["train"]["epochs"] == 1


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_presets_hold_only_deltas_from_the_defaults(experiment):
    """Every value an experiment file sets differs from what the groups already give."""
    text = (CONF / "experiment" / f"{experiment}.yaml").read_text()
    assert text.startswith("# @package _global_")
    preset = yaml.safe_load(text) or {}
    preset.pop("defaults", None)
    base = composed()

    def walk(node: Any, ref: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, ref.get(key) if isinstance(ref, dict) else None, f"{path}.{key}".lstrip("."))
        else:
            assert node != ref, f"conf/experiment/{experiment}.yaml sets {path} to its default {node!r}"

    walk(preset, base, "")


def test_config_vocabulary_equals_what_the_library_builds():
    from cnn import optimizers, schedulers
    from cnn.data import DATASETS as DATA_SPECS

    assert set(OPTIMIZERS) == set(optimizers.OPTIMIZERS)
    assert set(SCHEDULERS) == set(schedulers.SCHEDULERS)
    assert set(DATASETS) == set(DATA_SPECS)
    for name, facts in DATASETS.items():
        assert facts.num_classes == DATA_SPECS[name].num_classes
    assert set(options("optimizer")) == set(OPTIMIZERS)
    assert set(options("scheduler")) == set(SCHEDULERS)
    assert set(options("data")) == set(DATASETS)


@pytest.mark.parametrize("optimizer", options("optimizer"))
@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_every_optimizer_and_scheduler_preset_builds_in_the_library(optimizer, scheduler):
    import numpy as np

    from cnn.optimizers import make_optimizer
    from cnn.schedulers import make_scheduler

    cfg = validate_config(composed(f"optimizer={optimizer}", f"scheduler={scheduler}"))
    w = np.zeros(3)
    opt = make_optimizer(
        optimizer, [(w, np.zeros(3))], cfg["optimizer"]["lr"], **optimizer_kwargs(cfg["optimizer"])
    )
    sched = make_scheduler(scheduler, opt, **scheduler_kwargs(cfg["scheduler"], cfg["train"]["epochs"]))
    assert (sched is None) == (scheduler == "none")


# ---------------------------------------------------------------------------------------------------------
# Validation: one line naming key, value and what is allowed


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "optimizer.name",
            "adamx",
            "optimizer.name = 'adamx' is not allowed; expected one of adam, adamw, sgd",
        ),
        ("scheduler.name", "linear", "scheduler.name = 'linear' is not allowed; expected one of none, step,"),
        ("optimizer.lr", 0.0, "optimizer.lr = 0.0 is not allowed; expected a number > 0"),
        ("optimizer.lr", -1e-3, "optimizer.lr = -0.001 is not allowed; expected a number > 0"),
        ("optimizer.lr", "fast", "optimizer.lr = 'fast' is not allowed; expected a number"),
        ("train.batch_size", 0, "train.batch_size = 0 is not allowed; expected an integer >= 1"),
        ("train.epochs", 0, "train.epochs = 0 is not allowed; expected an integer >= 1"),
        ("train.epochs", 2.5, "train.epochs = 2.5 is not allowed; expected an integer"),
        ("data.train_size", 59_001, "data.train_size = 59001 is not allowed; expected at most 59000"),
        ("data.val_size", 60_000, "data.val_size = 60000 is not allowed; expected fewer than the 60000"),
        (
            "data.test_size",
            10_001,
            "data.test_size = 10001 is not allowed; expected an integer in [10, 10000]",
        ),
        (
            "data.name",
            "cifar10",
            "data.name = 'cifar10' is not allowed; expected one of mnist, fashion_mnist",
        ),
        (
            "model.input_shape",
            [3, 32, 32],
            "model.input_shape = [3, 32, 32] is not allowed; expected [1, 28, 28]",
        ),
        ("model.num_classes", 100, "model.num_classes = 100 is not allowed; expected 10"),
        (
            "model.dropout_rate",
            1.0,
            "model.dropout_rate = 1.0 is not allowed; expected a probability in [0, 1)",
        ),
        (
            "model.dense_dropout",
            -0.1,
            "model.dense_dropout = -0.1 is not allowed; expected a probability in [0, 1)",
        ),
        ("model.kernel_size", 4, "model.kernel_size must be a positive odd int"),
        ("optimizer.momentum", 0.9, "optimizer.momentum = 0.9 is not allowed; expected unset: momentum and"),
        ("optimizer.betas", [0.9], "optimizer.betas = [0.9] is not allowed; expected two numbers in [0, 1)"),
        ("train.device", "gpu", "train.device = 'gpu' is not allowed; expected one of auto, cpu, cuda"),
        (
            "train.dtype",
            "float16",
            "train.dtype = 'float16' is not allowed; expected one of float32, float64",
        ),
        ("train.threads", 0, "train.threads = 0 is not allowed; expected an integer >= 1, or null"),
        (
            "train.torch",
            {"batch_size": 0},
            "train.torch.batch_size = 0 is not allowed; expected an integer >= 1",
        ),
        ("train.numpy", {"epoch": 3}, "unknown key train.numpy.epoch; expected one of epochs, batch_size"),
        ("optimizer.foo", 1, "unknown key optimizer.foo; expected one of name, lr, weight_decay"),
        (
            "scheduler.warmup_epochs",
            5,
            "scheduler.warmup_epochs = 5 is not allowed; expected an integer in [0,",
        ),
    ],
)
def test_invalid_values_raise_one_config_error_line_naming_key_value_and_what_is_allowed(key, value, message):
    cfg = with_value(composed(), key, value)
    with pytest.raises(ConfigError) as info:
        validate_config(cfg, source="params.yaml")
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("params.yaml: ")
    assert message in text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["scheduler=step", "scheduler.step_size=0"],
            "scheduler.step_size = 0 is not allowed; expected an integer >= 1",
        ),
        (
            ["scheduler=exponential", "scheduler.gamma=1.5"],
            "scheduler.gamma = 1.5 is not allowed; expected a number in (0, 1]",
        ),
        (
            ["scheduler=plateau", "scheduler.factor=1.0"],
            "scheduler.factor = 1.0 is not allowed; expected a number in (0, 1)",
        ),
        (
            ["scheduler=plateau", "scheduler.mode=up"],
            "scheduler.mode = 'up' is not allowed; expected one of min, max",
        ),
        (
            ["scheduler=cosine", "scheduler.T_max=0"],
            "scheduler.T_max = 0 is not allowed; expected an integer >= 1",
        ),
        (
            ["optimizer=sgd", "optimizer.momentum=1.0"],
            "optimizer.momentum = 1.0 is not allowed; expected a number in [0, 1)",
        ),
        (
            ["optimizer=sgd", "optimizer.momentum=0", "optimizer.nesterov=true"],
            "optimizer.nesterov = True is not allowed",
        ),
        (["data.train_size=5"], "data.train_size = 5 is not allowed; expected an integer >= 10"),
    ],
)
def test_group_specific_ranges_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=None) as info:
        validate_config(composed(*overrides))
    assert message in str(info.value)


def test_a_scheduler_without_its_required_key_is_rejected():
    cfg = with_value(composed(), "scheduler.name", "step")  # none.yaml has no step_size
    with pytest.raises(ConfigError, match=r"scheduler.step_size = None is not allowed; expected a value"):
        validate_config(cfg)


def test_unknown_top_level_group_is_rejected():
    cfg = composed() | {"trainer": {"epochs": 3}}
    with pytest.raises(ConfigError, match=r"unknown key trainer; expected one of data, model, optimizer"):
        validate_config(cfg)


def test_validation_coerces_types_and_leaves_keys_the_option_does_not_read_unset():
    cfg = composed()
    cfg["optimizer"]["lr"] = "3e-4"  # a string the schema can read as a float
    out = validate_config(cfg)
    assert out["optimizer"]["lr"] == pytest.approx(3e-4)
    assert out["optimizer"]["momentum"] is None  # adam does not read it: not set, no default in the schema
    assert out["scheduler"]["T_max"] is None
    assert validate_config(out) == out  # idempotent: a validated config passes unchanged


def test_per_framework_overrides_apply_to_that_framework_only():
    cfg = validate_config(with_value(composed(), "train.torch", {"batch_size": 128, "epochs": 2}))
    torch_train, numpy_train = train_config_for(cfg, "torch"), train_config_for(cfg, "numpy")
    assert (torch_train["batch_size"], torch_train["epochs"]) == (128, 2)
    assert (numpy_train["batch_size"], numpy_train["epochs"]) == (32, 5)
    assert "numpy" not in torch_train and "torch" not in torch_train
    assert torch_train["framework"] == "torch"


def test_load_params_names_the_file_when_it_is_missing_or_not_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"params.yaml: not found; compose it"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"params.yaml: not a valid YAML config"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match=r"expected a mapping of config groups"):
        load_params(tmp_path / "params.yaml")


def test_schema_is_registered_in_hydras_config_store():
    from hydra.core.config_store import ConfigStore
    from omegaconf.errors import ValidationError

    register_configs()
    repo = ConfigStore.instance().repo
    assert "cnn_pipeline_schema.yaml" in repo
    assert "schema.yaml" in repo["optimizer"]
    schema = OmegaConf.structured(PipelineConfig)
    assert OmegaConf.is_missing(schema.train, "epochs")  # the schema types values; conf/ holds them
    train = OmegaConf.merge(schema.train, OmegaConf.load(CONF / "train" / "default.yaml"))
    assert train.epochs == 5
    with pytest.raises(ValidationError):
        OmegaConf.merge(schema.train, {"epochs": "five"})


def test_compose_command_exits_2_with_one_line_and_no_traceback(tmp_path):
    (tmp_path / "conf").symlink_to(CONF)
    proc = subprocess.run(
        [sys.executable, "-m", "cnn.pipeline", "compose", "train.batch_size=0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "compose: error: conf/ with overrides ['train.batch_size=0']: train.batch_size = 0 is not allowed; "
        "expected an integer >= 1 (--debug shows the traceback)"
    ]
    assert not (tmp_path / "params.yaml").exists()
