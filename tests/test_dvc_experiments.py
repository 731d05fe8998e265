"""End to end, with real make, DVC, MLflow and git: what a team sees across experiments and clones.

One project copy (module fixture) in ``<tmp>/team/project`` with the repository's own ``Makefile``,
``dvc.yaml`` and ``.dvc/config`` (so its default remote is ``<tmp>/team/cnn-dvc-remote``, beside the
checkout), on the smoke experiment and the session's verified MNIST files (tests/helpers/smoke_project.py).
``make repro`` runs once and its results are committed as ``main``. Then, in order:

- a second clone beside it pulls everything from the remote: ``dvc status`` clean, ``dvc exp show`` shows
  ``main``'s metrics and ``dvc metrics diff main`` works, without training;
- ``make exps`` (``dvc exp show`` with the documented ``--keep``) fits 120 columns, and no per-class score
  is a DVC metric;
- two ``dvc exp run``: a new learning rate (trains), then the first learning rate again (DVC restores both
  trainings from its run-cache): every experiment has exactly one MLflow run per framework, and the
  restored one links the run that trained its weights;
- an edit in ``conf/`` and plain ``dvc repro``: the stages run with the new value.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.helpers.smoke_project import (
    DVC,
    ROOT,
    VENV,
    clean_env,
    commit_all,
    copy_project,
    init_repository,
)
from tests.helpers.smoke_project import run as _run

pytestmark = pytest.mark.slow

pytest.importorskip("dvc")
pytest.importorskip("mlflow")
pytest.importorskip("torch")

REMOTE_NAME = "cnn-dvc-remote"  # .dvc/config: url = ../../cnn-dvc-remote


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return clean_env(COLUMNS="120")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str], mnist_raw_root: Path) -> Path:
    """The project copy after ``make repro``, committed as ``main``."""
    root = tmp_path_factory.mktemp("team") / "project"
    copy_project(root, mnist_raw_root / "mnist", extra=(".gitignore", "Makefile", "pyproject.toml"))
    (root / ".venv").symlink_to(VENV)  # make's .venv/bin/python, .venv/bin/dvc: this interpreter's
    with (root / ".gitignore").open("a") as f:
        f.write("/.venv\n")
    init_repository(root, env, dvc_config=ROOT / ".dvc" / "config")
    # -o: the shared interpreter is installed already; never let make reinstall it.
    made = _run(["make", "-o", ".venv/.installed", "repro"], root, env, timeout=900)
    assert "Running stage 'train_numpy'" in made.stdout
    commit_all(root, env, "smoke results")
    return root


def _client(root: Path):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")


def _runs(root: Path) -> list:
    client = _client(root)
    experiment = client.get_experiment_by_name("cnn-mnist")
    assert experiment is not None
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def _lock_param(root: Path, stage: str, key: str) -> object:
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return lock["stages"][stage]["params"]["params.yaml"][key]


# ------------------------------------------------------------------------------------------ remote (6)
def test_make_repro_ends_with_every_output_in_the_default_remote_beside_the_checkout(project, env):
    remote = project.parent / REMOTE_NAME
    assert (remote / "files" / "md5").is_dir(), "make repro pushed nothing to the default remote"
    status = json.loads(_run([DVC, "status", "--cloud", "--json"], project, env).stdout)
    assert status == {}, f"outputs not in the remote after make repro: {status}"


def test_a_fresh_clone_pulls_every_output_and_compares_against_main_without_training(project, env):
    clone = project.parent / "clone"
    _run(["git", "clone", "-q", str(project), str(clone)], project.parent, env)
    (clone / ".venv").symlink_to(VENV)
    # Metrics are in git: the main row is filled even before the pull.
    shown = json.loads(_run([DVC, "exp", "show", "--json"], clone, env).stdout)
    main = next(row for row in shown if row.get("name") == "main" or row.get("rev") != "workspace")
    metrics = main["data"]["metrics"]["metrics/evaluate.json"]["data"]
    assert 0.0 <= metrics["numpy"]["test_accuracy"] <= 1.0

    pulled = _run([DVC, "pull"], clone, env)
    assert "Running stage" not in pulled.stdout
    for path in ("data/processed/train.npz", "models/numpy/model.npz", "models/torch/model.pt",
                 "plots/history_numpy.json", "reports/figures", "reports/per_class.json"):  # fmt: skip
        assert (clone / path).exists(), f"dvc pull did not restore {path}"
    status = _run([DVC, "status"], clone, env)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    diff = _run([DVC, "metrics", "diff", "main", "--json"], clone, env)
    assert json.loads(diff.stdout) == {}  # the workspace is main: nothing differs, and nothing failed


# ---------------------------------------------------------------------------------- dvc exp show (9)
def test_make_exps_fits_120_columns_and_shows_both_test_accuracies(project, env):
    shown = _run(["make", "-s", "-o", ".venv/.installed", "exps"], project, env).stdout
    lines = shown.rstrip("\n").splitlines()
    assert max(len(line) for line in lines) <= 120, shown
    assert "…" not in shown, f"a column was cut to fit:\n{shown}"  # every kept column shows in full
    header = next(line for line in lines if "Experiment" in line).split()
    assert header == ["Experiment", "numpy.test_accuracy", "torch.test_accuracy", "model.name",
                      "optimizer.name", "optimizer.lr"], shown  # fmt: skip
    main_row = next(line for line in lines if line.split()[:1] == ["main"]).split()
    metrics = json.loads((project / "metrics" / "evaluate.json").read_text())
    for fw, shown_value in zip(("numpy", "torch"), main_row[1:3], strict=True):
        assert float(shown_value) == pytest.approx(metrics[fw]["test_accuracy"], abs=1e-5)


def test_per_class_scores_are_a_report_not_dvc_metrics(project, env):
    metrics = json.loads(_run([DVC, "metrics", "show", "--json"], project, env).stdout)
    assert "per_class" not in json.dumps(metrics)
    per_class = json.loads((project / "reports" / "per_class.json").read_text())
    assert set(per_class) == {"numpy", "torch"} and list(per_class["numpy"]) == [str(c) for c in range(10)]


# ------------------------------------------------------------------------ experiments <-> MLflow (1)
def test_every_experiment_has_one_mlflow_run_per_framework_also_when_dvc_restores_its_training(project, env):
    base_lr = _lock_param(project, "train_numpy", "optimizer")["lr"]
    trained = _run([DVC, "exp", "run", "-n", "lr-high", "-S", "optimizer.lr=0.003"], project, env)
    assert "Running stage 'train_numpy'" in trained.stdout
    restored = _run([DVC, "exp", "run", "-n", "lr-back", "-S", f"optimizer.lr={base_lr}"], project, env)
    assert "Stage 'train_numpy' is cached - skipping run" in restored.stdout, restored.stdout
    assert "Stage 'train_torch' is cached - skipping run" in restored.stdout, restored.stdout

    runs = _runs(project)
    by_exp: dict[str, list] = {}
    for run in runs:
        by_exp.setdefault(run.data.tags.get("dvc_exp_name"), []).append(run)
    for exp in ("repro", "lr-high", "lr-back"):
        frameworks = sorted(r.data.tags["framework"] for r in by_exp.get(exp, []))
        assert frameworks == ["numpy", "torch"], f"{exp}: runs for {frameworks}"

    record = json.loads((project / "reports" / "mlflow_runs.json").read_text())
    assert record["dvc_exp_name"] == "lr-back"
    for fw in ("numpy", "torch"):
        run = next(r for r in by_exp["lr-back"] if r.data.tags["framework"] == fw)
        trainer = next(r for r in by_exp["repro"] if r.data.tags["framework"] == fw)
        assert run.info.run_name == f"lr-back-{fw}"
        assert run.data.tags["weights_run_id"] == trainer.info.run_id
        assert trainer.info.run_id in run.data.tags["mlflow.note.content"]
        assert run.data.params["optimizer.lr"] == str(base_lr)
        assert run.data.metrics["test_accuracy"] == pytest.approx(trainer.data.metrics["test_accuracy"])
        assert "val_accuracy" in run.data.metrics  # the curves of the run that trained the weights
        assert record["runs"][fw]["run_id"] == run.info.run_id and not record["runs"][fw]["trained_here"]
        pointer = json.loads((project / "models" / fw / "mlflow_run.json").read_text())
        assert pointer["run_id"] == trainer.info.run_id  # the pointer still names the weights' run
        assert _client(project).get_run(trainer.info.run_id).data.tags["reused_by.lr-back"] == run.info.run_id


# ---------------------------------------------------------------------- dvc repro honours conf/ (4)
def test_plain_dvc_repro_after_an_edit_in_conf_runs_with_the_new_value(project, env):
    adam = project / "conf" / "optimizer" / "adam.yaml"
    text = adam.read_text()
    assert re.search(r"^lr: .*$", text, re.M)
    adam.write_text(re.sub(r"^lr: .*$", "lr: 0.0021", text, flags=re.M))
    status = _run([DVC, "status"], project, env).stdout
    assert "compose" in status, status
    repro = _run([DVC, "repro"], project, env)
    assert "Running stage 'train_numpy'" in repro.stdout and "Running stage 'train_torch'" in repro.stdout
    assert yaml.safe_load((project / "params.yaml").read_text())["optimizer"]["lr"] == 0.0021
    assert _lock_param(project, "train_numpy", "optimizer")["lr"] == 0.0021
    again = _run([DVC, "status"], project, env).stdout
    assert "Data and pipelines are up to date" in again, again
