"""Where MLflow runs go and reaching the store: the tracking URI, the server check, experiments.

Where runs go (``resolve_tracking_uri``), first match wins:

1. ``tracking.uri`` from the config, when not null;
2. the ``MLFLOW_TRACKING_URI`` environment variable, when set and not empty;
3. ``sqlite:///<repo root>/mlflow.db``, the root being ``$DVC_ROOT`` (DVC sets it for every stage, and for
   a queued ``dvc exp run`` it names the *original* repository, not the temporary copy the experiment runs
   in), else the git top level of the working directory, else the working directory.

A relative SQLite path (``sqlite:///runs.db``) is taken relative to the repo root for the same reason.
Experiments created on a SQLite store keep their artifacts next to the database, in ``mlartifacts/``, so
a run made in a temporary copy does not leave its model in a directory that is about to be deleted.

Failures: a tracking server that does not answer raises ``TrackingError`` within ``timeout_s`` seconds,
naming the URI (password redacted), before any training starts. The local SQLite default needs no
server; concurrent writers are serialised by SQLite (WAL journal) and the one-time schema creation is
guarded by a file lock, so parallel sweep jobs lose no run.

``import cnn`` does not import mlflow: this module imports it inside the functions that use it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cnn.errors import TrackingError

DEFAULT_EXPERIMENT = "cnn-mnist"
DB_FILE_NAME = "mlflow.db"
#: The experiment tag MLflow 3's UI reads to choose between its GenAI and its model-training screens.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
ARTIFACTS_DIR_NAME = "mlartifacts"

# The MLflow client retries an unanswered HTTP request 7 times with exponential back-off and a 120 s
# timeout (minutes of silence when the server dies mid-run). These defaults apply only where the user
# has not set the variables.
HTTP_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}

_SQLALCHEMY_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


# ----------------------------------------------------------------------------------------------------
# Where runs go
# ----------------------------------------------------------------------------------------------------
def repo_root() -> Path:
    """The project root: ``$DVC_ROOT``, else the git top level of the working directory, else the cwd."""
    dvc_root = os.environ.get("DVC_ROOT")
    if dvc_root:
        return Path(dvc_root).resolve()
    top = git_output("rev-parse", "--show-toplevel")
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
def mlflow_module() -> Any:
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
    mlflow = mlflow_module()
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
    mlflow = mlflow_module()
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


def git_output(*args: str) -> str | None:
    """``git <args>`` in the working directory: its stripped output, or None (no git, not a repo, error)."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None
