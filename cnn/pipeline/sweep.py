"""The Hydra sweep's MLflow side: one parent run per multirun, one child run per job (``stages/sweep.py``).

- :class:`SweepParentRun` -- the Hydra callback (``conf/hydra/callbacks/mlflow_sweep.yaml``) that creates
  the parent run before the first job and ends it after the last with the best child's validation accuracy.
- :func:`run_job` -- one job: train ``train.framework`` (:func:`cnn.pipeline.train.train_from_config`)
  into the job's own output directory, log its run under the parent, evaluate it on the test split.
- :func:`run_sweep` -- run a ``@hydra.main`` app with the callback and the stages' error handling: a bad
  config or override raises :class:`~cnn.errors.ConfigError` (exit 2 under
  :func:`cnn.pipeline.stage.stage_main`), and a parent run left open by a failed sweep is ended FAILED
  (KILLED when interrupted).

The jobs find the parent in ``<sweep dir>/mlflow_parent_run.json`` (or ``$CNN_MLFLOW_PARENT_RUN_ID``,
inherited by local worker processes), so the linkage holds with process-based launchers (joblib) and on
other machines that share the sweep directory (submitit).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cnn.errors import ConfigError
from cnn.pipeline import tracking

__all__ = [
    "CALLBACK_OVERRIDE",
    "OBJECTIVE",
    "PARENT_POINTER_FILE",
    "SweepParentRun",
    "end_parent_run",
    "finish_parent_run",
    "job_config",
    "parent_run_id",
    "run_job",
    "run_sweep",
]

log = logging.getLogger("sweep")

PARENT_POINTER_FILE = "mlflow_parent_run.json"
CALLBACK_OVERRIDE = "hydra/callbacks=mlflow_sweep"
OBJECTIVE = "val_accuracy"
# The tracking URI of the open parent run. Kept in the environment, like the run id, so that the callback
# (made by Hydra from conf/hydra/callbacks/mlflow_sweep.yaml) and run_sweep's error path share it.
PARENT_URI_ENV = "CNN_MLFLOW_PARENT_TRACKING_URI"


# ----------------------------------------------------------------------------------------------------
# The parent run of a multirun
# ----------------------------------------------------------------------------------------------------
class SweepParentRun(Callback):
    """Hydra callback: one MLflow parent run per multirun, created before the first job starts.

    ``on_multirun_start`` (main process) creates the run, writes its pointer to
    ``<hydra.sweep.dir>/mlflow_parent_run.json`` and exports ``$CNN_MLFLOW_PARENT_RUN_ID`` for local
    worker processes; ``on_multirun_end`` logs ``best_val_accuracy`` and tags ``best_run_id`` /
    ``best_run_name`` from the children, then ends the parent FINISHED. A sweep that fails in between is
    ended FAILED by :func:`run_sweep`.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        import mlflow

        uri = tracking.resolve_tracking_uri(config.tracking.uri)
        tracking.configure_tracking(uri)
        experiment_id = tracking.ensure_experiment(config.tracking.experiment, uri)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).rsplit(".", 1)[-1]
        launcher = str(OmegaConf.select(config, "hydra.launcher._target_", default="")).rsplit(".", 1)[-1]
        overrides = list(OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])
        run = mlflow.MlflowClient(uri).create_run(
            experiment_id,
            run_name=f"sweep-{sweep_dir.parent.name}-{sweep_dir.name}".replace(" ", "_"),
            tags={
                "sweep": "parent",
                "sweep_dir": str(sweep_dir.resolve()),
                "sweeper": sweeper,
                "launcher": launcher,
                "sweep_overrides": " ".join(overrides)[:5000],
                "dvc_exp_name": tracking.dvc_exp_name() or "sweep",
            },
        )
        tracking.write_run_pointer(sweep_dir / PARENT_POINTER_FILE, run, tracking_uri=uri)
        os.environ[tracking.PARENT_RUN_ENV] = run.info.run_id
        os.environ[PARENT_URI_ENV] = uri
        log.info("parent run %s (%s) in experiment %s", run.info.run_name, run.info.run_id, experiment_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        end_parent_run("FINISHED")


def finish_parent_run(run_id: str, uri: str, status: str) -> None:
    """Summarise the children of sweep run ``run_id`` on it and end it with ``status``."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    parent = client.get_run(run_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
        order_by=[f"metrics.{OBJECTIVE} DESC"],
    )
    scored = [c for c in children if OBJECTIVE in c.data.metrics]
    client.set_tag(run_id, "children", str(len(children)))
    summary = f"sweep: {status.lower()}, {len(children)} runs under parent {parent.info.run_name} ({run_id})"
    if scored:
        best = scored[0]
        client.log_metric(run_id, f"best_{OBJECTIVE}", best.data.metrics[OBJECTIVE])
        client.set_tag(run_id, "best_run_id", best.info.run_id)
        client.set_tag(run_id, "best_run_name", best.info.run_name)
        summary += f"; best {OBJECTIVE} {best.data.metrics[OBJECTIVE]:.4f} ({best.info.run_name})"
    client.set_terminated(run_id, status=status)
    print(summary, flush=True)


def parent_run_id() -> str | None:
    """The sweep's parent run as seen from a job: the pointer in the sweep dir, else the environment."""
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    pointer = Path(hc.sweep.dir) / PARENT_POINTER_FILE
    if pointer.is_file():
        return tracking.read_run_pointer(pointer)["run_id"]
    return os.environ.get(tracking.PARENT_RUN_ENV) or None


# ----------------------------------------------------------------------------------------------------
# One job
# ----------------------------------------------------------------------------------------------------
def job_config(cfg: Mapping[str, Any], output_dir: Path, n_parallel: int) -> dict[str, Any]:
    """The job's config: its checkpoints in its own output dir; threads shared among parallel jobs."""
    job = {key: (dict(value) if isinstance(value, Mapping) else value) for key, value in cfg.items()}
    job["train"] = dict(job["train"])
    job["train"]["checkpoint_dir"] = str(output_dir / "checkpoints")
    if job["train"].get("threads") is None and n_parallel > 1:
        job["train"]["threads"] = max(1, (os.cpu_count() or 1) // n_parallel)
    return job


def _parallel_jobs() -> int:
    """How many jobs the launcher runs at once (1 for the basic launcher; n_jobs=-1 means all cores)."""
    n_jobs = OmegaConf.select(HydraConfig.get().launcher, "n_jobs", default=1)
    if n_jobs is None:
        return 1
    n_jobs = int(n_jobs)
    return (os.cpu_count() or 1) if n_jobs < 0 else max(1, n_jobs)


def evaluate_on_test(result: Any, cfg: Mapping[str, Any]) -> dict[str, float]:
    """``{"test_accuracy", "test_loss"}`` of the trained model on ``<processed_dir>/test.npz``.

    The images stay float32; both models cast their input to their own dtype.
    """
    from cnn.data import load_split

    x, y = load_split(Path(cfg["data"]["processed_dir"]) / "test.npz", sample_shape=None, num_classes=None)
    scores = result.model.evaluate(x, y)
    return {"test_accuracy": float(scores["accuracy"]), "test_loss": float(scores["loss"])}


def run_job(cfg: Mapping[str, Any]) -> float:
    """Train + evaluate the job ``cfg`` describes; return its final validation accuracy."""
    from cnn.pipeline.train import train_from_config

    hc = HydraConfig.get()
    output_dir = Path(hc.runtime.output_dir)
    framework = str(cfg["train"]["framework"])
    job = job_config(cfg, output_dir, _parallel_jobs())
    parent = parent_run_id()
    if parent:
        os.environ[tracking.PARENT_RUN_ENV] = parent  # read by tracking.start_training_run
    else:
        os.environ.pop(tracking.PARENT_RUN_ENV, None)
    if hc.mode == RunMode.MULTIRUN:
        name = f"sweep-{Path(hc.sweep.dir).name}-{hc.job.num}-{framework}"
    else:
        name = f"sweep-{framework}"
    start = time.perf_counter()
    result = train_from_config(job, framework, models_dir=output_dir / "models", run_name=name, verbose=0)
    test = evaluate_on_test(result, job)
    if result.run_id:
        tracking.log_to_run(
            result.run_id, metrics=test, uri=tracking.resolve_tracking_uri(job["tracking"]["uri"])
        )
    objective = float(result.final[OBJECTIVE])
    print(
        f"sweep job {hc.job.num} ({framework}, {' '.join(hc.overrides.task) or 'defaults'}): "
        f"{OBJECTIVE} {objective:.4f}, test_accuracy {test['test_accuracy']:.4f} "
        f"in {time.perf_counter() - start:.1f} s",
        flush=True,
    )
    return objective


# ----------------------------------------------------------------------------------------------------
# The sweep as a stage
# ----------------------------------------------------------------------------------------------------
def run_sweep(app: Callable[[], Any], argv: Sequence[str]) -> None:
    """Run the ``@hydra.main`` ``app`` on ``argv`` (Hydra overrides, ``-m``) with the parent-run callback.

    Raises:
        ConfigError: a bad override or config (Hydra's and OmegaConf's errors, as one line).
        CNNError, KeyboardInterrupt: as the job raised them. Every failure first ends the parent run
        this process opened: FAILED, or KILLED when interrupted.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    args = list(argv)
    if not any(a.lstrip("+~").startswith("hydra/callbacks") for a in args):
        args.append(CALLBACK_OVERRIDE)
    saved_argv, saved_full_error = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = [saved_argv[0], *args]
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach the handlers below instead of sys.exit(1)
    try:
        app()
    except (HydraException, OmegaConfBaseException) as exc:
        end_parent_run("FAILED")
        raise ConfigError(" ".join(str(exc).split()) or type(exc).__name__) from exc
    except KeyboardInterrupt:
        end_parent_run("KILLED")
        raise
    except BaseException:
        end_parent_run("FAILED")
        raise
    finally:
        sys.argv = saved_argv
        if saved_full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_full_error


def end_parent_run(status: str) -> None:
    """End the parent run this process opened, if it is still open (no-op when there is none)."""
    run_id = os.environ.pop(tracking.PARENT_RUN_ENV, None)
    uri = os.environ.pop(PARENT_URI_ENV, None)
    if not run_id or not uri:
        return
    try:
        finish_parent_run(run_id, uri, status)
    except Exception as exc:  # best effort: the error that stopped the sweep is the one to report
        print(f"sweep: warning: could not end parent run {run_id}: {exc}", file=sys.stderr)
