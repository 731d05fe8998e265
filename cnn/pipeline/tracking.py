"""MLflow tracking for the training stages, the evaluation stages and the sweeps.

Where runs go and reaching the store (``resolve_tracking_uri``, ``check_tracking_uri``,
``ensure_experiment``): :mod:`cnn.pipeline.tracking_store`, re-exported here.

What a training run holds (``start_training_run`` + ``log_datasets`` + ``MLflowCallback`` +
``log_run_summary`` + :mod:`cnn.pipeline.logged_models`):

- name ``<DVC exp name or "repro">-<framework>``; tags ``framework``, ``git_commit``, ``dvc_exp_name``,
  ``data_digest`` (SHA-256 of ``<processed_dir>/stats.json``), ``mlflow.source.git.commit``;
- params: the config flattened to dotted keys (``optimizer.lr`` = ``0.001``; lists as JSON);
- dataset inputs ``<data.name>-train`` / ``-val`` (name, digest, source);
- metrics per epoch, ``step`` = epoch: loss, accuracy, val_loss, val_accuracy, lr, epoch_time,
  epoch_samples_per_sec; once, for the whole run: train_time_s, samples_per_sec (the values of
  ``metrics/train_<framework>.json``);
- artifacts: ``config.yaml`` (the resolved config), the checkpoint; the model is a logged model of the
  run (``model``: raw images in, logits out, :mod:`cnn.pipeline.logged_models`).

``import cnn`` does not import mlflow: this module imports it inside the functions that use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import numbers
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cnn.atomic import atomic_write_text
from cnn.errors import TrackingError
from cnn.pipeline.tracking_store import ARTIFACTS_DIR_NAME as ARTIFACTS_DIR_NAME
from cnn.pipeline.tracking_store import DB_FILE_NAME as DB_FILE_NAME
from cnn.pipeline.tracking_store import DEFAULT_EXPERIMENT as DEFAULT_EXPERIMENT
from cnn.pipeline.tracking_store import HTTP_ENV_DEFAULTS as HTTP_ENV_DEFAULTS
from cnn.pipeline.tracking_store import check_tracking_uri as check_tracking_uri
from cnn.pipeline.tracking_store import configure_tracking as configure_tracking
from cnn.pipeline.tracking_store import ensure_experiment as ensure_experiment
from cnn.pipeline.tracking_store import git_output as _git
from cnn.pipeline.tracking_store import mlflow_module as _mlflow
from cnn.pipeline.tracking_store import redact_uri as redact_uri
from cnn.pipeline.tracking_store import repo_root as repo_root
from cnn.pipeline.tracking_store import resolve_tracking_uri as resolve_tracking_uri
from cnn.pipeline.tracking_store import sqlite_path as sqlite_path

MODEL_ARTIFACT_NAME = "model"
CONFIG_ARTIFACT_NAME = "config.yaml"
#: Per-epoch names that differ from the trainer's (``samples_per_sec`` is the whole run's: log_run_summary).
EPOCH_METRIC_NAMES = {"samples_per_sec": "epoch_samples_per_sec"}
PARENT_RUN_ENV = "CNN_MLFLOW_PARENT_RUN_ID"
"""Environment variable a sweep sets so that training runs started in its jobs become its children."""

_RUN_POINTER_KEYS = ("run_id", "experiment_id", "tracking_uri", "run_name")


# ----------------------------------------------------------------------------------------------------
# Run metadata
# ----------------------------------------------------------------------------------------------------
def dvc_exp_name() -> str | None:
    """The DVC experiment name (``$DVC_EXP_NAME``, set by ``dvc exp run``), or None under ``dvc repro``."""
    return os.environ.get("DVC_EXP_NAME") or None


def training_run_name(framework: str) -> str:
    """``<DVC exp name or "repro">-<framework>``, e.g. ``repro-numpy`` or ``lucid-fern-torch``."""
    return f"{dvc_exp_name() or 'repro'}-{framework}"


def data_digest(processed_dir: str | os.PathLike[str]) -> str | None:
    """SHA-256 of ``<processed_dir>/stats.json`` (which records the source digests, sizes and split),
    or None when the file is absent."""
    path = Path(processed_dir) / "stats.json"
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def flatten_config(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"optimizer.lr": "0.001", "model.conv_channels": "[[32, 32], [64, 64]]"}``.

    Scalars as ``str``; lists, tuples and None as JSON (``null``), so every value is one MLflow param.
    """
    flat: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, prefix=f"{name}."))
        elif isinstance(value, str):
            flat[name] = value
        elif isinstance(value, bool | numbers.Number):
            flat[name] = str(value)
        else:
            flat[name] = json.dumps(_plain(value))
    return flat


