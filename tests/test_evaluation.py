"""The ``evaluate`` config group (conf/evaluate/, cnn.pipeline.config.EvaluateConfig), read by
cnn.pipeline.evaluate."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from cnn.errors import ConfigError
from cnn.pipeline.config import EvaluateConfig, validate_config

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("batch_size", "num_samples", "max_misclassified", "feature_map_channels")


def test_conf_evaluate_group_sets_every_key_of_the_schema():
    conf = yaml.safe_load((ROOT / "conf" / "evaluate" / "default.yaml").read_text())
    assert set(conf) == {f.name for f in fields(EvaluateConfig)} == set(KEYS)
    assert conf["batch_size"] == 1000  # the "inference images/s at batch 1000"


def test_params_yaml_carries_the_evaluate_group():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert validate_config(params)["evaluate"] == params["evaluate"]


def test_the_schema_holds_no_values_a_config_without_the_evaluate_group_is_rejected_naming_the_key():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    del params["evaluate"]
    with pytest.raises(ConfigError, match=r"^params.yaml: evaluate.batch_size is missing; expected a value"):
        validate_config(params, source="params.yaml")


def params_with(**evaluate: object) -> dict:
    """The repository's params.yaml with ``evaluate`` keys replaced (or added)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["evaluate"].update(evaluate)
    return params


@pytest.mark.parametrize("key", KEYS)
def test_evaluate_sizes_below_one_are_rejected_naming_the_key(key):
    with pytest.raises(ConfigError) as info:
        validate_config(params_with(**{key: 0}), source="params.yaml")
    assert str(info.value) == f"params.yaml: evaluate.{key} = 0 is not allowed; expected an integer >= 1"


def test_unknown_evaluate_key_is_rejected_with_the_allowed_keys():
    with pytest.raises(
        ConfigError, match=r"unknown key evaluate\.batch; expected one of batch_size, num_samples"
    ):
        validate_config(params_with(batch=10))


def test_a_non_integer_evaluate_value_is_rejected():
    with pytest.raises(
        ConfigError, match=r"evaluate\.num_samples = 'many' is not allowed; expected an integer"
    ):
        validate_config(params_with(num_samples="many"))
