"""One Optuna study worked on by two sweep processes at once (``hydra/sweeper=optuna_shared``), for real:
the study in PostgreSQL, the runs on an ``mlflow server`` backed by PostgreSQL with proxied artifacts
(``tracking=server``), everything on 127.0.0.1 and stopped afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.services import ServiceUnavailable, mlflow_server, postgres
from tests.helpers.synthetic_splits import TINY_DATA_OVERRIDES, write_processed_splits

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

mlflow = pytest.importorskip("mlflow")
optuna = pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "shared-study"


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``{"optuna": RDB URL, "tracking": http URI}``: PostgreSQL with two databases and an mlflow server."""
    workdir = tmp_path_factory.mktemp("services")
    try:
        with postgres("optuna", "mlflow") as urls, mlflow_server(urls["mlflow"], workdir) as uri:
            yield {"optuna": urls["optuna"], "tracking": uri, "artifacts": str(workdir / "artifacts")}
    except ServiceUnavailable as err:
        pytest.skip(str(err))


def start_sweep(tmp_path: Path, name: str, services: dict[str, str], n_trials: int) -> subprocess.Popen:
    processed = tmp_path / "processed"
    if not processed.exists():
        write_processed_splits(processed)
    command = [
        sys.executable,
        "-m",
        "stages.sweep",
        "-m",
        "hydra/sweeper=optuna_shared",
        f"hydra.sweeper.storage.url={services['optuna']}",
        "hydra.sweeper.study_name=two-workers",
        f"hydra.sweeper.n_trials={n_trials}",
        "experiment=smoke",
        "train.framework=numpy",
        "train.threads=1",
        f"data.processed_dir={processed}",
        *TINY_DATA_OVERRIDES,  # the data params of those splits
        "tracking=server",
        f"tracking.uri={services['tracking']}",
        f"tracking.experiment={EXPERIMENT}",
        f"hydra.sweep.dir={tmp_path / name}",  # each process its own, as docs/scale.md says
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (tmp_path / f"{name}.log").open("w")
    return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_two_sweep_processes_share_one_study_one_parent_run_and_never_repeat_a_trial(
    services, tmp_path, monkeypatch
):
    from cnn.pipeline.study import optuna_storage

    workers = [start_sweep(tmp_path, f"worker{i}", services, n_trials=2) for i in range(2)]
    for i, worker in enumerate(workers):
        assert worker.wait(timeout=500) == 0, (tmp_path / f"worker{i}.log").read_text()[-4000:]

    study = optuna.load_study(study_name="two-workers", storage=optuna_storage(services["optuna"]))
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # 2 processes x n_trials=2, no number twice
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}

    client = mlflow.MlflowClient(services["tracking"])
    experiment = client.get_experiment_by_name(EXPERIMENT)
    every = client.search_runs([experiment.experiment_id])
    parents = [r for r in every if r.data.tags.get("sweep") == "parent"]
    assert len(parents) == 1  # one parent per study, whichever process came first
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["optuna_study"] == "two-workers"
    children = [r for r in every if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    # Each child trained on one trial's params.
    assert sorted(float(c.data.params["optimizer.lr"]) for c in children) == pytest.approx(
        sorted(t.params["optimizer.lr"] for t in trials)
    )
    # The study's best is recorded once, on the parent.
    history = client.get_metric_history(parent.info.run_id, "best_val_accuracy")
    assert len(history) == 1 and history[0].value == pytest.approx(study.best_value)
    assert parent.data.tags["optuna_best_trial"] == str(study.best_trial.number)
    # The models went through the server (proxied artifacts) and load back from it.
    assert len(list(Path(services["artifacts"]).rglob("MLmodel"))) == 4
    # An earlier test of the session may have set mlflow's global URI, which wins over the environment.
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(services["tracking"])
    try:
        model = mlflow.pyfunc.load_model(f"runs:/{children[0].info.run_id}/model")
    finally:
        mlflow.set_tracking_uri(previous)
    images = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28), dtype=np.uint8)  # raw pixels
    assert np.asarray(model.predict(images)).shape[0] == 3
