"""One MLflow run per framework for every pipeline state, also when DVC restores the training: the
``record`` stage.

DVC restores a training stage from its run-cache (``Stage 'train_numpy' is cached - skipping run``) or
skips it (``didn't change``) whenever its inputs equal an earlier run's. No training code runs then, so no
MLflow run carries the new DVC experiment's name, and ``models/<fw>/mlflow_run.json`` names the run that
trained the weights under an older experiment's name. The ``record`` stage runs after ``evaluate`` for
every new state of ``params.yaml`` (it depends on the whole file, and its output is ``persist``-ed, which
keeps it out of DVC's run-cache) and, per framework:

- the run that trained the weights belongs to this state (its ``dvc_exp_name`` tag is this experiment's
  name, ``$DVC_EXP_NAME`` or ``repro``, and its params are this ``params.yaml``): that run is the record;
- otherwise it starts a run ``<exp name>-<fw>`` that records this experiment: the tags of a training run
  plus ``weights_run_id`` / ``weights_run_name`` (and a note linking the run that trained the weights),
  the whole config as params, that run's metric histories (the curves) and this state's test metrics
  from ``metrics/evaluate.json``; the training run gets the tag ``reused_by.<exp name>`` = the new run.

Either way ``reports/mlflow_runs.json`` lists, per framework, this state's run and the run whose weights
it uses: ``{"dvc_exp_name": ..., "runs": {"numpy": {"run_id", "run_name", "weights_run_id",
"weights_run_name", "trained_here"}, ...}}``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cnn.pipeline.config import FRAMEWORKS
from cnn.pipeline.files import read_json, write_json
from cnn.pipeline.paths import PipelinePaths

__all__ = ["IGNORED_PARAMS", "evaluation_metrics", "record_experiment"]

log = logging.getLogger(__name__)

#: Params that change how a run gets its result, not the result (``train.resume``): not compared.
IGNORED_PARAMS = frozenset({"train.resume"})


def evaluation_metrics(evaluation: Mapping[str, Any], framework: str) -> dict[str, float]:
    """The test metrics the evaluate stage logs to a training run, from ``metrics/evaluate.json``."""
    r = evaluation.get(framework) or {}
    metrics = {
        "test_accuracy": r.get("test_accuracy"),
        "test_loss": r.get("test_loss"),
        "test_macro_f1": (r.get("macro") or {}).get("f1"),
        "inference_images_per_sec": r.get("inference_images_per_sec"),
        "agreement_rate": (evaluation.get("agreement") or {}).get("rate"),
    }
    return {key: float(value) for key, value in metrics.items() if value is not None}


def _belongs_here(run: Any, exp_name: str, params: Mapping[str, str]) -> bool:
    if run is None or run.data.tags.get("dvc_exp_name") != exp_name:
        return False
    logged = run.data.params
    return all(logged.get(key) == value for key, value in params.items() if key not in IGNORED_PARAMS)


def _run_link(run: Any) -> str:
    """The run's page in the MLflow UI, relative to the UI's address (the UI routes on the fragment)."""
    return f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"


def record_experiment(
    cfg: Mapping[str, Any], *, track: bool = True, output: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Make sure this state of the pipeline has its MLflow run per framework; write the list of them.

    Args:
        cfg: the validated config (:func:`cnn.pipeline.load_params`).
        track: False records nothing in MLflow (the list names the weights' runs only).
        output: the list (default ``<paths.reports_dir>/<paths.experiment_runs>``).

    Returns:
        What was written to ``output``.

    Raises:
        DataError: a run pointer or ``metrics/evaluate.json`` is missing or malformed.
        TrackingError: the tracking store does not answer.
    """
    from cnn.pipeline import tracking

    paths = PipelinePaths.from_config(cfg)
    exp_name = tracking.dvc_exp_name() or "repro"
    output = Path(output or paths.reports_dir / cfg["paths"]["experiment_runs"])
    evaluation = read_json(paths.evaluate_metrics, "evaluation metrics", "run the evaluate stage first")
    record: dict[str, Any] = {"dvc_exp_name": exp_name, "runs": {}}
    client = uri = None
    if track:
        uri = tracking.resolve_tracking_uri((cfg.get("tracking") or {}).get("uri"))
        tracking.check_tracking_uri(uri)
        tracking.configure_tracking(uri)
        import mlflow

        client = mlflow.MlflowClient(uri)
    params = tracking.flatten_config(cfg)
    for fw in FRAMEWORKS:
        pointer_file = paths.run_pointer(fw)
        if not pointer_file.is_file():
            log.warning("%s: no run pointer, the %s model was trained untracked", pointer_file, fw)
            record["runs"][fw] = None
            continue
        pointer = tracking.read_run_pointer(pointer_file)
        entry = {"weights_run_id": pointer["run_id"], "weights_run_name": pointer.get("run_name")}
        if client is None:
            record["runs"][fw] = {**entry, "run_id": None, "run_name": None, "trained_here": False}
            continue
        weights_run = _get_run(client, pointer["run_id"])
        if _belongs_here(weights_run, exp_name, params):
            record["runs"][fw] = {
                **entry,
                "run_id": pointer["run_id"],
                "run_name": pointer.get("run_name"),
                "trained_here": True,
            }
            continue
        run = _earlier_record(client, weights_run, pointer["run_id"], exp_name, params)
        if run is None:
            run = _start_record_run(cfg, fw, client, weights_run, pointer, evaluation)
        record["runs"][fw] = {
            **entry,
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "trained_here": False,
        }
    write_json(output, record)
    return record


