"""Figures of a trained CNN: training curves, confusion matrices, filters, feature maps, predictions.

Every function builds a :class:`matplotlib.figure.Figure` on the Agg canvas directly, never through
``pyplot``: no GUI backend, no global figure registry to leak into, safe in a DVC stage or a worker
thread. Each returns the figure (a notebook displays it) and, when ``save_path`` is given, also writes
it there as a PNG, atomically (:func:`cnn.atomic.atomic_open`).

Figures are ``width x height`` inches at :data:`DPI` dots per inch, laid out with matplotlib's
constrained layout so the PNG is exactly ``round(width * DPI) x round(height * DPI)`` pixels; fonts are
sized to stay readable when a README shows the figure about 800 px wide.

Models are passed either as one array (one model) or as a mapping ``{display name: array}``, e.g.
``{"NumPy CNN": cm_numpy, "PyTorch CNN": cm_torch}``; the names appear in titles and legends.

Usage, as in the seed project::

    maps = model.get_feature_maps(x[:1])
    visualize_feature_maps(maps[0]["feature_map"], save_path="reports/figures/feature_maps.png")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import Normalize, PowerNorm, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from cnn.errors import CNNError
from cnn.pipeline.figure_style import CORRECT_COLOR as CORRECT_COLOR
from cnn.pipeline.figure_style import DPI as DPI
from cnn.pipeline.figure_style import MODEL_COLORS as MODEL_COLORS
from cnn.pipeline.figure_style import WRONG_COLOR as WRONG_COLOR
from cnn.pipeline.figure_style import PathLike as PathLike
from cnn.pipeline.figure_style import by_model as _by_model
from cnn.pipeline.figure_style import finish as _finish
from cnn.pipeline.figure_style import images_2d as _images_2d
from cnn.pipeline.figure_style import new_figure as _figure
from cnn.pipeline.figure_style import save_figure as save_figure
from cnn.pipeline.figure_style import style as _style
from cnn.pipeline.figure_style import tile as tile
from cnn.pipeline.metrics import normalize_confusion, top_k


def _history_columns(history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]]) -> dict:
    """Columns ``{key: float array}`` plus ``epoch`` from either history format.

    Accepts ``CNN.fit``'s dict of per-epoch lists, or the rows of ``plots/history_<fw>.json``
    (``[{"epoch": 1, "loss": ..., ...}, ...]``).
    """
    if isinstance(history, Mapping):
        cols = {k: np.asarray(v, dtype=np.float64) for k, v in history.items() if k != "epoch"}
        n = len(history.get("loss", []))
        epochs = history.get("epoch", range(1, n + 1))
    else:
        rows = list(history)
        keys = {k for row in rows for k in row if k != "epoch"}
        cols = {k: np.asarray([row.get(k, np.nan) for row in rows], dtype=np.float64) for k in keys}
        epochs = [row.get("epoch", i + 1) for i, row in enumerate(rows)]
    cols["epoch"] = np.asarray(list(epochs), dtype=np.float64)
    if "loss" not in cols or cols["loss"].size == 0:
        raise CNNError("history: expected per-epoch 'loss' values, found none")
    return cols


def plot_training_curves(
    histories: Mapping[str, Any] | Sequence[Mapping[str, float]],
    save_path: PathLike | None = None,
    *,
    title: str = "Training curves",
) -> Figure:
    """Loss and accuracy per epoch, train (solid) and validation (dashed), models overlaid.

    Args:
        histories: one history or ``{model name: history}``; a history is ``CNN.fit``'s dict of lists
            (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``) or the list of per-epoch rows of
            ``plots/history_<fw>.json``. Missing validation keys are simply not drawn.
        save_path: where to write the PNG (1200 x 460 px), or None.
    """
    if isinstance(histories, Mapping) and "loss" in histories:
        histories = {"model": histories}
    runs = {name: _history_columns(h) for name, h in _by_model(histories, "plot_training_curves").items()}
    with _style():
        fig = _figure(12, 4.6)
        ax_loss, ax_acc = fig.subplots(1, 2)
        # Later models are drawn thinner on top: when two trajectories coincide (same seed and batch
        # order in both frameworks) both stay visible.
        for i, ((name, cols), color) in enumerate(zip(runs.items(), MODEL_COLORS)):
            lw, ms = max(3.5 - 1.5 * i, 1.2), max(8.0 - 3.0 * i, 3.0)
            for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
                for prefix, style, marker, split in (("", "-", "o", "train"), ("val_", "--", "s", "val")):
                    y = cols.get(prefix + key)
                    if y is None or np.all(np.isnan(y)):
                        continue
                    ax.plot(cols["epoch"], y, style, marker=marker, ms=ms, lw=lw, color=color,
                            label=f"{name} · {split}")  # fmt: skip
        ax_loss.set(title="Cross-entropy loss", xlabel="Epoch", ylabel="Loss")
        ax_acc.set(title="Accuracy", xlabel="Epoch", ylabel="Accuracy")
        ax_acc.yaxis.set_major_formatter(PercentFormatter(1.0))
        for ax in (ax_loss, ax_acc):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(True)
        ax_acc.legend(loc="lower right", frameon=False)
        fig.suptitle(title)
    return _finish(fig, save_path)


def _annotate_cells(ax: Any, values: np.ndarray, shade: np.ndarray, fmt: str, skip_zero: bool) -> None:
    """Write ``values[i, j]`` in each cell, white on dark cells (``shade`` in [0, 1]) and black on light."""
    k = values.shape[0]
    size = 10 if k <= 10 else max(5, int(100 / k))
    for i in range(k):
        for j in range(k):
            v = values[i, j]
            if skip_zero and v == 0:
                continue
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=size,
                    color="white" if shade[i, j] > 0.6 else "black")  # fmt: skip


def plot_confusion_matrix(
    cm: np.ndarray | Mapping[str, np.ndarray],
    save_path: PathLike | None = None,
    *,
    class_names: Sequence[str] | None = None,
    title: str = "Confusion matrix (test set)",
) -> Figure:
    """Per model, the confusion matrix as counts (left) and row-normalised to percent (right).

    Rows are the true class, columns the predicted one (``cnn.pipeline.metrics.confusion_matrix``). The
    normalised panel divides each row by its support, so its diagonal is the per-class recall and its
    off-diagonal cells the share of a class mistaken for another. Its colour scale is a power law
    (gamma 0.3) so that the small error rates stay visible next to a ~99 % diagonal; zero cells are left
    blank.

    Args:
        cm: ``(K, K)`` integer counts, or ``{model name: (K, K)}``.
        class_names: ``K`` tick labels (default ``0 .. K-1``).
        save_path: PNG, 1200 px wide and 560 px tall per model.
    """
    cms = {name: np.asarray(c) for name, c in _by_model(cm, "plot_confusion_matrix").items()}
    shapes = {c.shape for c in cms.values()}
    if len(shapes) != 1 or any(len(s) != 2 or s[0] != s[1] for s in shapes):
        raise CNNError(f"plot_confusion_matrix: expected square (K, K) matrices of one size, got {shapes}")
    k = next(iter(shapes))[0]
    names = [str(i) for i in range(k)] if class_names is None else [str(n) for n in class_names]
    if len(names) != k:
        raise CNNError(f"plot_confusion_matrix: class_names must have {k} entries, got {len(names)}")
    with _style():
        fig = _figure(12, 5.6 * len(cms))
        axes = np.atleast_2d(fig.subplots(len(cms), 2))
        for row, (name, c) in zip(axes, cms.items()):
            total = c.sum()
            acc = np.trace(c) / total if total else 0.0
            percent = normalize_confusion(c, over="true") * 100
            counts_norm = Normalize(vmin=0, vmax=max(int(c.max()), 1))
            percent_norm = PowerNorm(gamma=0.3, vmin=0, vmax=100)
            panels = (
                (row[0], c, counts_norm, "Blues", "d", "Count", f"{name}: counts (accuracy {acc:.2%})"),
                (
                    row[1],
                    percent,
                    percent_norm,
                    "Oranges",
                    ".1f",
                    "% of true class",
                    f"{name}: % of each row",
                ),
            )
            for ax, values, norm, cmap, fmt, cbar_label, panel_title in panels:
                im = ax.imshow(values, cmap=cmap, norm=norm)
                _annotate_cells(ax, values, np.asarray(norm(values)), fmt, skip_zero=True)
                ax.set(title=panel_title, xlabel="Predicted label", ylabel="True label")
                long_names = max(len(n) for n in names) > 2  # e.g. Fashion-MNIST's "Ankle boot"
                ax.set_xticks(
                    range(k), names, rotation=45 if long_names else 0, ha="right" if long_names else "center"
                )
                ax.set_yticks(range(k), names)
                ax.spines[:].set_visible(False)
                cbar = fig.colorbar(im, ax=ax, shrink=0.85)
                cbar.set_label(cbar_label)
                if values is percent:  # the power-law scale needs ticks where the errors are
                    cbar.set_ticks([0, 1, 5, 20, 50, 100])
        fig.suptitle(title)
    return _finish(fig, save_path)


def _filters_2d(weights: np.ndarray, name: str) -> tuple[np.ndarray, str]:
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 4:
        raise CNNError(f"plot_conv_filters: {name} weights must be (F, C, kh, kw), got shape {w.shape}")
    if w.shape[1] == 1:
        return w[:, 0], ""
    return w.mean(axis=1), f", mean over {w.shape[1]} input channels"


def plot_conv_filters(
    weights: np.ndarray | Mapping[str, np.ndarray],
    save_path: PathLike | None = None,
    *,
    max_filters: int = 64,
    ncols: int = 8,
    title: str = "Learned first-layer convolution filters",
) -> Figure:
    """The kernels of a convolution layer, one tile per output channel, models side by side.

    Args:
        weights: ``(F, C, kh, kw)`` (``features[0].params["weight"]`` / ``features.0.weight``), or
            ``{model name: weights}``. With ``C > 1`` each tile shows the mean over input channels.
        max_filters: show the first ``max_filters`` filters.
        save_path: PNG, 600 px wide per model, as tall as the grid of tiles needs.

    A diverging colour map centred on zero (red positive, blue negative), one symmetric scale per model.
    """
    ws = {name: _filters_2d(w, name) for name, w in _by_model(weights, "plot_conv_filters").items()}
    with _style():
        n_shown = min(max_filters, min(f.shape[0] for f, _ in ws.values()))
        rows = -(-n_shown // min(ncols, n_shown))
        cols = min(ncols, n_shown)
        kh, kw = next(iter(ws.values()))[0].shape[1:]
        aspect = (rows * (kh + 1) - 1) / (cols * (kw + 1) - 1)  # of the mosaic
        fig = _figure(
            6 * len(ws), 1.3 + 4.4 * aspect
        )  # ~4.4 in of each 6 in is mosaic, the rest its colour bar
        axes = np.atleast_1d(fig.subplots(1, len(ws)))
        for ax, (name, (f, note)) in zip(axes, ws.items()):
            f = f[:max_filters]
            lim = float(np.abs(f).max()) or 1.0
            cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="white")
            im = ax.imshow(tile(f, ncols), cmap=cmap, norm=TwoSlopeNorm(0.0, -lim, lim))
            kh, kw = f.shape[1:]
            ax.set_title(name)
            ax.set_xlabel(f"{f.shape[0]} filters of {kh}×{kw}{note}")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
            fig.colorbar(im, ax=ax, shrink=0.85).set_label("Weight")
        fig.suptitle(title)
    return _finish(fig, save_path)


def _one_map(feature_map: np.ndarray, what: str) -> np.ndarray:
    fm = np.asarray(feature_map, dtype=np.float64)
    if fm.ndim == 4 and fm.shape[0] == 1:
        fm = fm[0]
    if fm.ndim != 3:
        raise CNNError(f"{what}: a feature map must be (C, H, W) or (1, C, H, W), got shape {fm.shape}")
    return fm


def visualize_feature_maps(
    feature_map: np.ndarray,
    save_path: PathLike | None = None,
    *,
    max_maps: int = 32,
    ncols: int = 8,
    title: str = "Feature maps",
    cmap: str = "viridis",
) -> Figure:
    """The channels of one layer's output for one image (the seed's function).

    Args:
        feature_map: ``(C, H, W)`` or ``(1, C, H, W)``, e.g. ``model.get_feature_maps(x)[0]["feature_map"]``.
        max_maps: show the first ``max_maps`` channels, ``ncols`` per row, one shared colour scale.
        save_path: PNG, 1000 px wide.
    """
    fm = _one_map(feature_map, "visualize_feature_maps")[:max_maps]
    with _style():
        cols = min(ncols, fm.shape[0])
        rows = -(-fm.shape[0] // cols)
        fig = _figure(10, 0.9 + 10 / (cols + 1) * rows)
        axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
        norm = Normalize(vmin=float(fm.min()), vmax=float(fm.max()))
        im = None
        for i, ax in enumerate(axes.flat):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
            if i < fm.shape[0]:
                im = ax.imshow(fm[i], cmap=cmap, norm=norm)
                ax.set_title(f"ch {i}", fontsize=10, pad=2)
        assert im is not None  # fm has at least one channel
        fig.colorbar(im, ax=axes, shrink=0.9).set_label("Activation")
        fig.suptitle(f"{title} ({fm.shape[0]} channels of {fm.shape[1]}×{fm.shape[2]})")
    return _finish(fig, save_path)


def plot_feature_maps(
    image: np.ndarray,
    feature_maps: Sequence[Mapping[str, Any]] | Mapping[str, np.ndarray],
    save_path: PathLike | None = None,
    *,
    max_maps: int = 16,
    ncols: int = 8,
    title: str = "One test image through the network",
    cmap: str = "viridis",
) -> Figure:
    """An input image (left) and the first channels of several layers' outputs for it (one row each).

    Args:
        image: ``(C, H, W)``, ``(1, C, H, W)`` or ``(H, W)``.
        feature_maps: ``[{"layer": name, "feature_map": (C, H, W) or (1, C, H, W)}, ...]`` as returned by
            ``CNN.get_feature_maps`` (pick e.g. the output of each conv block), or ``{name: map}``.
        max_maps: channels shown per layer, ``ncols`` per row; each layer has its own colour scale.
        save_path: PNG, 1200 px wide.
    """
    if isinstance(feature_maps, Mapping):
        layers = [(str(k), _one_map(v, "plot_feature_maps")) for k, v in feature_maps.items()]
    else:
        layers = [(str(d["layer"]), _one_map(d["feature_map"], "plot_feature_maps")) for d in feature_maps]
    if not layers:
        raise CNNError("plot_feature_maps: got no feature maps, expected at least one layer")
    img = np.asarray(image, dtype=np.float64)
    img = _images_2d(img.reshape((1, *img.shape[-3:])) if img.ndim >= 3 else img[None], "plot_feature_maps")[
        0
    ]
    with _style():
        mosaics = [tile(fm[:max_maps], ncols) for _, fm in layers]
        heights = [m.shape[0] / m.shape[1] for m in mosaics]
        fig = _figure(12, 1.0 + 9.0 * sum(heights) + 0.55 * len(layers))
        grid = fig.add_gridspec(len(layers), 2, width_ratios=[1.2, 8], height_ratios=heights)
        ax_img = fig.add_subplot(grid[:, 0])
        ax_img.imshow(img, cmap="gray_r" if img.ndim == 2 else None)
        ax_img.set_title("Input")
        ax_img.set_xticks([])
        ax_img.set_yticks([])
        ax_img.spines[:].set_visible(True)
        ax_img.spines[:].set_color("0.7")
        for row, ((name, fm), mosaic) in enumerate(zip(layers, mosaics)):
            ax = fig.add_subplot(grid[row, 1])
            im = ax.imshow(mosaic, cmap=matplotlib.colormaps[cmap].with_extremes(bad="white"))
            shown = min(max_maps, fm.shape[0])
            ax.set_title(
                f"{name}: {shown} of {fm.shape[0]} channels, {fm.shape[1]}×{fm.shape[2]}", loc="left"
            )
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
            fig.colorbar(im, ax=ax, shrink=0.9, pad=0.01).set_label("Activation")
        fig.suptitle(title)
    return _finish(fig, save_path)


def _image_grid(fig: Figure, n: int, ncols: int) -> np.ndarray:
    cols = max(1, min(ncols, n))
    axes = np.atleast_2d(fig.subplots(-(-n // cols), cols, squeeze=False)).ravel()
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.spines[:].set_visible(False)
    return axes


def _mark(ax: Any, color: str) -> None:
    ax.spines[:].set_visible(True)
    ax.spines[:].set_color(color)
    ax.spines[:].set_linewidth(3)


def plot_sample_predictions(
    images: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray | Mapping[str, np.ndarray],
    save_path: PathLike | None = None,
    *,
    proba: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    ncols: int = 8,
    title: str = "Sample test predictions",
) -> Figure:
    """A grid of images titled with the true label and each model's prediction; mistakes in red.

    Args:
        images: ``(N, C, H, W)`` or ``(N, H, W)``; all ``N`` are shown, ``ncols`` per row.
        y_true: ``(N,)`` labels.
        y_pred: ``(N,)`` predictions, or ``{short model name: (N,)}`` to show several models.
        proba: ``(N, K)`` probabilities of a single model: its confidence is shown next to the label.
        save_path: PNG, 1200 px wide, 195 px per row of 8.

    A tile whose prediction (any model's) is wrong gets a red frame and red title.
    """
    x = _images_2d(images, "plot_sample_predictions")
    preds = {name: np.asarray(p) for name, p in _by_model(y_pred, "plot_sample_predictions", "pred").items()}
    t = np.asarray(y_true)
    if any(p.shape != t.shape for p in preds.values()) or t.shape != (len(x),):
        raise CNNError(f"plot_sample_predictions: need {len(x)} labels and predictions, one per image")
    label = (lambda c: str(c)) if class_names is None else (lambda c: str(class_names[c]))
    with _style():
        cols = min(ncols, len(x))
        rows = -(-len(x) // cols)
        fig = _figure(12, 0.7 + rows * (12 / cols) * 1.3)
        axes = _image_grid(fig, len(x), cols)
        wrong_total = 0
        for i, ax in enumerate(axes[: len(x)]):
            ax.imshow(x[i], cmap="gray_r" if x[i].ndim == 2 else None)
            wrong = any(p[i] != t[i] for p in preds.values())
            wrong_total += wrong
            if len(preds) == 1:
                p = next(iter(preds.values()))[i]
                conf = f" ({proba[i, p]:.0%})" if proba is not None else ""
                text = f"pred {label(p)}{conf}\ntrue {label(t[i])}"
            else:
                text = f"true {label(t[i])}\n" + " · ".join(f"{n} {label(p[i])}" for n, p in preds.items())
            ax.set_title(text, fontsize=10.5, color=WRONG_COLOR if wrong else CORRECT_COLOR, pad=3)
            if wrong:
                _mark(ax, WRONG_COLOR)
        fig.suptitle(f"{title}: {len(x) - wrong_total} of {len(x)} correct (mistakes framed in red)")
    return _finish(fig, save_path)


def plot_misclassified(
    images: np.ndarray,
    y_true: np.ndarray,
    proba: np.ndarray,
    save_path: PathLike | None = None,
    *,
    max_images: int = 24,
    ncols: int = 8,
    class_names: Sequence[str] | None = None,
    model_name: str = "model",
    indices: np.ndarray | None = None,
) -> Figure:
    """The images a model gets wrong, most confident mistakes first, with its top-2 probabilities.

    Args:
        images: ``(N, C, H, W)`` or ``(N, H, W)`` — all evaluated images; the wrong ones are picked here.
        y_true: ``(N,)`` labels.
        proba: ``(N, K)`` the model's class probabilities; prediction = argmax.
        max_images: show at most this many, sorted by the probability of the (wrong) prediction.
        indices: ``(N,)`` the images' positions in the test set, shown as ``#index`` (default ``0..N-1``).
        save_path: PNG, 1200 px wide, 195 px per row of 8.
    """
    x = _images_2d(images, "plot_misclassified")
    p = np.asarray(proba, dtype=np.float64)
    t = np.asarray(y_true)
    if p.ndim != 2 or p.shape[0] != len(x) or t.shape != (len(x),):
        raise CNNError(
            f"plot_misclassified: need (N,) labels and (N, K) probabilities for N = {len(x)} images, "
            f"got {t.shape} and {p.shape}"
        )
    idx = np.arange(len(x)) if indices is None else np.asarray(indices)
    classes, values = top_k(p, 2)
    wrong = np.flatnonzero(classes[:, 0] != t)
    order = wrong[np.argsort(-values[wrong, 0], kind="stable")][:max_images]
    label = (lambda c: str(c)) if class_names is None else (lambda c: str(class_names[c]))
    with _style():
        n = max(len(order), 1)
        cols = min(ncols, n)
        rows = -(-n // cols)
        fig = _figure(12, 1.0 + rows * (12 / cols) * 1.3)
        axes = _image_grid(fig, n, cols)
        for ax, i in zip(axes, order):
            ax.imshow(x[i], cmap="gray_r" if x[i].ndim == 2 else None)
            (c1, c2), (v1, v2) = classes[i], values[i]
            ax.set_title(f"#{idx[i]} true {label(t[i])}\n{label(c1)}: {v1:.0%}  {label(c2)}: {v2:.0%}",
                         fontsize=10.5, pad=3)  # fmt: skip
            _mark(ax, WRONG_COLOR)
        if not len(order):
            axes[0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        shown = f" — the {len(order)} most confident mistakes" if len(wrong) > len(order) else ""
        fig.suptitle(
            f"{model_name}: {len(wrong):,} of {len(x):,} images misclassified{shown}\n"
            "(title: test index, true label; top-2 predicted classes with probability)"
        )
    return _finish(fig, save_path)
