"""stages/sweep.py: a Hydra multirun over conf/ logs one MLflow parent run and one child run per job,
also when the jobs run in other processes (joblib), and returns the validation accuracy Optuna needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.synthetic_splits import TINY_DATA_OVERRIDES, write_processed_splits

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("hydra")

ROOT = Path(__file__).resolve().parents[1]


def run_sweep(
    tmp_path: Path, *overrides: str, multirun: bool = True, data: tuple[str, ...] = TINY_DATA_OVERRIDES
) -> tuple[subprocess.CompletedProcess, str]:
    """``python -m stages.sweep`` on the smoke experiment over tiny data in ``tmp_path`` (``data``: the data
    params; by default those of the tiny splits); returns the finished process and its tracking URI."""
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
        *data,
        f"data.processed_dir={processed}",
        f"data.raw_dir={tmp_path / 'raw'}",
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


def all_runs(uri: str) -> list:
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("sweep-test")
    return client.search_runs([experiment.experiment_id]) if experiment else []


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


def test_a_single_run_without_m_is_one_job_without_a_parent_run(tmp_path):
    proc, uri = run_sweep(tmp_path, "train.framework=numpy", multirun=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "hydra.job.num" not in proc.stdout + proc.stderr
    (run,) = all_runs(uri)
    assert run.info.status == "FINISHED" and run.info.run_name == "sweep-numpy"
    assert "mlflow.parentRunId" not in run.data.tags
    assert {"val_accuracy", "test_accuracy"} <= set(run.data.metrics)
    assert (tmp_path / "run" / "models" / "numpy" / "model.npz").is_file()
    assert proc.stdout.count("sweep single run (numpy") == 1


def test_a_job_whose_data_params_differ_from_the_splits_on_disk_stops_before_training(tmp_path):
    """The processed folder holds 64/30/30 splits; the job asks for the smoke preset's 300/100/200 and
    there are no raw files to make them: one line naming both, and no training run."""
    proc, uri = run_sweep(tmp_path, "train.framework=numpy", data=())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sweep: error:")]
    assert len(errors) == 1, proc.stderr
    assert "holds 64/30/30 (train/val/test) splits of mnist seed 0" in errors[0]
    assert "asks for 300/100/200 of mnist seed 0" in errors[0]
    assert str(tmp_path / "raw" / "mnist") in errors[0]
    assert "Traceback" not in proc.stderr
    assert [r for r in all_runs(uri) if r.data.tags.get("sweep") != "parent"] == []


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_parallel_jobs_prepare_the_splits_their_data_params_ask_for_once_and_log_them(
    tmp_path, mnist_raw_root
):
    """Issue 13 item 2: the processed folder holds other splits; two parallel jobs (numpy, torch) asking
    for 200/50/100 images get one folder made for exactly that, and log the params they trained on."""
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "mnist").symlink_to(mnist_raw_root / "mnist")
    data = ("data.train_size=200", "data.val_size=50", "data.test_size=100")
    proc, uri = run_sweep(tmp_path, "train.framework=numpy,torch", "hydra/launcher=parallel", data=data)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _, children = sweep_runs(uri)
    assert len(children) == 2
    (made,) = {c.data.params["data.processed_dir"] for c in children}
    assert Path(made).parent == tmp_path / "splits"  # not the folder holding other splits
    stats = json.loads((Path(made) / "stats.json").read_text())
    assert stats["dataset"] == "mnist" and stats["sizes"] == {"train": 200, "val": 50, "test": 100}
    for child in children:
        assert child.data.params["data.train_size"] == "200" and child.data.params["data.test_size"] == "100"
    assert sorted(p.name for p in (tmp_path / "splits").iterdir() if p.is_dir()) == [Path(made).name]
    # The folder the jobs were pointed at is untouched.
    assert json.loads((tmp_path / "processed" / "stats.json").read_text())["sizes"]["train"] == 64
