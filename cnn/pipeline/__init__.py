"""The experiment side of the project: glue between ``conf/`` / ``params.yaml`` and the library.

Modules, by role:

- :mod:`~cnn.pipeline.config` -- the typed schema of ``conf/`` and its validation (one-line errors).
- :mod:`~cnn.pipeline.params` -- compose ``conf/`` into ``params.yaml`` and load it back validated.
- :mod:`~cnn.pipeline.paths` -- where every stage reads and writes (the ``paths`` config group).
- :mod:`~cnn.pipeline.stage` -- ``stage_main``: how a stage runs, fails (one line) and exits.
- :mod:`~cnn.pipeline.train` -- train one framework from a config (the training stages, the sweep's jobs).
- :mod:`~cnn.pipeline.evaluate`, :mod:`~cnn.pipeline.figures`, :mod:`~cnn.pipeline.metrics`,
  :mod:`~cnn.pipeline.report`, :mod:`~cnn.pipeline.viz` -- the evaluate and plot stages' work.
- :mod:`~cnn.pipeline.tracking` -- MLflow; :mod:`~cnn.pipeline.sweep` -- the Hydra sweep's parent run.
- :mod:`~cnn.pipeline.files` -- the small JSON/text/npz outputs, written atomically.

This file only re-exports the names the stages, tests and notebooks use: ``from cnn.pipeline import
load_params, run_train_stage, stage_main``. Command line: ``python -m cnn.pipeline compose [OVERRIDE ...]``.
"""

from __future__ import annotations

from cnn.pipeline.files import write_json
from cnn.pipeline.params import compose_params, load_params
from cnn.pipeline.paths import CONFIG_DIR, CONFIG_NAME, PARAMS_FILE, PipelinePaths, model_path
from cnn.pipeline.stage import EXIT_CONFIG, EXIT_ERROR, EXIT_INTERRUPTED, stage_main
from cnn.pipeline.train import (
    TrainResult,
    optimizer_kwargs,
    run_train_stage,
    scheduler_kwargs,
    train_from_config,
)

__all__ = [
    "CONFIG_DIR",
    "CONFIG_NAME",
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "PARAMS_FILE",
    "PipelinePaths",
    "TrainResult",
    "compose_params",
    "load_params",
    "model_path",
    "optimizer_kwargs",
    "run_train_stage",
    "scheduler_kwargs",
    "stage_main",
    "train_from_config",
    "write_json",
]