def _earlier_record(
    client: Any, weights_run: Any, weights_id: str, exp_name: str, params: Mapping[str, str]
) -> Any:
    """The run this stage already started for this experiment and these weights (a re-run of the stage
    after an interruption, or the same state recorded twice under ``dvc repro``), or None."""
    if weights_run is None or "'" in exp_name:  # a quote cannot go into the filter string: start anew
        return None
    found = client.search_runs(
        [weights_run.info.experiment_id],
        filter_string=f"tags.dvc_exp_name = '{exp_name}' and tags.weights_run_id = '{weights_id}'",
        order_by=["attributes.start_time DESC"],
    )
    return next(
        (run for run in found if run.info.status == "FINISHED" and _belongs_here(run, exp_name, params)), None
    )


def _get_run(client: Any, run_id: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        return None  # trained against another tracking store (a pulled model): recorded all the same


def _start_record_run(
    cfg: Mapping[str, Any],
    fw: str,
    client: Any,
    weights_run: Any,
    pointer: Mapping[str, str],
    evaluation: Mapping[str, Any],
) -> Any:
    import mlflow

    from cnn.pipeline import tracking

    weights_id = pointer["run_id"]
    if weights_run is not None:
        note = (
            f"DVC reused the {fw} model of an earlier run of the pipeline (restored from its run-cache, or "
            f"unchanged): the weights were trained by run [{weights_run.info.run_name}]"
            f"({_run_link(weights_run)}). This run records the experiment: its params, that run's curves "
            "and this experiment's test metrics."
        )
    else:
        note = f"The {fw} weights were trained by run {weights_id}, which is not in this tracking store."
    tags = {
        "weights_run_id": weights_id,
        "weights_run_name": pointer.get("run_name") or "",
        "mlflow.note.content": note,
    }
    tests = evaluation_metrics(evaluation, fw)
    with tracking.start_training_run(cfg, fw, tags=tags) as run:
        run_id = run.info.run_id
        if weights_run is not None:  # the curves; the test metrics are this experiment's own, below
            for key in sorted(set(weights_run.data.metrics) - set(tests)):
                history = client.get_metric_history(weights_id, key)
                for start in range(0, len(history), 1000):
                    client.log_batch(run_id, metrics=history[start : start + 1000])
        if tests:
            mlflow.log_metrics(tests)
    if weights_run is not None:
        client.set_tag(weights_id, f"reused_by.{tracking.dvc_exp_name() or 'repro'}", run_id)
    return client.get_run(run_id)
