"""MLflow tracking for the training stages, the evaluation stages and the sweeps.

Where runs go (``resolve_tracking_uri``), first match wins:

1. ``tracking.uri`` from the config, when not null;
2. the ``MLFLOW_TRACKING_URI`` environment variable, when set and not empty;
3. ``sqlite:///<repo root>/mlflow.db``, the root being ``$DVC_ROOT`` (DVC sets it for every stage, and for
   a queued ``dvc exp run`` it names the *original* repository, not the temporary copy the experiment runs
   in), else the git top level of the working directory, else the working directory.

A relative SQLite path (``sqlite:///runs.db``) is taken relative to the repo root for the same reason.
Experiments created on a SQLite store keep their artifacts next to the database, in ``mlartifacts/``, so
a run made in a temporary copy does not leave its model in a directory that is about to be deleted.

What a training run holds (``start_training_run`` + ``MLflowCallback`` + ``log_datasets`` +
``log_run_summary`` + :mod:`cnn.pipeline.serving`):

- name ``<DVC exp name or "repro">-<framework>``; tags ``framework``, ``git_commit``, ``dvc_exp_name``,
  ``data_digest`` (SHA-256 of ``<processed_dir>/stats.json``), ``mlflow.source.git.commit``;
- params: the config flattened to dotted keys (``optimizer.lr`` = ``0.001``; lists as JSON);
- dataset inputs ``<data.name>-train`` / ``-val`` (name, digest, source);
- metrics per epoch, ``step`` = epoch: loss, accuracy, val_loss, val_accuracy, lr, epoch_time,
  epoch_samples_per_sec; once, for the whole run: train_time_s, samples_per_sec (as in
  ``metrics/train_<framework>.json``);
- artifacts: ``config.yaml`` (the resolved config), the checkpoint; the model (``model``, an MLflow
  logged model of the run: raw images in, logits out, see :mod:`cnn.pipeline.serving`).

Failures: a tracking server that does not answer raises ``TrackingError`` within ``timeout_s`` seconds,
naming the URI (password redacted), before any training starts. The local SQLite default needs no
server; concurrent writers are serialised by SQLite (WAL journal) and the one-time schema creation is
guarded by a file lock, so parallel sweep jobs lose no run.

``import cnn`` does not import mlflow: this module imports it inside the functions that use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import numbers
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cnn.errors import TrackingError

DEFAULT_EXPERIMENT = "cnn-mnist"
DB_FILE_NAME = "mlflow.db"
ARTIFACTS_DIR_NAME = "mlartifacts"
MODEL_ARTIFACT_NAME = "model"
CONFIG_ARTIFACT_NAME = "config.yaml"
#: Per-epoch names that differ from the trainer's (``samples_per_sec`` is the whole run's: log_run_summary).
EPOCH_METRIC_NAMES = {"samples_per_sec": "epoch_samples_per_sec"}
#: The experiment tag MLflow 3's UI reads to choose between its GenAI and its model-training screens.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
PARENT_RUN_ENV = "CNN_MLFLOW_PARENT_RUN_ID"
"""Environment variable a sweep sets so that training runs started in its jobs become its children."""

# The MLflow client retries an unanswered HTTP request 7 times with exponential back-off and a 120 s
# timeout (minutes of silence when the server dies mid-run). These defaults apply only where the user
# has not set the variables.
HTTP_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}

_SQLALCHEMY_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
_RUN_POINTER_KEYS = ("run_id", "experiment_id", "tracking_uri", "run_name")

# The models-from-code file logged with every NumPy model. MLflow executes it when the model is loaded
# (instead of unpickling an object), and `set_model` hands it the wrapper.
_NUMPY_PYFUNC_CODE = '''"""MLflow pyfunc entry point of a NumPy `cnn.CNN` (tracking.log_numpy_model).

