"""One Optuna study shared by several sweep processes (``hydra/sweeper=optuna_shared``) and its parent run.

    python -m stages.sweep -m hydra/sweeper=optuna_shared \
        hydra.sweeper.storage.url=postgresql+psycopg2://user@db-host/optuna tracking=server \
        hydra.sweeper.study_name=cnn-mnist hydra.sweeper.n_trials=8          # on each machine

Each process asks the study in the RDB storage for its next trials, so trial numbers never repeat and
TPE learns from every process's results. ``n_trials`` counts the trials *this process* runs: two
processes with ``n_trials=8`` complete 16 trials of the study.

MLflow: **one parent run per study** (per tracking server and experiment), whichever process starts
first; every trial of every process is one child run under it. The parent's id is kept in the Optuna
storage: a bookkeeping study ``<study>:mlflow-parent:<key>`` is created by exactly one process (the RDB's
unique study name is the lock), which creates the parent run and stores its id there; the others wait
for it. A process that ends while other processes still have trials RUNNING leaves the parent open;
the one that ends last records the study's best value and params on it and ends it. Recording is
idempotent (a fixed timestamp and step), so two processes ending at the same moment record it once.

:func:`optuna_storage` also works around Optuna 2.10 (the newest the Hydra sweeper allows) with
SQLAlchemy 2: its schema version stamp is never committed, so the second connection fails an assertion.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cnn.errors import ConfigError, TrackingError

OBJECTIVE = "val_accuracy"
PARENT_ATTR = "mlflow_parent_run_id"
PARENT_WAIT_S = 60.0


def redact(url: str) -> str:
    """``url`` without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def _prepare_schema(url: str) -> None:
    """Create Optuna's tables, its version row and its Alembic stamp in one committed transaction.

    Optuna 2.10 (the newest the Hydra sweeper allows) does this itself on a connection it never commits
    or closes under SQLAlchemy 2: the stamp is lost and, on PostgreSQL, its open transaction holds the
    new ``alembic_version`` table locked, so the next step waits forever. Here it is done once, under
    an advisory lock on PostgreSQL, so processes starting at the same moment do not race either.
    """
    import alembic.config
    import alembic.migration
    import alembic.script
    import optuna.storages._rdb as rdb
    from optuna import version
    from optuna.storages._rdb import models
    from sqlalchemy import create_engine, orm, text

    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(726973)"))  # held until commit
            models.BaseModel.metadata.create_all(connection)
            session = orm.Session(bind=connection)
            if models.VersionInfoModel.find(session) is None:
                session.add(
                    models.VersionInfoModel(
                        schema_version=models.SCHEMA_VERSION, library_version=version.__version__
                    )
                )
                session.flush()
            context = alembic.migration.MigrationContext.configure(connection)
            if context.get_current_revision() is None:
                folder = Path(rdb.__file__).parent
                config = alembic.config.Config(str(folder / "alembic.ini"))
                config.set_main_option("script_location", str(folder / "alembic").replace("%", "%%"))
                script = alembic.script.ScriptDirectory.from_config(config)
                context.stamp(script, script.get_current_head() or "heads")
    finally:
        engine.dispose()


def optuna_storage(url: str) -> Any:
    """An Optuna ``RDBStorage`` on ``url`` (``sqlite:///optuna.db``, ``postgresql+psycopg2://...``).

    Raises:
        ConfigError: the URL is malformed or the database cannot be reached (one line, password hidden).
    """
    from optuna.storages import RDBStorage

    try:
        _prepare_schema(url)
        return RDBStorage(url)
    except Exception as err:
        text = " ".join(str(err).split())[:300]
        raise ConfigError(f"optuna storage {redact(url)}: {type(err).__name__}: {text}") from None


@dataclass(frozen=True)
class SharedStudy:
    """An Optuna study in an RDB storage, as the sweeper's config names it."""

    name: str
    url: str

    def storage(self) -> Any:
        return optuna_storage(self.url)


