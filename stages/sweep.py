"""Hydra sweeps over ``conf/``: each job trains and evaluates one framework in process.

    python -m stages.sweep                                              # one job, as conf/ says
    python -m stages.sweep -m optimizer.lr=1e-3,3e-4 train.framework=numpy,torch
    python -m stages.sweep -m experiment=smoke train.framework=numpy,torch hydra/launcher=joblib
    python -m stages.sweep -m hydra/sweeper=optuna_cnn                  # Optuna TPE over conf/hydra/sweeper

Not a DVC stage (DVC stages read ``params.yaml``); this is the in-process way to explore configs. Each
job trains ``train.framework`` on ``data.processed_dir``'s splits (run ``dvc repro preprocess`` first)
into its own output directory (``multirun/<date>/<time>/<job>/``), logs an MLflow run
``<sweep>-<job>-<framework>`` under the sweep's parent run, adds ``test_accuracy`` / ``test_loss`` to it
and returns the final validation accuracy, the value Optuna maximises. With ``hydra/launcher=joblib`` and
``train.threads`` unset, each job gets ``cpu_count // n_jobs`` threads. All the work is
:mod:`cnn.pipeline.sweep`.

Exit codes as for the DVC stages (:func:`cnn.pipeline.stage_main`): 2 bad config, 1 other clear error
(one line), 130 interrupted.
"""

from __future__ import annotations

from typing import Any, cast

import hydra
from omegaconf import DictConfig, OmegaConf

from cnn.pipeline import stage_main
from cnn.pipeline.sweep import run_job, run_sweep


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def sweep_app(cfg: DictConfig) -> float:
    """The Hydra task: one job = one framework trained and evaluated."""
    return run_job(cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True)))


def main(argv: list[str]) -> None:
    run_sweep(sweep_app, argv)


if __name__ == "__main__":
    stage_main(main, name="sweep")
