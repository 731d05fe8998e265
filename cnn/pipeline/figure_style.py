"""The house style of every figure in :mod:`cnn.pipeline.viz`: size and DPI, colours, fonts, the Agg canvas
(no ``pyplot``, no GUI backend), atomic PNG output, and the small input checks the figures share."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cnn.atomic import atomic_open
from cnn.errors import CNNError

DPI = 100
"""Dots per inch of every saved PNG."""

CORRECT_COLOR = "#1a7f37"
WRONG_COLOR = "#cf222e"
MODEL_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")

_STYLE = {
    "font.size": 12,
    "axes.titlesize": 13,
    "axes.labelsize": 12,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
    "legend.fontsize": 11,
    "figure.titlesize": 15,
    "figure.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "grid.alpha": 0.3,
    "image.interpolation": "nearest",
}

PathLike = str | os.PathLike


@contextmanager
def style() -> Iterator[None]:
    with matplotlib.rc_context(_STYLE):  # type: ignore[arg-type]  # matplotlib types rc keys as literals
        yield


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # attach the Agg canvas: savefig never looks for a GUI backend
    return fig


def save_figure(fig: Figure, save_path: PathLike) -> Path:
    """Write ``fig`` as a PNG at ``save_path`` atomically (parents created); return the path."""
    with atomic_open(save_path) as fh:
        fig.savefig(fh, format="png", dpi=DPI)
    return Path(save_path)


def finish(fig: Figure, save_path: PathLike | None) -> Figure:
    if save_path is not None:
        save_figure(fig, save_path)
    return fig


def by_model(value: Any, what: str, default_name: str = "model") -> dict[str, Any]:
    """``{name: value}``: a mapping is kept (must be non-empty), anything else becomes one entry."""
    if isinstance(value, Mapping):
        if not value:
            raise CNNError(f"{what}: got an empty mapping, expected at least one model")
        return dict(value)
    return {default_name: value}


def images_2d(images: np.ndarray, what: str) -> np.ndarray:
    """``(N, H, W)`` or ``(N, H, W, 3)`` for imshow from ``(N, C, H, W)`` (C = 1 or 3) or ``(N, H, W)``."""
    x = np.asarray(images)
    if x.ndim == 3:
        return x
    if x.ndim == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.ndim == 4 and x.shape[1] == 3:
        # Per-image min-max to [0, 1]: inputs are normalised (zero mean), RGB imshow needs [0, 1].
        lo = x.min(axis=(1, 2, 3), keepdims=True)
        hi = x.max(axis=(1, 2, 3), keepdims=True)
        return np.transpose((x - lo) / np.maximum(hi - lo, 1e-12), (0, 2, 3, 1))
    raise CNNError(f"{what}: images must be (N, C, H, W) with C in (1, 3) or (N, H, W), got shape {x.shape}")


def tile(maps: np.ndarray, ncols: int, pad: int = 1) -> np.ndarray:
    """Lay out ``(N, h, w)`` maps row-major on a grid of ``ncols`` columns, separated by ``pad`` NaNs.

    Returns a float ``(rows*(h+pad)-pad, ncols*(w+pad)-pad)`` mosaic, ``rows = ceil(N / ncols)``;
    unused cells and gaps are NaN, which colormaps draw in their "bad" colour (white here). One
    ``imshow`` of the mosaic is much faster than one axes per map, and gives one shared colour scale.
    """
    m = np.asarray(maps, dtype=np.float64)
    if m.ndim != 3 or m.shape[0] == 0:
        raise CNNError(f"tile: maps must be a non-empty (N, h, w) stack, got shape {m.shape}")
    n, h, w = m.shape
    ncols = max(1, min(ncols, n))
    rows = -(-n // ncols)
    out = np.full((rows * (h + pad) - pad, ncols * (w + pad) - pad), np.nan)
    for i in range(n):
        r, c = divmod(i, ncols)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = m[i]
    return out
