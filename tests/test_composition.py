"""The ``compose`` stage keeps ``params.yaml`` the composition of the current ``conf/`` (plain ``dvc repro``).

Unit level, on a copy of the real ``conf/``: what :func:`cnn.pipeline.composition.refresh_params` keeps
and what it composes again. ``tests/test_dvc_experiments.py`` runs the stage under real DVC.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cnn.errors import ConfigError
from cnn.pipeline.composition import (
    SOURCE_FILE,
    compose_and_record,
    conf_digest,
    recorded_digest,
    refresh_params,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    return tmp_path


def lr(repo: Path) -> float:
    return yaml.safe_load((repo / "params.yaml").read_text())["optimizer"]["lr"]


def edit_adam_lr(repo: Path, value: str) -> None:
    adam = repo / "conf" / "optimizer" / "adam.yaml"
    lines = [f"lr: {value}" if line.startswith("lr:") else line for line in adam.read_text().splitlines()]
    adam.write_text("\n".join(lines) + "\n")


def test_the_committed_params_conf_json_records_the_conf_tree_of_this_checkout():
    """Else a fresh clone's `dvc status` would report the compose stage changed."""
    assert recorded_digest(ROOT / SOURCE_FILE) == conf_digest(ROOT / "conf"), (
        "params.conf.json is stale: run `make params` (python -m cnn.pipeline compose) and commit it"
    )


def test_params_composed_with_overrides_from_the_current_conf_are_kept(repo):
    compose_and_record(["optimizer.lr=0.0003"])
    assert refresh_params() == "kept"
    assert lr(repo) == 0.0003


def test_after_an_edit_in_conf_params_are_composed_again_without_earlier_overrides(repo):
    compose_and_record(["optimizer.lr=0.0003"])
    edit_adam_lr(repo, "0.002")
    assert refresh_params() == "composed"
    assert lr(repo) == 0.002
    assert recorded_digest(SOURCE_FILE) == conf_digest("conf")
    assert refresh_params() == "kept"


def test_under_dvc_exp_run_the_params_dvc_composed_are_kept_and_conf_recorded(repo, monkeypatch):
    compose_and_record()
    edit_adam_lr(repo, "0.002")
    compose_and_record(["optimizer.lr=0.0005"], source_file="elsewhere.json")  # as DVC would: no record
    monkeypatch.setenv("DVC_EXP_NAME", "lucid-fern")
    assert refresh_params() == "kept-exp"
    assert lr(repo) == 0.0005
    assert recorded_digest(SOURCE_FILE) == conf_digest("conf")


def test_a_missing_record_or_params_file_means_compose_again(repo):
    compose_and_record()
    (repo / SOURCE_FILE).unlink()
    assert refresh_params() == "composed"
    (repo / "params.yaml").unlink()
    assert refresh_params() == "composed" and (repo / "params.yaml").is_file()


def test_a_conf_that_does_not_compose_fails_with_config_error_and_leaves_both_files(repo):
    compose_and_record()
    before = {name: (repo / name).read_bytes() for name in ("params.yaml", SOURCE_FILE)}
    edit_adam_lr(repo, "-1")
    with pytest.raises(ConfigError, match=r"optimizer\.lr"):
        refresh_params()
    assert {name: (repo / name).read_bytes() for name in before} == before


def test_the_conf_digest_follows_content_not_caches_or_editor_backups(repo):
    before = conf_digest("conf")
    (repo / "conf" / "__pycache__").mkdir()
    (repo / "conf" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (repo / "conf" / "config.yaml~").write_text("backup")
    (repo / "conf" / ".config.yaml.swp").write_text("swap")
    assert conf_digest("conf") == before
    edit_adam_lr(repo, "0.002")
    assert conf_digest("conf") != before
