"""``make params`` / ``make repro`` take every Hydra override, quoted in ``OVERRIDES`` or not (real make).

Make reads an unquoted ``optimizer.lr=3e-4`` on its command line as a variable of its own, so
``make repro OVERRIDES=experiment=smoke optimizer.lr=3e-4`` used to drop the learning rate silently. The
Makefile now takes every command-line ``key=value`` whose key is not in capitals as an override too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in ("conf", "cnn"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / ".venv").symlink_to(VENV)
    return tmp_path


def make(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OVERRIDES", "MAKEFLAGS", "PYTHONPATH")}
    # -o: the shared interpreter is installed already; never let make reinstall it.
    return subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def composed(project: Path) -> dict:
    return yaml.safe_load((project / "params.yaml").read_text())


@pytest.mark.parametrize(
    "args",
    [
        ("OVERRIDES=experiment=smoke", "optimizer.lr=3e-4"),  # the unquoted form the issue reported
        ("OVERRIDES=experiment=smoke optimizer.lr=3e-4",),  # quoted: one make argument
        ("experiment=smoke", "optimizer.lr=3e-4"),  # no OVERRIDES at all
    ],
    ids=["unquoted", "quoted", "bare"],
)
def test_every_override_reaches_params_yaml_quoted_or_not(project, args):
    done = make(project, "params", *args)
    assert done.returncode == 0, done.stderr
    cfg = composed(project)
    assert cfg["optimizer"]["lr"] == 3e-4
    assert cfg["data"]["train_size"] == 300 and cfg["model"]["name"] == "small_cnn"  # the smoke preset


def test_overrides_and_make_variables_mix_and_a_group_option_takes_its_values(project):
    done = make(project, "params", "OVERRIDES=optimizer=sgd", "optimizer.lr=0.05", "PYTEST_ARGS=-x")
    assert done.returncode == 0, done.stderr
    cfg = composed(project)
    assert cfg["optimizer"]["name"] == "sgd" and cfg["optimizer"]["lr"] == 0.05
    assert "PYTEST_ARGS" not in (project / "params.yaml").read_text()


def test_a_bad_override_stops_make_with_one_line_naming_it_and_keeps_params_yaml(project):
    assert make(project, "params").returncode == 0
    before = (project / "params.yaml").read_bytes()
    done = make(project, "params", "experiment=smoke", "optimizer.lr=fast")
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("compose: error:")]
    assert len(errors) == 1 and "optimizer.lr" in errors[0], done.stderr
    assert (project / "params.yaml").read_bytes() == before
