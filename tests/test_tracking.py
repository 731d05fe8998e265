"""cnn.pipeline.tracking: where runs go, failing fast, what a training run holds, models that load back, and
concurrent writers on one SQLite database."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cnn.errors import TrackingError
from cnn.pipeline import tracking

mlflow = pytest.importorskip("mlflow")

TINY_ARCH = {"conv_channels": ((4,), (8,)), "dense_units": (16,)}


@pytest.fixture(scope="module")
def db_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store per module (creating the schema costs a second or two); tests use own experiments."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def cfg(db_uri: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict:
    return {
        "data": {"name": "mnist", "processed_dir": str(tmp_path / "processed"), "train_size": 300},
        "model": {"name": "tiny", "conv_channels": [[4], [8]], "dense_units": [16]},
        "optimizer": {"name": "adam", "lr": 1e-3, "betas": [0.9, 0.999]},
        "train": {"epochs": 3, "batch_size": 32, "threads": None},
        "tracking": {"uri": db_uri, "experiment": f"test-{request.node.name}"},
    }


@pytest.fixture(autouse=True)
def _no_leaked_runs():
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run("FAILED")


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 28, 28)).astype(np.float32)


# ------------------------------------------------------------------------------------- where runs go
def test_tracking_uri_is_config_then_env_then_sqlite_at_the_repo_root(monkeypatch, tmp_path):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_tracking_uri(None) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking.resolve_tracking_uri(None) == "http://tracking.example:5000"
    assert tracking.resolve_tracking_uri("http://other:5000") == "http://other:5000"


def test_repo_root_is_dvc_root_when_set_else_the_git_top_level(monkeypatch, tmp_path):
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    monkeypatch.chdir(repo / "sub")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert tracking.repo_root() == repo.resolve()
    # A queued `dvc exp run` works in a temporary copy; DVC_ROOT names the original repository.
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "original"))
    assert tracking.repo_root() == (tmp_path / "original").resolve()


def test_relative_sqlite_path_is_anchored_at_the_repo_root(monkeypatch, tmp_path):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking.resolve_tracking_uri("sqlite:///runs/x.db") == f"sqlite:///{tmp_path}/runs/x.db"
    assert tracking.resolve_tracking_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"


def test_importing_cnn_and_cnn_tracking_does_not_import_mlflow():
    code = "import sys, cnn, cnn.pipeline.tracking; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------- failing fast
@pytest.mark.timeout(30)
def test_dead_tracking_server_raises_tracking_error_naming_the_uri():
    uri = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(TrackingError, match=f"tracking server {uri} did not answer"):
        tracking.check_tracking_uri(uri, timeout_s=2.0)


@pytest.mark.timeout(30)
def test_server_that_accepts_but_never_answers_is_given_up_after_the_timeout():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # the kernel completes the handshake; nobody ever reads or writes
        uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(TrackingError, match="did not answer within 1 s"):
            tracking.check_tracking_uri(uri, timeout_s=1.0)


@pytest.mark.timeout(30)
def test_unreachable_database_uri_fails_fast_without_showing_the_password():
    uri = f"postgresql://mlflow:s3cret@127.0.0.1:{closed_port()}/mlflow"
    with pytest.raises(TrackingError) as err:
        tracking.check_tracking_uri(uri, timeout_s=2.0)
    assert "mlflow:***@127.0.0.1" in str(err.value)
    assert "s3cret" not in str(err.value)


@pytest.mark.timeout(60)
def test_training_run_is_refused_before_it_starts_when_the_server_is_down(cfg):
    cfg["tracking"]["uri"] = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(TrackingError, match=cfg["tracking"]["uri"]):
        with tracking.start_training_run(cfg, "numpy"):
            pytest.fail("the body of a run must not execute when the server is down")
    assert mlflow.active_run() is None


def test_local_sqlite_store_needs_no_server_and_creates_its_directory(tmp_path):
    uri = f"sqlite:///{tmp_path / 'new' / 'dir' / 'mlflow.db'}"
    tracking.check_tracking_uri(uri)
    assert (tmp_path / "new" / "dir").is_dir()


# ------------------------------------------------------------------------------------- run contents
def test_training_run_has_name_tags_flat_params_config_and_per_epoch_metrics(cfg, monkeypatch):
    processed = Path(cfg["data"]["processed_dir"])
    processed.mkdir(parents=True)
    (processed / "stats.json").write_text('{"mean": 0.13, "std": 0.31}')
    monkeypatch.setenv("DVC_EXP_NAME", "lucid-fern")
    with tracking.start_training_run(cfg, "torch") as run:
        callback = tracking.MLflowCallback()
        for epoch in (1, 2, 3):
            callback.on_epoch_end(epoch, {"loss": 1.0 / epoch, "val_accuracy": 0.3 * epoch, "lr": 1e-3})
        callback.on_train_end({})
    client = mlflow.MlflowClient(cfg["tracking"]["uri"])
    stored = client.get_run(run.info.run_id)
    assert stored.info.run_name == "lucid-fern-torch"
    assert stored.info.status == "FINISHED"
    tags = stored.data.tags
    assert tags["framework"] == "torch"
    assert tags["dvc_exp_name"] == "lucid-fern"
    assert tags["data_digest"] == hashlib.sha256((processed / "stats.json").read_bytes()).hexdigest()
    params = stored.data.params
    assert params["optimizer.lr"] == "0.001"
    assert params["model.conv_channels"] == "[[4], [8]]"
    assert params["train.threads"] == "null"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    config_file = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="config.yaml")
    assert "lr: 0.001" in Path(config_file).read_text()


def test_run_outside_dvc_experiments_is_named_repro_framework(cfg, monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    with tracking.start_training_run(cfg, "numpy") as run:
        pass
    assert run.info.run_name == "repro-numpy"


def test_failed_training_ends_its_run_failed(cfg):
    with pytest.raises(RuntimeError), tracking.start_training_run(cfg, "numpy") as run:
        raise RuntimeError("boom")
    status = mlflow.MlflowClient(cfg["tracking"]["uri"]).get_run(run.info.run_id).info.status
    assert status == "FAILED"


def test_parent_run_id_from_another_process_makes_the_run_a_child(cfg, monkeypatch):
    client = mlflow.MlflowClient(cfg["tracking"]["uri"])
    tracking.configure_tracking(cfg["tracking"]["uri"])
    experiment_id = tracking.ensure_experiment(cfg["tracking"]["experiment"], cfg["tracking"]["uri"])
    parent = client.create_run(experiment_id, run_name="sweep")
    monkeypatch.setenv(tracking.PARENT_RUN_ENV, parent.info.run_id)  # as a sweep's worker inherits it
    with tracking.start_training_run(cfg, "numpy") as child:
        pass
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert [c.info.run_id for c in children] == [child.info.run_id]


# ------------------------------------------------------------------------------------- models
# The logged models (raw images in, logits out) are tested in tests/test_serving.py.


# ------------------------------------------------------------------------------------- pointers, later stages
def test_run_pointer_round_trips_and_is_written_atomically(cfg, tmp_path):
    with tracking.start_training_run(cfg, "numpy") as run:
        path = tracking.write_run_pointer(tmp_path / "models" / "numpy" / "mlflow_run.json", run)
    pointer = tracking.read_run_pointer(path)
    assert pointer["run_id"] == run.info.run_id
    assert pointer["experiment_id"] == run.info.experiment_id
    assert pointer["tracking_uri"] == cfg["tracking"]["uri"]
    assert pointer["run_name"] == run.info.run_name
    assert [p.name for p in path.parent.iterdir()] == ["mlflow_run.json"]  # no .tmp left behind


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "run pointer not found"),
        ("{not json", "unreadable"),
        ('{"run_id": "x"}', "lacks experiment_id"),
    ],
)
def test_bad_run_pointer_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "mlflow_run.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(TrackingError, match=message):
        tracking.read_run_pointer(path)


def test_log_to_run_adds_metrics_and_artifacts_to_a_finished_run(cfg, tmp_path):
    with tracking.start_training_run(cfg, "numpy") as run:
        pass
    figure = tmp_path / "curves.png"
    figure.write_bytes(b"\x89PNG")
    tracking.log_to_run(
        run.info.run_id, {"test_accuracy": 0.97, "test_loss": 0.1}, [figure], uri=cfg["tracking"]["uri"]
    )
    client = mlflow.MlflowClient(cfg["tracking"]["uri"])
    stored = client.get_run(run.info.run_id)
    assert stored.data.metrics == {"test_accuracy": 0.97, "test_loss": 0.1}
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["config.yaml", "curves.png"]


def test_log_to_run_on_an_unknown_run_names_the_run(cfg):
    with pytest.raises(TrackingError, match="run 0123456789abcdef0123456789abcdef not found"):
        tracking.log_to_run("0123456789abcdef0123456789abcdef", {"x": 1.0}, uri=cfg["tracking"]["uri"])


# ------------------------------------------------------------------------------------- concurrency
WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from cnn.pipeline import tracking
    import mlflow  # imported before the start signal, so the four really open the database together
    uri, index, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    cfg = {"tracking": {"uri": uri, "experiment": "concurrent"}, "train": {"seed": index}}
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.005)
    with tracking.start_training_run(cfg, "numpy", run_name=f"writer-{index}"):
        callback = tracking.MLflowCallback()
        for epoch in range(1, 11):
            callback.on_epoch_end(epoch, {"loss": 1.0 / epoch, "val_accuracy": epoch / 10})
    """
)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_four_concurrent_writers_on_a_fresh_sqlite_database_lose_no_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), uri, str(i), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(4)
    ]
    try:
        assert [p.stdout.readline().strip() for p in procs] == ["ready"] * 4
        go.touch()  # start signal: all four create the schema and their runs at once
        outputs = [p.communicate(timeout=200)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0, 0, 0], "\n".join(outputs)
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("concurrent")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"writer-{i}" for i in range(4)]
    for r in runs:
        assert r.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(r.info.run_id, "loss")] == list(range(1, 11))


def test_run_pointer_json_has_exactly_the_documented_keys(cfg, tmp_path):
    with tracking.start_training_run(cfg, "numpy") as run:
        path = tracking.write_run_pointer(tmp_path / "p.json", run)
    assert sorted(json.loads(path.read_text())) == ["experiment_id", "run_id", "run_name", "tracking_uri"]


def test_make_ui_serves_the_project_database_on_loopback_only(repo_root):
    dry_run = subprocess.run(
        ["make", "-n", "ui", "UI_PORT=5123"], cwd=repo_root, capture_output=True, text=True, check=True
    )
    [command] = [line for line in dry_run.stdout.splitlines() if "mlflow ui" in line]
    assert f"--backend-store-uri sqlite:///{repo_root}/mlflow.db" in command
    assert "--host 127.0.0.1" in command
    assert "--port 5123" in command
