"""stages/sweep.py: a Hydra multirun over conf/ logs one MLflow parent run and one child run per job,
also when the jobs run in other processes (joblib), and returns the validation accuracy Optuna needs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.synthetic_splits import write_processed_splits

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("hydra")

ROOT = Path(__file__).resolve().parents[1]


def run_sweep(
    tmp_path: Path, *overrides: str, multirun: bool = True
) -> tuple[subprocess.CompletedProcess, str]:
    """``python -m stages.sweep`` on the smoke experiment over tiny data in ``tmp_path``; returns the
    finished process and the tracking URI it logged to."""
    processed = tmp_path / "processed"
    if not processed.exists():
        write_processed_splits(processed)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [
        sys.executable,
        "-m",
        "stages.sweep",
        *(["-m"] if multirun else []),
        "experiment=smoke",
        f"data.processed_dir={processed}",
        f"tracking.uri={uri}",
        "tracking.experiment=sweep-test",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        *overrides,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    return proc, uri


def sweep_runs(uri: str) -> tuple[object, list]:
    """The parent run and its children in experiment ``sweep-test``."""
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("sweep-test")
    parents = client.search_runs([experiment.experiment_id], filter_string="tags.sweep = 'parent'")
    assert len(parents) == 1, [p.info.run_name for p in parents]
    parent = parents[0]
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    return parent, children


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_job_sweep_in_parallel_processes_logs_a_parent_and_two_children(tmp_path):
    proc, uri = run_sweep(tmp_path, "train.framework=numpy,torch", "hydra/launcher=parallel")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    parent, children = sweep_runs(uri)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["launcher"] == "JoblibLauncher"
    assert sorted(c.data.tags["framework"] for c in children) == ["numpy", "torch"]
    assert {c.data.tags["mlflow.user"] for c in children}  # logged by real runs, not placeholders
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.info.run_name.endswith(child.data.tags["framework"])
        assert {"val_accuracy", "test_accuracy", "test_loss"} <= set(child.data.metrics)
    best = max(c.data.metrics["val_accuracy"] for c in children)
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(best)
    assert parent.data.tags["children"] == "2"
    # Each job wrote into its own output directory (parallel jobs share no file).
    for job in ("0", "1"):
        assert (tmp_path / "multirun" / job / "models").is_dir()
        assert (tmp_path / "multirun" / job / "checkpoints").is_dir()
    assert proc.stdout.count("sweep job ") == 2


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_optuna_preset_maximises_the_validation_accuracy_the_jobs_return(tmp_path):
    proc, uri = run_sweep(
        tmp_path,
        "hydra/sweeper=optuna_cnn",
        "hydra.sweeper.n_trials=2",
        "train.framework=torch",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    parent, children = sweep_runs(uri)
    assert len(children) == 2
    assert parent.data.tags["sweeper"] == "OptunaSweeper"
    values = [c.data.metrics["val_accuracy"] for c in children]
    best = (tmp_path / "multirun" / "optimization_results.yaml").read_text()
    assert f"best_value: {max(values)}" in best  # Optuna saw the values the jobs returned
    lrs = {c.data.params["optimizer.lr"] for c in children}
    assert len(lrs) == 2  # the preset's search space was sampled


def test_invalid_override_is_one_line_exit_code_2_and_ends_the_parent_run_failed(tmp_path):
    proc, uri = run_sweep(tmp_path, "optimizer.lr=-1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sweep: error:")]
    assert len(errors) == 1 and "optimizer.lr" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    parent, children = sweep_runs(uri)
    assert parent.info.status == "FAILED"
    assert children == []
