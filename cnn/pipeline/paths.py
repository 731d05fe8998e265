"""Where the pipeline reads and writes: the ``paths`` config group, read from the composed config.

Every output path is written once, in ``conf/paths/default.yaml``: ``dvc.yaml`` interpolates the same keys
(``${paths.models_dir}/numpy/${paths.model_files.numpy}``) and the code reads them from ``params.yaml``
through :meth:`PipelinePaths.from_config`. This module is the only one that reads
``conf/paths/default.yaml`` itself, for :class:`PipelinePaths` built without a config (tests, notebooks).

Layout (relative to the repository root by default)::

    <data.processed_dir>/test.npz, stats.json           the processed splits (data group)
    <models_dir>/<fw>/<model_files[fw]>, <run_pointer>  trained models and their MLflow runs
    <metrics_dir>/<train_metrics[fw]>, <evaluate_metrics>
    <plots_dir>/<history[fw]>, <confusion[fw]>          DVC plot data
    <reports_dir>/<predictions>, <disagreements>, <comparison>, <per_class>, <figures_dir>/<figure>.png
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIG_DIR",
    "CONFIG_NAME",
    "PARAMS_FILE",
    "PATHS_FILE",
    "PipelinePaths",
    "checkpoint_path",
    "default_paths",
    "model_path",
]

#: The composed config every stage reads (DVC's default params file).
PARAMS_FILE = "params.yaml"
#: Where the Hydra configs live and the primary config's name; equal to ``.dvc/config``'s ``hydra`` section.
CONFIG_DIR = "conf"
CONFIG_NAME = "config"
#: The ``paths`` group's defaults, read by :func:`default_paths` (the checkout's ``conf/``).
PATHS_FILE = Path(__file__).resolve().parents[2] / CONFIG_DIR / "paths" / "default.yaml"


@functools.cache
def default_paths() -> dict[str, Any]:
    """``conf/paths/default.yaml`` as a dict: the paths of a config composed without overrides."""
    import yaml

    return dict(yaml.safe_load(PATHS_FILE.read_text(encoding="utf-8")))


@dataclass(frozen=True)
class PipelinePaths:
    """The files the evaluate and plot stages read and write (the training stages use the same keys).

    ``processed_dir`` comes from ``data.processed_dir``; the ``*_dir`` fields are folders (a ``Path`` or
    str), the others file names inside them, per framework where a dict. Unset fields take the values of
    ``conf/paths/default.yaml``.
    """

    processed_dir: Path
    models_dir: Path = field(default_factory=lambda: default_paths()["models_dir"])
    metrics_dir: Path = field(default_factory=lambda: default_paths()["metrics_dir"])
    plots_dir: Path = field(default_factory=lambda: default_paths()["plots_dir"])
    reports_dir: Path = field(default_factory=lambda: default_paths()["reports_dir"])
    figures_name: str = field(default_factory=lambda: default_paths()["figures_dir"])
    model_files: Mapping[str, str] = field(default_factory=lambda: default_paths()["model_files"])
    run_pointer_name: str = field(default_factory=lambda: default_paths()["run_pointer"])
    train_metrics_files: Mapping[str, str] = field(default_factory=lambda: default_paths()["train_metrics"])
    evaluate_metrics_name: str = field(default_factory=lambda: default_paths()["evaluate_metrics"])
    history_files: Mapping[str, str] = field(default_factory=lambda: default_paths()["history"])
    confusion_files: Mapping[str, str] = field(default_factory=lambda: default_paths()["confusion"])
    predictions_name: str = field(default_factory=lambda: default_paths()["predictions"])
    disagreements_name: str = field(default_factory=lambda: default_paths()["disagreements"])
    comparison_name: str = field(default_factory=lambda: default_paths()["comparison"])
    per_class_name: str = field(default_factory=lambda: default_paths()["per_class"])

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name.endswith("_dir"):
                object.__setattr__(self, f.name, Path(getattr(self, f.name)))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> PipelinePaths:
        """The paths of a validated config: its ``paths`` group and ``data.processed_dir``."""
        p = cfg["paths"]
        return cls(
            processed_dir=Path(cfg["data"]["processed_dir"]),
            models_dir=Path(p["models_dir"]),
            metrics_dir=Path(p["metrics_dir"]),
            plots_dir=Path(p["plots_dir"]),
            reports_dir=Path(p["reports_dir"]),
            figures_name=p["figures_dir"],
            model_files=dict(p["model_files"]),
            run_pointer_name=p["run_pointer"],
            train_metrics_files=dict(p["train_metrics"]),
            evaluate_metrics_name=p["evaluate_metrics"],
            history_files=dict(p["history"]),
            confusion_files=dict(p["confusion"]),
            predictions_name=p["predictions"],
            disagreements_name=p["disagreements"],
            comparison_name=p["comparison"],
            per_class_name=p["per_class"],
        )

    @property
    def test(self) -> Path:
        return self.processed_dir / "test.npz"

    @property
    def stats(self) -> Path:
        return self.processed_dir / "stats.json"

    def model(self, fw: str) -> Path:
        return self.models_dir / fw / self.model_files[fw]

    def run_pointer(self, fw: str) -> Path:
        return self.models_dir / fw / self.run_pointer_name

    def train_metrics(self, fw: str) -> Path:
        return self.metrics_dir / self.train_metrics_files[fw]

    @property
    def evaluate_metrics(self) -> Path:
        return self.metrics_dir / self.evaluate_metrics_name

    def history(self, fw: str) -> Path:
        return self.plots_dir / self.history_files[fw]

    def confusion(self, fw: str) -> Path:
        return self.plots_dir / self.confusion_files[fw]

    @property
    def predictions(self) -> Path:
        return self.reports_dir / self.predictions_name

    @property
    def disagreements(self) -> Path:
        return self.reports_dir / self.disagreements_name

    @property
    def comparison(self) -> Path:
        return self.reports_dir / self.comparison_name

    @property
    def per_class(self) -> Path:
        return self.reports_dir / self.per_class_name

    @property
    def figures_dir(self) -> Path:
        return self.reports_dir / self.figures_name

    def figure(self, name: str) -> Path:
        return self.figures_dir / f"{name}.png"


def model_path(
    framework: str, models_dir: str | os.PathLike[str] | None = None, cfg: Mapping[str, Any] | None = None
) -> Path:
    """``<models_dir>/<framework>/<model file>`` (``models/numpy/model.npz``) from ``cfg``'s ``paths``
    group, or ``conf/paths/default.yaml`` without one; ``models_dir`` replaces ``paths.models_dir``."""
    p = cfg["paths"] if cfg is not None else default_paths()
    return (
        Path(models_dir if models_dir is not None else p["models_dir"])
        / framework
        / p["model_files"][framework]
    )


def checkpoint_path(cfg: Mapping[str, Any], train: Mapping[str, Any], framework: str) -> Path:
    """The resume checkpoint: ``<train.checkpoint_dir>/<framework>/<paths.checkpoint_files[framework]>``."""
    return Path(train["checkpoint_dir"]) / framework / cfg["paths"]["checkpoint_files"][framework]