def _plain(value: Any) -> Any:
    """Convert OmegaConf containers, tuples and numpy scalars to JSON/YAML-safe builtins."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, str | bool | int | float):
        return value
    try:  # OmegaConf ListConfig and friends
        return [_plain(v) for v in value]
    except TypeError:
        return str(value)


def training_tags(cfg: Mapping[str, Any], framework: str) -> dict[str, str]:
    """The tags of a training run: framework, git commit, DVC experiment name, data digest."""
    tags = {"framework": framework, "dvc_exp_name": dvc_exp_name() or "repro"}
    commit = _git("rev-parse", "HEAD")  # the checkout the code runs from (a DVC temp copy has its own)
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    baseline = os.environ.get("DVC_EXP_BASELINE_REV")
    if baseline:
        tags["dvc_exp_baseline_rev"] = baseline
    processed_dir = (cfg.get("data") or {}).get("processed_dir") or "data/processed"
    digest = data_digest(processed_dir)
    if digest:
        tags["data_digest"] = digest
    return tags


# ----------------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def start_training_run(
    cfg: Mapping[str, Any],
    framework: str,
    *,
    nested: bool = False,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[Any]:
    """Open the MLflow run of one training: ``with start_training_run(cfg, "numpy") as run: ...``.

    Checks the tracking URI first (``TrackingError`` within seconds when a server is down), selects the
    experiment ``cfg["tracking"]["experiment"]``, starts the run named ``training_run_name(framework)``
    with ``training_tags``, logs the flattened config as params and the resolved config as
    ``config.yaml``. The run ends FINISHED, FAILED on an exception, KILLED on KeyboardInterrupt.

    ``parent_run_id`` (else ``$CNN_MLFLOW_PARENT_RUN_ID``) makes the run a child of a sweep's run, also
    from another process; ``nested=True`` nests it under the active run of this process.

    Yields:
        mlflow.ActiveRun.
    """
    mlflow = _mlflow()
    tracking = cfg.get("tracking") or {}
    uri = resolve_tracking_uri(tracking.get("uri"))
    configure_tracking(uri)
    experiment_id = ensure_experiment(tracking.get("experiment") or DEFAULT_EXPERIMENT, uri)
    parent = parent_run_id or os.environ.get(PARENT_RUN_ENV) or None
    if parent and mlflow.active_run() is not None:
        nested = True
    all_tags = {**training_tags(cfg, framework), **(tags or {})}
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=run_name or training_run_name(framework),
        nested=nested,
        parent_run_id=parent,
        tags=all_tags,
    ) as run:
        mlflow.log_params(flatten_config(cfg))
        mlflow.log_dict(_plain(cfg), CONFIG_ARTIFACT_NAME)
        yield run


class MLflowCallback:
    """Training callback: log each epoch's numeric ``logs`` to an MLflow run with ``step=epoch``.

    ``logs`` holds loss, accuracy, val_loss, val_accuracy, lr, epoch_time and samples_per_sec (whichever the
    trainer has); the epoch's samples_per_sec is logged as ``epoch_samples_per_sec``. The run is ``run_id``
    when given, else the run active when the first epoch ends.
    """

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id = run_id

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any]) -> None:
        mlflow = _mlflow()
        if self.run_id is None:
            active = mlflow.active_run()
            if active is None:
                raise TrackingError("MLflowCallback: no run_id given and no active MLflow run to log to")
            self.run_id = active.info.run_id
        metrics = {
            EPOCH_METRIC_NAMES.get(key, key): float(value)
            for key, value in logs.items()
            if isinstance(value, numbers.Real) and not isinstance(value, bool)
        }
        if metrics:
            mlflow.MlflowClient().log_batch(
                self.run_id,
                metrics=[_metric(key, value, step=int(epoch)) for key, value in metrics.items()],
            )

    def on_train_end(self, history: Mapping[str, Any]) -> None:
        """Nothing to add: every epoch is already logged."""


def _metric(key: str, value: float, step: int) -> Any:
    from mlflow.entities import Metric

    return Metric(key=key, value=value, timestamp=int(time.time() * 1000), step=step)


def log_artifact(path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
    """Log a file or directory (e.g. the checkpoint) to the active run."""
    mlflow = _mlflow()
    path = Path(path)
    if path.is_dir():
        mlflow.log_artifacts(str(path), artifact_path=artifact_path)
    else:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


# ----------------------------------------------------------------------------------------------------
# What a training run trained on, and what it measured over the whole run
# ----------------------------------------------------------------------------------------------------
def log_datasets(cfg: Mapping[str, Any], splits: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Record the splits a training run reads as MLflow dataset inputs (``mlflow.log_input``).

    ``splits`` maps ``"train"`` / ``"val"`` to ``(x, y)``; each becomes the dataset
    ``<data.name>-<split>`` (``mnist-train``) with MLflow's digest of the arrays, the source
    ``<data.processed_dir>/<split>.npz`` and the context ``training`` / ``validation``; the UI shows them
    in the runs table's Dataset column and on the run page.
    """
    import warnings

    mlflow = _mlflow()
    data = cfg.get("data") or {}
    name = data.get("name") or "data"
    processed = Path(data.get("processed_dir") or "data/processed")
    contexts = {"train": "training", "val": "validation", "test": "testing"}
    for split, (x, y) in splits.items():
        with warnings.catch_warnings():
            # MLflow registers its local-file source twice and then warns that a path is ambiguous.
            warnings.filterwarnings("ignore", message=".*The specified dataset source can be interpreted")
            dataset = mlflow.data.from_numpy(
                x, targets=y, source=str(processed / f"{split}.npz"), name=f"{name}-{split}"
            )
        mlflow.log_input(dataset, context=contexts.get(split, split))