def shared_study(config: DictConfig) -> SharedStudy | None:
    """The study of an Optuna sweep that has a ``storage``; None for other sweeps (one parent per process)."""
    sweeper = OmegaConf.select(config, "hydra.sweeper", default=None)
    if sweeper is None or not str(sweeper.get("_target_", "")).endswith("OptunaSweeper"):
        return None
    storage = sweeper.get("storage")
    if storage is None:
        return None
    url = storage if isinstance(storage, str) else OmegaConf.select(storage, "url", default=None)
    if not url:
        raise ConfigError("hydra.sweeper.storage: expected an RDB URL or {_target_, url}")
    return SharedStudy(name=str(sweeper.get("study_name") or "cnn-mnist"), url=str(url))


def _bookkeeping_name(study: SharedStudy, uri: str, experiment_id: str) -> str:
    key = hashlib.sha256(f"{uri}\n{experiment_id}".encode()).hexdigest()[:12]
    return f"{study.name}:mlflow-parent:{key}"


def open_parent_run(
    study: SharedStudy, uri: str, experiment_id: str, tags: dict[str, str], run_name: str
) -> Any:
    """The study's MLflow parent run (created by the first process, reopened by the others); RUNNING."""
    import mlflow
    import optuna

    client = mlflow.MlflowClient(uri)
    storage = study.storage()
    name = _bookkeeping_name(study, uri, experiment_id)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        book = optuna.create_study(study_name=name, storage=storage)  # exactly one process gets here
    except optuna.exceptions.DuplicatedStudyError:
        book = None
    if book is not None:
        run = client.create_run(
            experiment_id,
            run_name=run_name,
            tags={**tags, "sweep": "parent", "optuna_study": study.name, "optuna_storage": redact(study.url)},
        )
        book.set_user_attr(PARENT_ATTR, run.info.run_id)
        return run
    deadline = time.monotonic() + PARENT_WAIT_S
    while True:
        attrs = optuna.load_study(study_name=name, storage=storage).user_attrs
        if PARENT_ATTR in attrs:
            run_id = attrs[PARENT_ATTR]
            if client.get_run(run_id).info.status != "RUNNING":
                client.update_run(run_id, status="RUNNING")  # the study continues
            return client.get_run(run_id)
        if time.monotonic() > deadline:
            raise TrackingError(
                f"optuna study {name} in {redact(study.url)} names no MLflow parent run after "
                f"{PARENT_WAIT_S:.0f} s (its creator died?); delete that study and re-run"
            )
        time.sleep(0.5)


def finish_parent_run(study: SharedStudy, run_id: str, uri: str, status: str) -> str:
    """Record the study's best on its parent and end it, unless trials still run elsewhere; a summary line."""
    import mlflow
    import optuna
    from optuna.trial import TrialState

    client = mlflow.MlflowClient(uri)
    loaded = optuna.load_study(study_name=study.name, storage=study.storage())
    trials = loaded.get_trials(deepcopy=False)
    running = [t.number for t in trials if t.state == TrialState.RUNNING]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    parent = client.get_run(run_id)
    summary = f"sweep: study {study.name}: {len(complete)} trials complete, {len(failed)} failed"
    if running:
        return (
            summary
            + f", {len(running)} still running in other processes; parent {parent.info.run_name} stays open"
        )
    counts = {"optuna_trials_complete": len(complete), "optuna_trials_failed": len(failed)}
    for key, count in counts.items():
        client.set_tag(run_id, key, str(count))
    if complete:
        best = loaded.best_trial
        stamp = int(best.datetime_complete.timestamp() * 1000) if best.datetime_complete else 0
        # Fixed timestamp and step: a second process recording the same final state adds nothing.
        value = float(best.value if best.value is not None else "nan")
        client.log_metric(run_id, f"best_{OBJECTIVE}", value, timestamp=stamp, step=len(complete))
        client.set_tag(run_id, "optuna_best_trial", str(best.number))
        client.set_tag(run_id, "optuna_best_params", json.dumps(best.params, sort_keys=True)[:5000])
        children = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
            order_by=[f"metrics.{OBJECTIVE} DESC"],
            max_results=1,
        )
        if children:
            client.set_tag(run_id, "best_run_id", children[0].info.run_id)
            client.set_tag(run_id, "best_run_name", children[0].info.run_name)
        summary += f"; best {OBJECTIVE} {value:.4f} (trial {best.number}, {best.params})"
    client.set_terminated(run_id, status=status)
    return summary + f"; parent {parent.info.run_name} ({run_id}) {status.lower()}"
