"""The training stages (``stages/train_{numpy,torch}.py`` on ``cnn.pipeline``) on tiny data in ``tmp_path``.

What a training stage must leave behind: the model, its MLflow run pointer, ``metrics/train_<fw>.json``,
``plots/history_<fw>.json`` (the formats of CONTRACTS.md), and one MLflow run holding the params, the
per-epoch metrics and a loadable model. Bad configs exit 2 with one line; other clear errors exit 1;
interrupts 130.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("hydra")
pytest.importorskip("mlflow")

from cnn.data import save_split
from cnn.errors import ConfigError, DataError, TrackingError
from cnn.pipeline import (
    compose_params,
    load_params,
    run_train_stage,
    stage_main,
    train_from_config,
)

ROOT = Path(__file__).resolve().parents[1]
HISTORY_KEYS = {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "epoch_time"}


def write_splits(processed: Path, shape: tuple[int, int, int] = (1, 28, 28), n: int = 40) -> None:
    """Tiny learnable splits: the class is the row holding the bright stripe."""
    rng = np.random.default_rng(0)
    for split, size in (("train", n), ("val", n // 2), ("test", n // 2)):
        y = np.arange(size, dtype=np.int64) % 10
        x = rng.normal(0.0, 0.1, size=(size, *shape)).astype(np.float32)
        x[np.arange(size), 0, y + 2, :] += 2.0
        save_split(processed / f"{split}.npz", x, y)
    stats = {"dataset": "synthetic", "sizes": {"train": n}, "mean": 0.0, "std": 1.0}
    (processed / "stats.json").write_text(json.dumps(stats))


def tiny_params(root: Path, *extra: str) -> Path:
    """params.yaml for the smoke experiment pointed at ``root`` (data, checkpoints, MLflow database)."""
    path = root / "params.yaml"
    compose_params(
        [
            "experiment=smoke",
            "train.epochs=2",
            "train.batch_size=16",
            f"data.processed_dir='{root / 'processed'}'",
            f"train.checkpoint_dir='{root / 'checkpoints'}'",
            f"tracking.uri='sqlite:///{root / 'mlflow.db'}'",
            *extra,
        ],
        output=path,
        config_dir=ROOT / "conf",
    )
    return path


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    write_splits(tmp_path / "processed")
    return tmp_path


def framework_param(name: str):
    # The torch variant is slow (exporting the model for MLflow) and the end-to-end test covers it too.
    marks = [pytest.mark.skipif(not _has_torch(), reason="torch not installed"), pytest.mark.slow]
    return pytest.param(name, marks=marks if name == "torch" else [])


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("framework", [framework_param("numpy"), framework_param("torch")])
def test_train_stage_writes_model_metrics_history_and_one_mlflow_run(workdir, framework):
    import mlflow

    params = tiny_params(workdir)
    result = run_train_stage(framework, params)

    model_file = workdir / "models" / framework / ("model.npz" if framework == "numpy" else "model.pt")
    assert model_file.is_file() and result.model_path == Path("models") / framework / model_file.name

    metrics = json.loads((workdir / "metrics" / f"train_{framework}.json").read_text())
    assert set(metrics) == {"train_time_s", "samples_per_sec", "epochs", "batch_size", "final"}
    assert (metrics["epochs"], metrics["batch_size"]) == (2, 16)
    assert metrics["train_time_s"] > 0 and metrics["samples_per_sec"] > 0
    assert set(metrics["final"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}

    history = json.loads((workdir / "plots" / f"history_{framework}.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(set(h) == HISTORY_KEYS for h in history)
    assert history[-1]["val_accuracy"] == metrics["final"]["val_accuracy"]

    pointer = json.loads((workdir / "models" / framework / "mlflow_run.json").read_text())
    assert pointer["run_id"] == result.run_id and pointer["run_name"] == f"repro-{framework}"
    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    run = client.get_run(result.run_id)
    assert run.data.params["optimizer.lr"] == "0.001"
    assert run.data.params["model.name"] == "small_cnn"
    assert run.data.tags["framework"] == framework
    steps = [m.step for m in client.get_metric_history(result.run_id, "val_accuracy")]
    assert steps == [1, 2]
    models = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert [m.source_run_id for m in models] == [result.run_id]

    # The checkpoint is where train.checkpoint_dir says, for resuming.
    assert any((workdir / "checkpoints" / framework).iterdir())


def test_the_logged_numpy_model_predicts_like_the_saved_one(workdir):
    import mlflow

    from cnn.model import CNN

    result = run_train_stage("numpy", tiny_params(workdir))
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    (logged,) = client.search_logged_models(experiment_ids=[client.get_run(result.run_id).info.experiment_id])
    pixels = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)  # raw images
    logits = np.asarray(mlflow.pyfunc.load_model(f"models:/{logged.model_id}").predict(pixels))
    saved = CNN.load(workdir / "models" / "numpy" / "model.npz")
    np.testing.assert_array_equal(
        logits.argmax(axis=1), saved.predict(pixels[:, None] / 255.0)
    )  # mean 0, std 1


def test_mlflow_holds_the_metrics_files_numbers_under_the_same_names_and_the_datasets_trained_on(workdir):
    import mlflow

    from cnn.pipeline.tracking import experiment_url

    result = run_train_stage("numpy", tiny_params(workdir))
    metrics = json.loads((workdir / "metrics" / "train_numpy.json").read_text())
    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    run = client.get_run(result.run_id)
    logged = run.data.metrics  # the latest value of each metric: what the runs table shows
    assert logged["train_time_s"] == metrics["train_time_s"]
    assert logged["samples_per_sec"] == metrics["samples_per_sec"]  # the whole run's, not the last epoch's
    for key, value in metrics["final"].items():
        assert logged[key] == pytest.approx(value, rel=1e-12), key
    assert [m.step for m in client.get_metric_history(result.run_id, "epoch_samples_per_sec")] == [1, 2]

    datasets = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(datasets) == {"mnist-train", "mnist-val"}  # data.name of the config, one per split read
    for split, context in (("train", "training"), ("val", "validation")):
        dataset = datasets[f"mnist-{split}"]
        assert dataset.dataset.digest and json.loads(dataset.dataset.source)["uri"].endswith(f"{split}.npz")
        assert {t.key: t.value for t in dataset.tags}["mlflow.data.context"] == context

    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # make ui prints this address: MLflow 3.17 opens it on the training runs, not on its GenAI overview
    url = experiment_url("http://127.0.0.1:5000", f"sqlite:///{workdir / 'mlflow.db'}")
    assert (
        url == f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}?workflowType=machine_learning"
    )


def test_train_from_config_without_tracking_writes_only_the_model(workdir):
    cfg = load_params(tiny_params(workdir))
    result = train_from_config(cfg, "numpy", track=False, verbose=0)
    assert result.run_id is None
    assert sorted(p.name for p in (workdir / "models" / "numpy").iterdir()) == ["model.npz"]
    assert not (workdir / "mlflow.db").exists()
    assert len(result.history["loss"]) == 2


def test_per_framework_override_changes_only_that_framework(workdir):
    cfg = load_params(tiny_params(workdir, "+train.numpy.epochs=1"))
    assert len(train_from_config(cfg, "numpy", track=False, models_dir=None, verbose=0).history["loss"]) == 1


def test_a_model_whose_input_shape_does_not_fit_the_data_is_a_config_error(workdir):
    write_splits(workdir / "processed", shape=(1, 16, 16))
    cfg = load_params(tiny_params(workdir))
    with pytest.raises(
        ConfigError, match=r"model.input_shape = \[1, 28, 28\] does not fit the data; expected \[1, 16, 16\]"
    ):
        train_from_config(cfg, "numpy", track=False, verbose=0)


def test_missing_splits_are_a_data_error_naming_the_file(workdir):
    cfg = load_params(tiny_params(workdir, f"data.processed_dir='{workdir / 'nowhere'}'"))
    with pytest.raises(DataError, match=r"nowhere/train.npz: not found"):
        train_from_config(cfg, "numpy", track=False, verbose=0)


def test_an_unreachable_tracking_server_fails_before_any_data_is_read(workdir):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    params = tiny_params(
        workdir, f"tracking.uri='http://127.0.0.1:{port}'", f"data.processed_dir='{workdir / 'no'}'"
    )
    with pytest.raises(TrackingError, match=rf"127.0.0.1:{port}"):
        train_from_config(load_params(params), "numpy", verbose=0)


# ---------------------------------------------------------------------------------------------------------
# stage_main: exit codes and one-line errors


def _exit_code(fn, argv=(), capsys=None) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        stage_main(fn, list(argv), name="demo")
    err = capsys.readouterr().err if capsys else ""
    return info.value.code, err


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConfigError("params.yaml: optimizer.lr = 0 is not allowed; expected a number > 0"), 2),
        (DataError("data/processed/train.npz: not found"), 1),
        (TrackingError("tracking server http://x did not answer"), 1),
        (KeyboardInterrupt("training interrupted by SIGINT at epoch 1, batch 3/10"), 130),
    ],
)
def test_stage_main_turns_clear_errors_into_one_line_and_an_exit_code(exc, code, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    def fail() -> None:
        raise exc

    got, err = _exit_code(fail, capsys=capsys)
    assert got == code
    assert err.splitlines() == [f"demo: error: {exc} (--debug shows the traceback)"]


def test_stage_main_shows_the_traceback_with_debug_or_hydra_full_error(capsys, monkeypatch):
    def fail() -> None:
        raise ConfigError("train.epochs = 0 is not allowed; expected an integer >= 1")

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    code, err = _exit_code(fail, ["--debug"], capsys)
    assert code == 2 and "Traceback (most recent call last)" in err
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    code, err = _exit_code(fail, [], capsys)
    assert code == 2 and "Traceback (most recent call last)" in err


def test_stage_main_passes_the_arguments_without_debug_and_exits_0():
    seen = []
    with pytest.raises(SystemExit) as info:
        stage_main(seen.extend, ["--params", "p.yaml", "--debug"], name="demo")
    assert info.value.code == 0 and seen == ["--params", "p.yaml"]


def test_a_bug_is_not_hidden_behind_a_one_line_error():
    def bug() -> None:
        raise ZeroDivisionError("bug")

    with pytest.raises(ZeroDivisionError):
        stage_main(bug, [], name="demo")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "optimizer.name: adamx",
            "optimizer.name = 'adamx' is not allowed; expected one of adam, adamw, sgd",
        ),
        ("scheduler.name: linear", "scheduler.name = 'linear' is not allowed; expected one of none, step"),
        ("optimizer.lr: 0", "optimizer.lr = 0.0 is not allowed; expected a number > 0"),
        ("train.batch_size: 0", "train.batch_size = 0 is not allowed; expected an integer >= 1"),
        ("train.epochs: 0", "train.epochs = 0 is not allowed; expected an integer >= 1"),
        ("data.train_size: 70000", "data.train_size = 70000 is not allowed; expected at most 59900"),
        (
            "model.input_shape: [1, 32, 32]",
            "model.input_shape = [1, 32, 32] is not allowed; expected [1, 28, 28]",
        ),
        (
            "model.dropout_rate: 1.0",
            "model.dropout_rate = 1.0 is not allowed; expected a probability in [0, 1)",
        ),
    ],
)
def test_train_stage_command_exits_2_with_one_line_before_any_work(tmp_path, override, message):
    """A bad params.yaml stops the stage before it reads data: no traceback, exit code 2."""
    import yaml

    key, value = override.split(": ")
    cfg = yaml.safe_load(tiny_params(tmp_path).read_text())
    group, leaf = key.split(".")
    cfg[group][leaf] = yaml.safe_load(value)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "MLFLOW_TRACKING_URI")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "stages.train_numpy"], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("train_numpy: error: params.yaml: ")
    assert message in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "models").exists() and not (tmp_path / "mlflow.db").exists()