def log_run_summary(run_id: str, summary: Mapping[str, float], step: int) -> None:
    """Log whole-run numbers (``train_time_s``, ``samples_per_sec``) to ``run_id`` at ``step``.

    The values are those of ``metrics/train_<framework>.json`` (rounded the same way), so MLflow, DVC and
    the report show one number per name. The per-epoch throughput is ``epoch_samples_per_sec``.
    """
    mlflow = _mlflow()
    metrics = [_metric(key, float(value), step=step) for key, value in summary.items()]
    if metrics:
        mlflow.MlflowClient().log_batch(run_id, metrics=metrics)


# ----------------------------------------------------------------------------------------------------
# Models (logging them: cnn.pipeline.logged_models)
# ----------------------------------------------------------------------------------------------------
def numpy_logits(model: Any, x: Any, batch_size: int = 256) -> np.ndarray:
    """Eval-mode logits of a NumPy ``CNN``: x (N, C, H, W) -> float32 (N, num_classes), in batches.

    What the logged NumPy model's pyfunc ``predict`` returns. The model's train/eval mode is restored.
    """
    x = np.asarray(x)
    was_training = model.training
    model.eval()
    try:
        chunks = [model.forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    if not chunks:
        return np.zeros((0, model.config.num_classes), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------------
# Run pointers and later stages
# ----------------------------------------------------------------------------------------------------
def write_run_pointer(path: str | os.PathLike[str], run: Any, tracking_uri: str | None = None) -> Path:
    """Write ``{"run_id", "experiment_id", "tracking_uri", "run_name"}`` of ``run`` to ``path`` atomically.

    ``run`` is an ``mlflow.ActiveRun`` / ``mlflow.entities.Run``. The file is a DVC-tracked output
    (``models/<fw>/mlflow_run.json``), so a stage restored from DVC's cache still points at its run.
    """
    mlflow = _mlflow()
    info = run.info
    pointer = {
        "run_id": info.run_id,
        "experiment_id": info.experiment_id,
        "tracking_uri": tracking_uri or mlflow.get_tracking_uri(),
        "run_name": info.run_name,
    }
    return atomic_write_text(path, json.dumps(pointer, indent=2) + "\n")


def read_run_pointer(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a run pointer written by ``write_run_pointer``.

    Raises:
        TrackingError: the file is missing, is not JSON, or lacks one of the four keys.
    """
    path = Path(path)
    try:
        pointer = json.loads(path.read_text())
    except FileNotFoundError:
        raise TrackingError(f"{path}: run pointer not found; run the training stage first") from None
    except (OSError, ValueError) as err:
        raise TrackingError(
            f"{path}: expected a JSON run pointer, found unreadable content ({err})"
        ) from None
    if not isinstance(pointer, dict):
        raise TrackingError(f"{path}: expected a JSON object, found {type(pointer).__name__}")
    missing = [key for key in _RUN_POINTER_KEYS if not isinstance(pointer.get(key), str)]
    if missing:
        raise TrackingError(f"{path}: run pointer lacks {', '.join(missing)} (expected {_RUN_POINTER_KEYS})")
    return pointer


def log_to_run(
    run_id: str,
    metrics: Mapping[str, float] | None = None,
    artifacts: Iterable[str | os.PathLike[str]] | None = None,
    uri: str | None = None,
    *,
    artifact_path: str | None = None,
    step: int | None = None,
) -> None:
    """Add metrics and artifacts (files or directories) to an existing, possibly finished, run.

    Used by the evaluate and plot stages with the run id from ``read_run_pointer``. ``uri`` defaults to
    ``resolve_tracking_uri()``; the URI is checked first (fail fast).

    Raises:
        TrackingError: the server does not answer, or the run does not exist on ``uri``.
    """
    mlflow = _mlflow()
    from mlflow.exceptions import MlflowException

    uri = uri or resolve_tracking_uri()
    configure_tracking(uri)
    client = mlflow.MlflowClient(uri)
    try:
        client.get_run(run_id)
    except MlflowException as err:
        raise TrackingError(
            f"run {run_id} not found on {redact_uri(uri)} ({err.error_code}); re-run the training stage"
        ) from None
    values = {key: float(value) for key, value in (metrics or {}).items()}
    if values:
        client.log_batch(run_id, metrics=[_metric(k, v, step=step or 0) for k, v in values.items()])
    for artifact in artifacts or ():
        artifact = Path(artifact)
        if artifact.is_dir():
            client.log_artifacts(run_id, str(artifact), artifact_path=artifact_path)
        elif artifact.is_file():
            client.log_artifact(run_id, str(artifact), artifact_path=artifact_path)
        else:
            raise TrackingError(f"{artifact}: artifact to log to run {run_id} does not exist")


# ----------------------------------------------------------------------------------------------------
# The UI
# ----------------------------------------------------------------------------------------------------
#: MLflow 3.17's UI opens experiments on its GenAI screens unless the URL (or its "Model training" switch,
#: remembered per browser) selects the model-training ones: runs, logged models, the registry.
UI_WORKFLOW_QUERY = "workflowType=machine_learning"


def experiment_url(ui: str, uri: str, experiment: str = DEFAULT_EXPERIMENT) -> str:
    """The UI address that opens ``experiment`` on its training runs, e.g.
    ``http://127.0.0.1:5000/#/experiments/1?workflowType=machine_learning``; the experiment list when
    ``experiment`` does not exist (yet) on ``uri``. Reads the store, creates nothing."""
    found = None
    path = sqlite_path(uri)
    if path is None or path.is_file():
        with contextlib.suppress(Exception):  # a store that cannot be read yet: the list page is fine
            found = _mlflow().MlflowClient(uri).get_experiment_by_name(experiment)
    page = f"experiments/{found.experiment_id}" if found is not None else "experiments"
    return f"{ui.rstrip('/')}/#/{page}?{UI_WORKFLOW_QUERY}"
