"""A team tracking server for real: PostgreSQL + ``mlflow server`` on loopback, both trainings logged to it.

Starts a throwaway PostgreSQL cluster (Debian's ``postgresql`` binaries; ``initdb`` refuses to run as
root, so as root it runs as the ``postgres`` user) and ``mlflow server --backend-store-uri
postgresql://...`` on free loopback ports, trains the smoke experiment (NumPy and torch) with
``MLFLOW_TRACKING_URI`` pointing at the server, and finds both runs through the REST API. Skips only where
the PostgreSQL server binaries are not installed (``.ci/run`` installs them). Every process it starts is
stopped, whatever happens.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.synthetic_splits import write_processed_splits

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[1]
SERVER_START_TIMEOUT_S = 180  # the first start migrates the schema; slow on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin directory (Debian layout), or PATH's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def as_db_owner(cmd: list[str]) -> list[str]:
    """Run ``cmd`` as the ``postgres`` user when we are root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """``postgresql+psycopg2://mlflow@127.0.0.1:<port>/mlflow`` on a fresh cluster, removed afterwards."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql; .ci/run does)")
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run initdb as")
    # Not under pytest's tmp_path: its parents are private to root, and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="cnn-pg-"))
    base.chmod(0o755)
    if os.geteuid() == 0:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    data, log = base / "data", base / "server.log"
    port = free_port()
    started = False
    try:
        subprocess.run(
            as_db_owner(
                [str(bindir / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust", "-E", "UTF8"]
            ),
            check=True,
            capture_output=True,
        )
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            as_db_owner(
                [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        started = True
        subprocess.run(
            [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the project installs psycopg2-binary.
        yield f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        if started:
            subprocess.run(
                as_db_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def tracking_server(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:<port>``: a real ``mlflow server`` on the PostgreSQL backend, serving artifacts."""
    workdir = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = (workdir / "server.log").open("w")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            postgres_url,
            "--artifacts-destination",
            str(workdir / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the uvicorn worker is stopped with it
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(
                    f"mlflow server exited with {server.returncode}:\n{(workdir / 'server.log').read_text()}"
                )
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                logged = (workdir / "server.log").read_text()
                pytest.fail(f"mlflow server not up after {SERVER_START_TIMEOUT_S} s:\n{logged}")
            time.sleep(1)
        yield uri
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=30)
        log.close()


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
