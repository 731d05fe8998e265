"""The figure set of the README: the work of the ``plot`` stage.

:func:`render_figures` draws six figures into ``<reports_dir>/figures/`` from the trained models, the
training histories (``plots/history_<fw>.json``) and ``reports/predictions.npz`` (written by the evaluate
stage, :mod:`cnn.pipeline.evaluate`):

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
:mod:`cnn.pipeline.viz` (matplotlib, imported only when drawing); this module picks what to draw.
:func:`render_figures_from_config` is what ``python -m stages.plot`` calls.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnn.errors import DataError
from cnn.pipeline.evaluate import FRAMEWORKS, load_logits_fn, load_predictions
from cnn.pipeline.files import read_json
from cnn.pipeline.metrics import confusion_matrix
from cnn.pipeline.paths import PipelinePaths
from cnn.pipeline.report import FRAMEWORK_NAMES

__all__ = ["FIGURES", "first_conv_weights", "render_figures", "render_figures_from_config"]

log = logging.getLogger(__name__)

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


def first_conv_weights(framework: str, model: Any) -> np.ndarray:
    """``(F, C, kh, kw)`` weights of the first layer of ``features`` (a convolution) as a NumPy array."""
    if framework == "numpy":
        return np.asarray(model.features[0].params["weight"])
    return model.features[0].weight.detach().cpu().numpy()


def render_figures(
    paths: PipelinePaths,
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


def _log_figures(
    paths: PipelinePaths, frameworks: Sequence[str], figures: list[Path], uri: str | None
) -> None:
    from cnn.pipeline import tracking

    for fw in frameworks:
        if not paths.run_pointer(fw).is_file():
            log.warning("%s: no run pointer (untracked training); figures not logged", paths.run_pointer(fw))
            continue
        run_id = tracking.read_run_pointer(paths.run_pointer(fw))["run_id"]
        tracking.log_to_run(run_id, artifacts=figures, uri=uri, artifact_path="figures")


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
        PipelinePaths.from_config(cfg),
        class_names=None if list(classes) == [str(i) for i in range(len(classes))] else classes,
        num_samples=settings["num_samples"],
        max_misclassified=settings["max_misclassified"],
        feature_map_channels=settings["feature_map_channels"],
        seed=cfg["data"]["seed"],
        track=track,
        tracking_uri=uri,
    )
