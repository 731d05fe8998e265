"""A team tracking server for real: PostgreSQL + ``mlflow server`` on loopback, both trainings logged to it.

Starts a throwaway PostgreSQL cluster (Debian's ``postgresql`` binaries; ``initdb`` refuses to run as
root, so as root it runs as the ``postgres`` user) and ``mlflow server --backend-store-uri
postgresql://...`` on free loopback ports, trains the smoke experiment (NumPy and torch) with
``MLFLOW_TRACKING_URI`` pointing at the server, and finds both runs through the REST API. Skips only where
the PostgreSQL server binaries are not installed (``.ci/run`` installs them). Every process it starts is
stopped, whatever happens.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.services import ServiceUnavailable, mlflow_server, postgres
from tests.helpers.synthetic_splits import write_processed_splits

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """``postgresql+psycopg2://cnn@127.0.0.1:<port>/mlflow`` on a fresh cluster, removed afterwards."""
    try:
        with postgres("mlflow") as urls:
            yield urls["mlflow"]
    except ServiceUnavailable as err:
        pytest.skip(f"{err} (.ci/run installs it)")


@pytest.fixture(scope="module")
def tracking_server(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:<port>``: a real ``mlflow server`` on the PostgreSQL backend, serving artifacts."""
    with mlflow_server(postgres_url, tmp_path_factory.mktemp("mlflow-server")) as uri:
        yield uri


def smoke_config(processed_dir: Path, checkpoint_dir: Path) -> dict:
    """The composed ``experiment=smoke`` config, pointed at ``processed_dir``."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    overrides = [
        "experiment=smoke",
        f"data.processed_dir={processed_dir}",
        f"train.checkpoint_dir={checkpoint_dir}",
        "train.threads=1",
        "tracking.uri=null",  # so MLFLOW_TRACKING_URI decides, as on a team machine
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=overrides), resolve=True)


def test_smoke_training_logs_both_frameworks_to_a_postgres_backed_tracking_server(
    tracking_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import mlflow

    from cnn.pipeline import train_from_config

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    write_processed_splits(tmp_path / "processed")
    cfg = smoke_config(tmp_path / "processed", tmp_path / "checkpoints")
    results = {
        fw: train_from_config(cfg, fw, models_dir=tmp_path / "models", verbose=0) for fw in ("numpy", "torch")
    }

    client = mlflow.MlflowClient(tracking_server)  # REST calls to the server, which queries PostgreSQL
    experiment = client.get_experiment_by_name(cfg["tracking"]["experiment"])
    assert experiment is not None
    runs = {r.data.tags["framework"]: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["numpy", "torch"]
    for framework, run in runs.items():
        assert run.info.run_id == results[framework].run_id
        assert run.info.run_name == f"repro-{framework}"
        assert run.info.status == "FINISHED"
        assert run.data.params["model.name"] == "small_cnn"
        assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(run.data.metrics)
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == list(range(1, cfg["train"]["epochs"] + 1))
        # The model's artifacts went through the server (proxied) and load back from it.
        model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
        pixels = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)  # raw images
        assert model.predict(pixels).shape == (4, 10)
