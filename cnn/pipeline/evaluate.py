"""Evaluation of the two trained models and the figure set: the work of the ``evaluate`` and ``plot`` stages.

:func:`evaluate` runs each trained model (``models/numpy/model.npz``, ``models/torch/model.pt``) once over
the test split, in batches of ``evaluate.batch_size`` (1000), timed: the same pass gives the metrics and
the inference throughput. It reads::

    <processed_dir>/test.npz, <processed_dir>/stats.json
    models/numpy/model.npz, models/torch/model.pt          the trained models
    metrics/train_<fw>.json                                training time, epochs, batch, samples/s
    models/<fw>/mlflow_run.json                            the training runs to log into

and writes::

    metrics/evaluate.json         per framework: test_accuracy, test_loss, misclassified, macro/weighted
                                  P/R/F1, per_class P/R/F1/support, inference_images_per_sec (and the
                                  inference_batch_size it was measured at), the training numbers; plus
                                  "agreement" between the two models
    plots/confusion_<fw>.json     [{"actual": 7, "predicted": 7}, ...] one row per test image (DVC
                                  ``confusion`` template, x: actual, y: predicted)
    reports/predictions.npz       y (N,), <fw>_proba (N, K) float32: what the figures are drawn from
    reports/disagreements.json    the test indices where the two models disagree, with both predictions
    reports/comparison.md         the Performance Comparison table (cnn.pipeline.report)

then logs the test metrics and the report to both training runs (MLflow, under ``evaluation/``), registers
both models in the MLflow Model Registry (``cnn-numpy``, ``cnn-torch``) and moves each one's ``champion``
alias when the new version has the higher test accuracy (:mod:`cnn.pipeline.registry`).

:func:`render_figures` draws the six figures of the README into ``reports/figures/`` from the trained
models, the training histories (``plots/history_<fw>.json``) and ``reports/predictions.npz``:

    training_curves.png     loss and accuracy per epoch, train and validation, both frameworks overlaid
    confusion_matrix.png    per framework, counts and row-normalised
    conv_filters.png        the learned first-layer filters of each framework
    feature_maps.png        one test image through each conv layer of the NumPy model
                            (``evaluate.feature_map_channels`` channels per layer)
    sample_predictions.png  ``evaluate.num_samples`` random test images with both models' predictions,
                            mistakes in red
    misclassified.png       up to ``evaluate.max_misclassified`` test images the NumPy model gets wrong,
                            with its top-2 probabilities

and logs them to both training runs as MLflow artifacts under ``figures/``. All drawing is
:mod:`cnn.pipeline.viz`; this module picks what to draw.

:func:`evaluate_from_config` and :func:`render_figures_from_config` map a validated config
(:func:`cnn.pipeline.load_params`) onto those two: they are what ``python -m stages.evaluate`` and
``python -m stages.plot`` call. torch, MLflow and matplotlib are imported only when needed.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnn.errors import CheckpointError, DataError
from cnn.losses import CrossEntropyLoss
from cnn.pipeline.metrics import agreement, classification_report, confusion_matrix, softmax, timed_inference
from cnn.pipeline.report import FRAMEWORK_NAMES, render_comparison

__all__ = [
    "FIGURES",
    "FRAMEWORKS",
    "INFERENCE_BATCH_SIZE",
    "EvaluatePaths",
    "Evaluation",
    "PlotPaths",
    "evaluate",
    "evaluate_from_config",
    "first_conv_weights",
    "load_logits_fn",
    "load_predictions",
    "machine_info",
    "read_json",
    "render_figures",
    "render_figures_from_config",
    "training_numbers",
]

log = logging.getLogger(__name__)

FRAMEWORKS = ("numpy", "torch")
MODEL_FILES = {"numpy": "model.npz", "torch": "model.pt"}
INFERENCE_BATCH_SIZE = 1000
"""Default images per forward pass when timing inference (the issue's "inference images/s at batch 1000");
the pipeline reads ``evaluate.batch_size`` from the config."""

FIGURES = (
    "training_curves",
    "confusion_matrix",
    "conv_filters",
    "feature_maps",
    "sample_predictions",
    "misclassified",
)
"""The figures :func:`render_figures` writes, ``reports/figures/<name>.png``, in this order."""
SHORT_NAMES = {"numpy": "NumPy", "torch": "torch"}


@dataclass(frozen=True)
class EvaluatePaths:
    """Where :func:`evaluate` reads and writes, relative to the repository root by default."""

    processed_dir: Path = Path("data/processed")
    models_dir: Path = Path("models")
    metrics_dir: Path = Path("metrics")
    plots_dir: Path = Path("plots")
    reports_dir: Path = Path("reports")

    @property
    def test(self) -> Path:
        return self.processed_dir / "test.npz"

    @property
    def stats(self) -> Path:
        return self.processed_dir / "stats.json"

    def model(self, fw: str) -> Path:
        return self.models_dir / fw / MODEL_FILES[fw]

    def run_pointer(self, fw: str) -> Path:
        return self.models_dir / fw / "mlflow_run.json"

    def train_metrics(self, fw: str) -> Path:
        return self.metrics_dir / f"train_{fw}.json"

    @property
    def evaluate_metrics(self) -> Path:
        return self.metrics_dir / "evaluate.json"

    def confusion(self, fw: str) -> Path:
        return self.plots_dir / f"confusion_{fw}.json"

    @property
    def predictions(self) -> Path:
        return self.reports_dir / "predictions.npz"

    @property
    def disagreements(self) -> Path:
        return self.reports_dir / "disagreements.json"

    @property
    def comparison(self) -> Path:
        return self.reports_dir / "comparison.md"


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


def read_json(path: Path, what: str, hint: str) -> Any:
    """Parse ``path`` as JSON; :class:`DataError` naming the file if it is missing or malformed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found; {hint}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: expected {what} as JSON, found unreadable content ({exc})") from None


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


# ------------------------------------------------------------------------------------------------ files
def _write_json(path: Path, obj: Any, indent: int | None = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=indent, allow_nan=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a bare name
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    """

    metrics: dict[str, Any]
    context: dict[str, Any]

    def report_input(self) -> dict[str, Any]:
        """``metrics`` and ``context`` merged: the input of :func:`cnn.pipeline.report.render_comparison`."""
        return {**self.metrics, **self.context}


def evaluate(
    paths: EvaluatePaths = EvaluatePaths(),
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
        _write_json(
            paths.disagreements,
            {
                "indices": ag.disagree.tolist(),
                "true": y[ag.disagree].tolist(),
                "numpy": preds["numpy"][ag.disagree].tolist(),
                "torch": preds["torch"][ag.disagree].tolist(),
            },
        )
    results["test_images"] = len(y)

    _write_json(paths.evaluate_metrics, results)
    for fw, p in preds.items():
        rows = [{"actual": int(a), "predicted": int(b)} for a, b in zip(y, p)]
        _write_json(paths.confusion(fw), rows, indent=None)
    _write_npz(paths.predictions, y=y, **{f"{fw}_proba": p.astype(np.float32) for fw, p in probas.items()})
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
    evaluation = Evaluation(metrics=results, context=context)
    _write_text(paths.comparison, render_comparison(evaluation.report_input()))

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

    The champion is judged on the raw test pixels (the inverse of the preprocess normalisation), what a
    user sends to the served model."""
    from cnn.pipeline import registry, tracking
    from cnn.pipeline.serving import raw_pixels

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


# ------------------------------------------------------------------------------------------------ figures
@dataclass(frozen=True)
class PlotPaths(EvaluatePaths):
    """:class:`EvaluatePaths` plus the histories and the figures folder (what :func:`render_figures` uses)."""

    def history(self, fw: str) -> Path:
        return self.plots_dir / f"history_{fw}.json"

    @property
    def figures_dir(self) -> Path:
        return self.reports_dir / "figures"

    def figure(self, name: str) -> Path:
        return self.figures_dir / f"{name}.png"


def first_conv_weights(framework: str, model: Any) -> np.ndarray:
    """``(F, C, kh, kw)`` weights of the first layer of ``features`` (a convolution) as a NumPy array."""
    if framework == "numpy":
        return np.asarray(model.features[0].params["weight"])
    return model.features[0].weight.detach().cpu().numpy()


def render_figures(
    paths: PlotPaths = PlotPaths(),
    *,
    frameworks: Sequence[str] = FRAMEWORKS,
    class_names: Sequence[str] | None = None,
    num_samples: int = 32,
    max_misclassified: int = 24,
    feature_map_channels: int = 8,
    seed: int = 0,
    track: bool = True,
    tracking_uri: str | None = None,
) -> list[Path]:
    """Draw the six figures into ``paths.figures_dir`` and return their paths.

    Args:
        frameworks: the models to show; the feature maps and misclassified figures use the first.
        class_names: tick and title labels (default ``0 .. K-1``).
        num_samples: test images in ``sample_predictions.png``, drawn at random with ``seed``.
        max_misclassified: most confident mistakes shown in ``misclassified.png``.
        feature_map_channels: channels shown per conv layer in ``feature_maps.png``.
        track: log the figures to the runs of ``models/<fw>/mlflow_run.json`` (missing pointers skipped).

    Raises:
        DataError: a history, the predictions or the test split is missing or malformed.
        CheckpointError: a model file is missing or corrupt. TrackingError: the tracking store fails.
    """
    from cnn.data import load_split
    from cnn.pipeline import viz  # matplotlib: imported only when drawing

    if track:  # fail fast when the tracking server is down
        from cnn.pipeline.tracking import check_tracking_uri, resolve_tracking_uri

        check_tracking_uri(tracking_uri or resolve_tracking_uri())
    names = {fw: FRAMEWORK_NAMES[fw] for fw in frameworks}
    x, y = load_split(paths.test, sample_shape=None)
    predictions = load_predictions(paths.predictions)
    if not np.array_equal(predictions["y"], y):
        raise DataError(
            f"{paths.predictions}: labels differ from {paths.test}; re-run the evaluate stage on this split"
        )
    proba = {}
    for fw in frameworks:
        if f"{fw}_proba" not in predictions:
            raise DataError(f"{paths.predictions}: no {fw}_proba array; re-run the evaluate stage")
        proba[fw] = predictions[f"{fw}_proba"]
    pred = {fw: p.argmax(axis=1) for fw, p in proba.items()}
    num_classes = next(iter(proba.values())).shape[1]
    models = {fw: load_logits_fn(fw, paths.model(fw))[1] for fw in frameworks}
    out = paths.figures_dir
    out.mkdir(parents=True, exist_ok=True)

    histories = {
        names[fw]: read_json(paths.history(fw), "training history", f"run the train_{fw} stage first")
        for fw in frameworks
    }
    viz.plot_training_curves(histories, paths.figure("training_curves"))
    viz.plot_confusion_matrix(
        {names[fw]: confusion_matrix(y, pred[fw], num_classes) for fw in frameworks},
        paths.figure("confusion_matrix"),
        class_names=class_names,
        title=f"Confusion matrices on the {len(y):,} test images",
    )
    viz.plot_conv_filters(
        {names[fw]: first_conv_weights(fw, models[fw]) for fw in frameworks}, paths.figure("conv_filters")
    )

    main_fw = frameworks[0]
    index = 0  # the first test image: the same one in every run, so figures compare across runs
    maps = models[main_fw].get_feature_maps(x[index]) if main_fw == "numpy" else None
    if maps is not None:
        viz.plot_feature_maps(
            x[index],
            maps,
            paths.figure("feature_maps"),
            max_maps=feature_map_channels,
            title=f"{names[main_fw]}: test image #{index} (label {_label(y[index], class_names)}) "
            "through each conv layer (after batch norm and ReLU)",
        )

    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(y), size=min(num_samples, len(y)), replace=False))
    viz.plot_sample_predictions(
        x[picks],
        y[picks],
        {SHORT_NAMES[fw]: pred[fw][picks] for fw in frameworks},
        paths.figure("sample_predictions"),
        class_names=class_names,
        title=f"{len(picks)} random test images",
    )
    viz.plot_misclassified(
        x,
        y,
        proba[main_fw],
        paths.figure("misclassified"),
        max_images=max_misclassified,
        class_names=class_names,
        model_name=names[main_fw],
    )
    written = [paths.figure(name) for name in FIGURES if paths.figure(name).is_file()]
    if track:
        _log_figures(paths, frameworks, written, tracking_uri)
    return written


