"""Evaluation of the two trained models on the test split: the work of the ``evaluate`` stage.

:func:`evaluate` runs each trained model (``models/numpy/model.npz``, ``models/torch/model.pt``) once over
the test split, in batches of ``evaluate.batch_size`` (1000), timed: the same pass gives the metrics and
the inference throughput. It reads::

    <processed_dir>/test.npz, <processed_dir>/stats.json
    models/numpy/model.npz, models/torch/model.pt          the trained models
    metrics/train_<fw>.json                                training time, epochs, batch, samples/s
    models/<fw>/mlflow_run.json                            the training runs to log into

and writes::

    metrics/evaluate.json         per framework: test_accuracy, test_loss, misclassified, macro/weighted
                                  P/R/F1, inference_images_per_sec (and the inference_batch_size it was
                                  measured at), the training numbers; plus "agreement" between the models
    reports/per_class.json        per framework: {"0": {precision, recall, f1, support}, ...} (not a DVC
                                  metric: it would make `dvc exp show` unreadable)
    plots/confusion_<fw>.json     [{"actual": 7, "predicted": 7}, ...] one row per test image (DVC
                                  ``confusion`` template, x: actual, y: predicted)
    reports/predictions.npz       y (N,), <fw>_proba (N, K) float32: what the figures are drawn from
    reports/disagreements.json    the test indices where the two models disagree, with both predictions
    reports/comparison.md         the Performance Comparison table (cnn.pipeline.report)

then logs the test metrics and the report to both training runs (MLflow, under ``evaluation/``), registers
both models in the MLflow Model Registry (``cnn-numpy``, ``cnn-torch``) and moves each one's ``champion``
alias when the new version has the higher test accuracy (:mod:`cnn.pipeline.registry`).

:func:`evaluate_from_config` maps a validated config (:func:`cnn.pipeline.load_params`) onto
:func:`evaluate`: it is what ``python -m stages.evaluate`` calls. The figures drawn from these outputs are
:mod:`cnn.pipeline.figures`. torch and MLflow are imported only when needed.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnn.errors import CheckpointError, DataError
from cnn.losses import CrossEntropyLoss
from cnn.pipeline.files import read_json, write_json, write_npz, write_text
from cnn.pipeline.metrics import agreement, classification_report, softmax, timed_inference
from cnn.pipeline.paths import PipelinePaths
from cnn.pipeline.report import render_comparison

__all__ = [
    "FRAMEWORKS",
    "INFERENCE_BATCH_SIZE",
    "EvaluatePaths",
    "Evaluation",
    "PlotPaths",
    "evaluate",
    "evaluate_from_config",
    "load_logits_fn",
    "load_predictions",
    "machine_info",
    "read_json",
    "training_numbers",
]

log = logging.getLogger(__name__)

FRAMEWORKS = ("numpy", "torch")
INFERENCE_BATCH_SIZE = 1000
"""Default images per forward pass when timing inference (the issue's "inference images/s at batch 1000");
the pipeline reads ``evaluate.batch_size`` from the config."""


#: Where :func:`evaluate` and :func:`cnn.pipeline.figures.render_figures` read and write (``paths`` group).
EvaluatePaths = PipelinePaths
PlotPaths = PipelinePaths


# ------------------------------------------------------------------------------------------------ models
def load_logits_fn(
    framework: str, path: Path, torch_options: Mapping[str, Any] | None = None
) -> tuple[Callable[[np.ndarray], np.ndarray], Any]:
    """Load a trained model; return ``(fn, model)`` with ``fn(x (B, C, H, W)) -> logits (B, K)`` in eval mode.

    ``model`` is the ``cnn.CNN`` or the ``TorchCNN`` module. The torch model runs through
    :class:`cnn.torch_train.TorchTrainer` with ``torch_options`` (``device``, ``threads``,
    ``channels_last``, ... from the ``train`` config), so it is evaluated where and how it was trained.

    Raises:
        CheckpointError: the file is missing or not a model of ours (from the model classes' loaders).
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: trained {framework} model not found; run the train_{framework} stage")
    if framework == "numpy":
        from cnn.model import CNN

        model = CNN.load(path).eval()
        return model.forward, model
    from cnn.torch_train import TorchTrainer

    trainer = TorchTrainer.load(path, **dict(torch_options or {}))
    return (lambda x: trainer.predict_logits(x, batch_size=len(x))), trainer.model


@contextmanager
def _thread_limit(framework: str, threads: int | None) -> Iterator[None]:
    """Limit the framework's compute threads to ``threads`` inside the block (None: library default)."""
    if threads is None:
        yield
    elif framework == "torch":
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)
    else:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=threads):
            yield