predict(x): x float32 (N, C, H, W) -> logits float32 (N, num_classes), the eval-mode forward pass.
"""

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class NumpyCNNModel(PythonModel):
    def load_context(self, context):
        from cnn.model import CNN

        self.model = CNN.load(context.artifacts["weights"])  # npz, no pickle; returned in eval mode

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        from cnn.pipeline.tracking import numpy_logits

        return numpy_logits(self.model, model_input)


mlflow.models.set_model(NumpyCNNModel())
'''


# ----------------------------------------------------------------------------------------------------
# Where runs go
# ----------------------------------------------------------------------------------------------------
def repo_root() -> Path:
    """The project root: ``$DVC_ROOT``, else the git top level of the working directory, else the cwd."""
    dvc_root = os.environ.get("DVC_ROOT")
    if dvc_root:
        return Path(dvc_root).resolve()
    top = _git("rev-parse", "--show-toplevel")
    return Path(top).resolve() if top else Path.cwd().resolve()


def resolve_tracking_uri(cfg_uri: str | None = None) -> str:
    """The tracking URI: ``cfg_uri`` -> ``$MLFLOW_TRACKING_URI`` -> ``sqlite:///<repo root>/mlflow.db``.

    Relative SQLite paths are made absolute against ``repo_root()`` so that a DVC experiment running in a
    temporary copy of the repository logs to the database of the original one.
    """
    uri = (cfg_uri or "").strip() or os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not uri:
        return f"sqlite:///{repo_root() / DB_FILE_NAME}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        relative = uri[len("sqlite:///") :]
        if relative and relative != ":memory:":
            return f"sqlite:///{repo_root() / relative}"
    return uri


def redact_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (for messages and logs)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None for any other scheme (and for ``:memory:``)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def check_tracking_uri(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast when the tracking store behind ``uri`` cannot be used.

    - ``http(s)://``: ``GET <uri>/health`` must answer (any HTTP status below 500) within ``timeout_s``;
    - ``postgresql://``, ``mysql://``, ``mssql://`` (a database used directly): a TCP connection to its
      host and port must open within ``timeout_s``;
    - ``sqlite:///``: the database's directory is created when missing and must be writable.

    Raises:
        TrackingError: naming the (redacted) URI, what was expected and what happened.
    """
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    shown = redact_uri(uri)
    if scheme in ("http", "https"):
        health = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(health, timeout=timeout_s) as response:
                response.read(64)
        except urllib.error.HTTPError as err:
            if err.code >= 500:
                raise TrackingError(
                    f"tracking server {shown} answered {err.code} {err.reason} to GET /health; "
                    "expected a running MLflow server"
                ) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise TrackingError(
                f"tracking server {shown} did not answer within {timeout_s:g} s ({reason}); start it "
                "(mlflow server ...), or unset MLFLOW_TRACKING_URI / tracking.uri to log to the local "
                f"sqlite:///<repo>/{DB_FILE_NAME}"
            ) from None
    elif scheme.split("+", 1)[0] in _SQLALCHEMY_DEFAULT_PORTS:
        parts = urllib.parse.urlsplit(uri)
        if not parts.hostname:
            return  # a Unix-socket connection: nothing to probe over TCP
        port = parts.port or _SQLALCHEMY_DEFAULT_PORTS[scheme.split("+", 1)[0]]
        try:
            with socket.create_connection((parts.hostname, port), timeout=timeout_s):
                pass
        except OSError as err:
            raise TrackingError(
                f"tracking database {shown}: no answer from {parts.hostname}:{port} within "
                f"{timeout_s:g} s ({err})"
            ) from None
    elif scheme == "sqlite":
        path = sqlite_path(uri)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrackingError(f"tracking database {shown}: cannot create {path.parent} ({err})") from None
        if not os.access(path.parent, os.W_OK):
            raise TrackingError(f"tracking database {shown}: directory {path.parent} is not writable")


# ----------------------------------------------------------------------------------------------------
# Experiments and stores
# ----------------------------------------------------------------------------------------------------
def _mlflow() -> Any:
    import mlflow  # deferred: `import cnn` must stay free of mlflow

    return mlflow


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise schema creation and experiment creation on a SQLite store across processes.

    MLflow creates the schema (alembic migrations) the first time a process opens a database; two
    processes doing that at once on a fresh file collide. Other stores handle this themselves.
    """
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _enable_wal(path: Path) -> None:
    """Switch a SQLite database to write-ahead logging: readers (the UI) no longer block writers.

    The mode is stored in the database file; repeating the pragma on a WAL database changes nothing.
    """
    import sqlite3

    with contextlib.closing(sqlite3.connect(path, timeout=30)) as con:
        con.execute("PRAGMA journal_mode=WAL")


def configure_tracking(uri: str, *, timeout_s: float = 5.0) -> None:
    """Check ``uri`` (fail fast), point the mlflow client at it and prepare its store.

    Also sets bounded HTTP retry/timeout defaults (``HTTP_ENV_DEFAULTS``) where the user has not set them,
    and, for SQLite, creates the schema under a file lock and enables the WAL journal.
    """
    check_tracking_uri(uri, timeout_s=timeout_s)
    for key, value in HTTP_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    mlflow = _mlflow()
    mlflow.set_tracking_uri(uri)
    path = sqlite_path(uri)
    if path is not None:
        with _store_lock(uri):
            _enable_wal(path)
            mlflow.MlflowClient(uri).search_experiments(max_results=1)  # creates the schema once


def ensure_experiment(name: str, uri: str) -> str:
    """The id of experiment ``name`` on ``uri``, created when missing (race-free across processes).

    On SQLite the experiment's artifact location is ``<database dir>/mlartifacts``; elsewhere the server
    decides. The experiment is tagged ``mlflow.experimentKind = custom_model_development`` (unless the
    user set another kind): MLflow 3 UIs that read the tag open it on its training runs, not on the GenAI
    overview (3.17 follows its own "Model training" switch instead: see docs/tracking.md).
    """
    mlflow = _mlflow()
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(uri)
    with _store_lock(uri):
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                raise TrackingError(
                    f"tracking.experiment: experiment {name!r} on {redact_uri(uri)} is deleted; restore it "
                    "(mlflow experiments restore) or choose another name"
                )
            if experiment.tags.get(EXPERIMENT_KIND_TAG) is None:
                client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return experiment.experiment_id
        path = sqlite_path(uri)
        location = (path.parent / ARTIFACTS_DIR_NAME).as_uri() if path is not None else None
        try:
            return client.create_experiment(
                name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            )
        except MlflowException:  # created by another process between the two calls (non-SQLite stores)
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id


# ----------------------------------------------------------------------------------------------------
# Run metadata
# ----------------------------------------------------------------------------------------------------
def _git(*args: str) -> str | None:
    """``git <args>`` in the working directory: its stripped output, or None (no git, not a repo, error)."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(pointer, indent=2) + "\n")
    os.replace(tmp, path)
    return path


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