def _label(c: int, class_names: Sequence[str] | None) -> str:
    return str(c) if class_names is None else str(class_names[c])


def _log_figures(paths: PlotPaths, frameworks: Sequence[str], figures: list[Path], uri: str | None) -> None:
    from cnn.pipeline import tracking

    for fw in frameworks:
        if not paths.run_pointer(fw).is_file():
            log.warning("%s: no run pointer (untracked training); figures not logged", paths.run_pointer(fw))
            continue
        run_id = tracking.read_run_pointer(paths.run_pointer(fw))["run_id"]
        tracking.log_to_run(run_id, artifacts=figures, uri=uri, artifact_path="figures")


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
        EvaluatePaths(processed_dir=Path(cfg["data"]["processed_dir"])),
        threads={fw: train_config_for(cfg, fw)["threads"] for fw in FRAMEWORKS},
        batch_size=cfg["evaluate"]["batch_size"],
        # Where and how the torch model trained; not `compile`: its first batches would time the compiler.
        torch_options={k: torch_train[k] for k in ("device", "channels_last", "deterministic")},
        track=track,
        tracking_uri=resolve_tracking_uri(cfg["tracking"]["uri"]) if track else None,
    )


def render_figures_from_config(cfg: Mapping[str, Any], *, track: bool = True) -> list[Path]:
    """:func:`render_figures` as the pipeline runs it, from a validated config.

    Reads ``data.processed_dir``, ``data.name`` (class names on the axes unless they are ``0 .. K-1``),
    ``data.seed`` (which test images are sampled), ``evaluate.num_samples``,
    ``evaluate.max_misclassified``, ``evaluate.feature_map_channels``, and ``tracking.uri`` when ``track``.
    """
    from cnn.data import get_dataset

    uri = None
    if track:
        from cnn.pipeline.tracking import resolve_tracking_uri

        uri = resolve_tracking_uri(cfg["tracking"]["uri"])
    classes = get_dataset(cfg["data"]["name"]).classes
    settings = cfg["evaluate"]
    return render_figures(
        PlotPaths(processed_dir=Path(cfg["data"]["processed_dir"])),
        class_names=None if list(classes) == [str(i) for i in range(len(classes))] else classes,
        num_samples=settings["num_samples"],
        max_misclassified=settings["max_misclassified"],
        feature_map_channels=settings["feature_map_channels"],
        seed=cfg["data"]["seed"],
        track=track,
        tracking_uri=uri,
    )