TRAIN_KEYS = ("train_time_s", "samples_per_sec", "epochs", "batch_size")


def training_numbers(path: Path, framework: str) -> dict[str, Any]:
    """``train_time_s, samples_per_sec, epochs, batch_size`` (+ ``final_val_accuracy``) from a training
    stage's ``metrics/train_<fw>.json``."""
    data = read_json(path, "training metrics", f"run the train_{framework} stage first")
    missing = [k for k in TRAIN_KEYS if k not in data]
    if missing:
        raise DataError(
            f"{path}: training metrics lack {', '.join(missing)} (expected {', '.join(TRAIN_KEYS)})"
        )
    out = {k: data[k] for k in TRAIN_KEYS}
    final = data.get("final") or {}
    if "val_accuracy" in final:
        out["final_val_accuracy"] = final["val_accuracy"]
    return out


def machine_info(threads: int | None) -> dict[str, Any]:
    """Platform, CPU count, threads used and library versions, for the report's "Measured on" line."""
    info: dict[str, Any] = {
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:  # pragma: no cover - torch is a dev dependency
        pass
    return info


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or None


def load_predictions(path: Path) -> dict[str, np.ndarray]:
    """Read ``reports/predictions.npz`` (no pickle): ``y`` and ``<fw>_proba`` arrays.

    Raises:
        DataError: missing, not an npz, or without ``y``.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise DataError(f"{path}: predictions not found; run `python -m stages.evaluate` first") from None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a valid predictions .npz ({exc})") from None
    if "y" not in arrays:
        raise DataError(f"{path}: expected arrays y and <framework>_proba, found {sorted(arrays)}")
    return arrays


# ------------------------------------------------------------------------------------------------ evaluate
@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` returns.

    Attributes:
        metrics: the content of ``metrics/evaluate.json``.
        context: ``{"dataset": {...}, "machine": {...}}``, the non-metric facts the report also shows.
        per_class: the content of ``reports/per_class.json``, ``{fw: {"0": {precision, recall, f1,
            support}, ...}}``: not a DVC metric (40 numbers per framework would flood ``dvc exp show``).
    """

    metrics: dict[str, Any]
    context: dict[str, Any]
    per_class: dict[str, Any] = field(default_factory=dict)

    def report_input(self) -> dict[str, Any]:
        """``metrics`` (each framework's with its ``per_class``) and ``context`` merged: the input of
        :func:`cnn.pipeline.report.render_comparison`."""
        merged = {
            key: {**value, "per_class": self.per_class[key]} if key in self.per_class else value
            for key, value in self.metrics.items()
        }
        return {**merged, **self.context}


def evaluate(
    paths: PipelinePaths,
    *,
    frameworks: Sequence[str] = FRAMEWORKS,
    threads: Mapping[str, int | None] | None = None,
    batch_size: int = INFERENCE_BATCH_SIZE,
    torch_options: Mapping[str, Any] | None = None,
    track: bool = True,
    tracking_uri: str | None = None,
) -> Evaluation:
    """Evaluate the trained models of ``frameworks`` on the test split and write every output.

    Args:
        paths: input and output locations (see :class:`EvaluatePaths`).
        frameworks: which trained models to evaluate (``numpy``, ``torch`` or both).
        threads: compute threads per framework (``train.threads``); None entries use the default.
        batch_size: inference batch size, for both the metrics pass and the throughput.
        torch_options: :class:`cnn.torch_train.TorchTrainer` options for the torch model (``device``,
            ``channels_last``, ...); ``threads`` above wins over a ``threads`` here.
        track: log metrics and report to the runs named by ``models/<fw>/mlflow_run.json`` (a missing
            pointer is skipped with a warning: that model was trained without tracking).
        tracking_uri: MLflow URI (default :func:`cnn.pipeline.tracking.resolve_tracking_uri`).

    Returns:
        :class:`Evaluation`: the metrics written to ``metrics/evaluate.json`` and the report's context.

    Raises:
        DataError: the test split, stats or a training metrics file is missing or malformed.
        CheckpointError: a model file is missing or corrupt. TrackingError: the tracking store fails.
    """
    from cnn.data import get_dataset, load_split

    if track:  # fail within seconds when the server is down, not after a minute of inference
        from cnn.pipeline.tracking import check_tracking_uri, resolve_tracking_uri

        check_tracking_uri(tracking_uri or resolve_tracking_uri())
    threads = dict(threads or {})
    stats = read_json(paths.stats, "dataset statistics", "run the preprocess stage first")
    x, y = load_split(paths.test, sample_shape=None)
    classes = list(get_dataset(stats["dataset"]).classes) if stats.get("dataset") else None
    num_classes = len(classes) if classes else int(y.max()) + 1

    results: dict[str, Any] = {}
    probas: dict[str, np.ndarray] = {}
    preds: dict[str, np.ndarray] = {}
    devices: dict[str, str] = {}
    for fw in frameworks:
        options = {**(torch_options or {}), "threads": threads.get("torch")} if fw == "torch" else None
        logits_fn, model = load_logits_fn(fw, paths.model(fw), options)
        devices[fw] = str(getattr(model, "device", "cpu"))
        with _thread_limit(fw, threads.get(fw)):
            timed = timed_inference(logits_fn, x, batch_size=batch_size)
        logits = timed.outputs.astype(np.float64)
        if logits.shape != (len(y), num_classes):
            raise CheckpointError(
                f"{paths.model(fw)}: the model outputs {logits.shape[1:]} logits per image; "
                f"expected ({num_classes},) for {stats.get('dataset', 'the data set')}"
            )
        probas[fw] = softmax(logits)
        preds[fw] = logits.argmax(axis=1)
        report = classification_report(y, preds[fw], num_classes, class_names=classes)
        report.pop("confusion_matrix")  # a list: in plots/confusion_<fw>.json instead
        results[fw] = {
            "test_accuracy": report.pop("accuracy"),
            "test_loss": CrossEntropyLoss().forward(logits, y),
            **report,
            "inference_images_per_sec": timed.images_per_sec,
            "inference_batch_size": batch_size,
            **training_numbers(paths.train_metrics(fw), fw),
        }
        log.info(
            "%s: test accuracy %.4f, loss %.4f, %.0f images/s", fw, results[fw]["test_accuracy"],
            results[fw]["test_loss"], timed.images_per_sec,
        )  # fmt: skip

    if "numpy" in preds and "torch" in preds:
        ag = agreement(preds["numpy"], preds["torch"], y)
        results["agreement"] = ag.to_dict("numpy", "torch")
        write_json(
            paths.disagreements,
            {
                "indices": ag.disagree.tolist(),
                "true": y[ag.disagree].tolist(),
                "numpy": preds["numpy"][ag.disagree].tolist(),
                "torch": preds["torch"][ag.disagree].tolist(),
            },
        )
    results["test_images"] = len(y)

    # Per-class scores (40 numbers per framework) in their own file: as DVC metrics they made
    # `dvc exp show` some 200 columns wide.
    per_class = {fw: results[fw].pop("per_class") for fw in preds}
    write_json(paths.evaluate_metrics, results)
    write_json(paths.per_class, per_class)
    for fw, p in preds.items():
        rows = [{"actual": int(a), "predicted": int(b)} for a, b in zip(y, p)]
        write_json(paths.confusion(fw), rows, indent=None)
    write_npz(paths.predictions, y=y, **{f"{fw}_proba": p.astype(np.float32) for fw, p in probas.items()})
    sizes = stats.get("sizes") or {}
    context = {
        "dataset": {
            "name": stats.get("dataset"),
            "train_size": sizes.get("train"),
            "val_size": sizes.get("val"),
            "test_size": len(y),
        },
        "machine": {**machine_info(next(iter(threads.values()), None)), "torch_device": devices.get("torch")},
    }
    evaluation = Evaluation(metrics=results, context=context, per_class=per_class)
    write_text(paths.comparison, render_comparison(evaluation.report_input()))

    if track:
        _log_to_runs(paths, results, frameworks, tracking_uri)
        _register(paths, results, frameworks, tracking_uri, x, y, stats)
    return evaluation


def _log_to_runs(
    paths: EvaluatePaths, results: Mapping[str, Any], frameworks: Sequence[str], uri: str | None
) -> None:
    from cnn.pipeline import tracking

    agreement_rate = (results.get("agreement") or {}).get("rate")
    for fw in frameworks:
        if not paths.run_pointer(fw).is_file():
            log.warning(
                "%s: no run pointer, the %s model was trained untracked; not logged",
                paths.run_pointer(fw),
                fw,
            )
            continue
        r = results[fw]
        metrics = {
            "test_accuracy": r["test_accuracy"],
            "test_loss": r["test_loss"],
            "test_macro_f1": r["macro"]["f1"],
            "inference_images_per_sec": r["inference_images_per_sec"],
        }
        if agreement_rate is not None:
            metrics["agreement_rate"] = agreement_rate
        artifacts = [paths.evaluate_metrics, paths.comparison, paths.confusion(fw)]
        run_id = tracking.read_run_pointer(paths.run_pointer(fw))["run_id"]
        tracking.log_to_run(run_id, metrics, artifacts, uri=uri, artifact_path="evaluation")


def _register(
    paths: EvaluatePaths,
    results: Mapping[str, Any],
    frameworks: Sequence[str],
    uri: str | None,
    x: np.ndarray,
    y: np.ndarray,
    stats: Mapping[str, Any],
) -> None:
    """Register each tracked model and move its ``champion`` alias on merit (:mod:`cnn.pipeline.registry`).

    The champion is judged on the raw test pixels (the inverse of the preprocess normalisation): what a
    user sends to the served model.
    """
    from cnn.pipeline import registry, tracking
    from cnn.pipeline.logged_models import raw_pixels

    run_ids = {
        fw: tracking.read_run_pointer(paths.run_pointer(fw))["run_id"]
        for fw in frameworks
        if paths.run_pointer(fw).is_file()
    }
    if not run_ids:
        return
    if not all(isinstance(stats.get(k), int | float) for k in ("mean", "std")):
        log.warning("%s: no mean and std of the training pixels; models not registered", paths.stats)
        return
    split = registry.TestSplit(raw_pixels(x, float(stats["mean"]), float(stats["std"])), y)
    accuracies = {fw: float(results[fw]["test_accuracy"]) for fw in run_ids}
    registry.register_evaluated(uri or tracking.resolve_tracking_uri(), run_ids, accuracies, split)


# ------------------------------------------------------------------------------------------------ config
def evaluate_from_config(cfg: Mapping[str, Any], *, track: bool = True) -> Evaluation:
    """:func:`evaluate` as the pipeline runs it, from a validated config (:func:`cnn.pipeline.load_params`).

    Reads ``data.processed_dir``, ``evaluate.batch_size``, ``train.threads`` per framework (with
    ``train.numpy`` / ``train.torch`` overrides), the torch model's ``device``, ``channels_last`` and
    ``deterministic`` (where and how it trained), and ``tracking.uri`` when ``track``.
    """
    from cnn.pipeline.config import train_config_for
    from cnn.pipeline.tracking import resolve_tracking_uri

    torch_train = train_config_for(cfg, "torch")
    return evaluate(
        PipelinePaths.from_config(cfg),
        threads={fw: train_config_for(cfg, fw)["threads"] for fw in FRAMEWORKS},
        batch_size=cfg["evaluate"]["batch_size"],
        # Where and how the torch model trained; not `compile`: its first batches would time the compiler.
        torch_options={k: torch_train[k] for k in ("device", "channels_last", "deterministic")},
        track=track,
        tracking_uri=resolve_tracking_uri(cfg["tracking"]["uri"]) if track else None,
    )
