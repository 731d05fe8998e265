"""``hydra/launcher=ray_cluster``: sweep jobs on a running Ray cluster (the work is in cnn.pipeline.cluster).

Hydra imports every module under ``hydra_plugins`` on each start, so this one imports nothing heavy: Ray,
the ``hydra-ray-launcher`` plugin and MLflow load only when a sweep launches its jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class RayClusterLauncher(Launcher):
    """Joins the Ray cluster and runs each job as one Ray task; see :mod:`cnn.pipeline.cluster`."""

    def __init__(self, ray: DictConfig, data: DictConfig | None = None) -> None:
        self.ray_cfg = ray
        self.data_cfg = data
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.state: dict[str, Any] = {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from cnn.pipeline.cluster import launch

        return launch(self, job_overrides, initial_job_idx)
