"""The ``record`` stage's work on a real MLflow store: one run per framework for every experiment.

A "training" run is started the way the training stages start theirs, under one DVC experiment name;
:func:`cnn.pipeline.record.record_experiment` then runs under the same name (the weights are this
experiment's own) and under another (DVC restored them from its cache). The real-DVC version of the
second case is in ``tests/test_dvc_experiments.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cnn.pipeline import tracking
from cnn.pipeline.files import write_json
from cnn.pipeline.params import compose_params
from cnn.pipeline.record import record_experiment

mlflow = pytest.importorskip("mlflow")

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("numpy", "torch")


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The real composed config, tracking to a SQLite file in ``tmp_path``; outputs relative to it."""
    shutil.copytree(ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(tmp_path)
    for var in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    return compose_params(
        ["experiment=smoke", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "tracking.experiment=rec"]
    )


def train_runs(cfg: dict, exp_name: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """One finished run per framework as the training stages leave it: curves, test metrics, pointer."""
    monkeypatch.setenv("DVC_EXP_NAME", exp_name)
    ids = {}
    for fw in FRAMEWORKS:
        with tracking.start_training_run(cfg, fw) as run:
            for epoch, acc in enumerate((0.5, 0.7)):
                mlflow.log_metrics({"val_accuracy": acc, "loss": 1.0 - acc}, step=epoch)
            mlflow.log_metric("test_accuracy", 0.66)
            tracking.write_run_pointer(Path("models") / fw / "mlflow_run.json", run)
            ids[fw] = run.info.run_id
    evaluation = {fw: {"test_accuracy": 0.66, "test_loss": 0.9, "macro": {"f1": 0.6}} for fw in FRAMEWORKS}
    write_json(Path("metrics") / "evaluate.json", {**evaluation, "agreement": {"rate": 0.9}})
    return ids


def client(cfg: dict):
    return mlflow.MlflowClient(cfg["tracking"]["uri"])


def test_an_experiment_that_trained_its_weights_keeps_its_training_run_as_the_record(cfg, monkeypatch):
    ids = train_runs(cfg, "lucid-fern", monkeypatch)
    record = record_experiment(cfg)
    assert record["dvc_exp_name"] == "lucid-fern"
    for fw in FRAMEWORKS:
        assert record["runs"][fw] == {
            "weights_run_id": ids[fw],
            "weights_run_name": f"lucid-fern-{fw}",
            "run_id": ids[fw],
            "run_name": f"lucid-fern-{fw}",
            "trained_here": True,
        }
    runs = client(cfg).search_runs([client(cfg).get_experiment_by_name("rec").experiment_id])
    assert len(runs) == 2
    assert json.loads(Path("reports/mlflow_runs.json").read_text()) == record


def test_an_experiment_whose_weights_dvc_restored_gets_its_own_run_linked_both_ways(cfg, monkeypatch):
    ids = train_runs(cfg, "lucid-fern", monkeypatch)
    monkeypatch.setenv("DVC_EXP_NAME", "brave-oak")
    evaluation = {fw: {"test_accuracy": 0.61, "test_loss": 0.9, "macro": {"f1": 0.6}} for fw in FRAMEWORKS}
    write_json(Path("metrics") / "evaluate.json", {**evaluation, "agreement": {"rate": 0.9}})
    record = record_experiment(cfg)
    c = client(cfg)
    for fw in FRAMEWORKS:
        entry = record["runs"][fw]
        assert not entry["trained_here"] and entry["weights_run_id"] == ids[fw]
        run = c.get_run(entry["run_id"])
        assert run.info.run_name == f"brave-oak-{fw}" and run.info.status == "FINISHED"
        assert run.data.tags["dvc_exp_name"] == "brave-oak" and run.data.tags["framework"] == fw
        assert run.data.tags["weights_run_id"] == ids[fw]
        assert f"lucid-fern-{fw}" in run.data.tags["mlflow.note.content"]
        assert run.data.params["optimizer.lr"] == str(cfg["optimizer"]["lr"])
        assert [m.value for m in c.get_metric_history(run.info.run_id, "val_accuracy")] == [0.5, 0.7]
        # this experiment's test metrics, not the weights run's (evaluated under other params)
        assert [m.value for m in c.get_metric_history(run.info.run_id, "test_accuracy")] == [0.61]
        assert run.data.metrics["agreement_rate"] == 0.9
        assert c.get_run(ids[fw]).data.tags["reused_by.brave-oak"] == entry["run_id"]
    # Recording the same experiment again (the stage re-run after an interruption) adds no run.
    assert record_experiment(cfg) == record
    assert len(c.search_runs([c.get_experiment_by_name("rec").experiment_id])) == 4


def test_plain_repro_with_other_params_than_the_weights_run_records_a_new_repro_run(cfg, monkeypatch):
    train_runs(cfg, "repro", monkeypatch)
    monkeypatch.delenv("DVC_EXP_NAME")
    assert all(r["trained_here"] for r in record_experiment(cfg)["runs"].values())
    changed = {**cfg, "evaluate": {**cfg["evaluate"], "batch_size": 17}}
    record = record_experiment(changed)
    assert not any(r["trained_here"] for r in record["runs"].values())
    assert {r["run_name"] for r in record["runs"].values()} == {"repro-numpy", "repro-torch"}


def test_train_resume_is_not_a_difference(cfg, monkeypatch):
    train_runs(cfg, "repro", monkeypatch)
    monkeypatch.delenv("DVC_EXP_NAME")
    resumed = {**cfg, "train": {**cfg["train"], "resume": not cfg["train"]["resume"]}}
    assert all(r["trained_here"] for r in record_experiment(resumed)["runs"].values())


def test_without_tracking_the_record_names_the_weights_runs_only(cfg, monkeypatch):
    ids = train_runs(cfg, "lucid-fern", monkeypatch)
    record = record_experiment(cfg, track=False)
    assert {fw: r["weights_run_id"] for fw, r in record["runs"].items()} == ids
    assert all(r["run_id"] is None for r in record["runs"].values())
