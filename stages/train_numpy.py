"""Stage ``train_numpy``: train the from-scratch NumPy CNN as ``params.yaml`` says.

    python -m stages.train_numpy [--params params.yaml] [--no-track] [--debug]

Reads the whole ``params.yaml`` (validated first: a bad value exits 2 before any work), trains on
``<data.processed_dir>/{train,val}.npz`` and writes ``models/numpy/model.npz``,
``models/numpy/mlflow_run.json``, ``metrics/train_numpy.json`` and ``plots/history_numpy.json``; logs one
MLflow run ``<DVC exp name or "repro">-numpy``. All the work is :func:`cnn.pipeline.run_train_stage`.
"""

from __future__ import annotations

from cnn.pipeline import run_train_stage, stage_main
from cnn.pipeline.stage import stage_args


def main(argv: list[str]) -> None:
    args = stage_args(argv, __doc__)
    run_train_stage("numpy", args.params, track=not args.no_track)


if __name__ == "__main__":
    stage_main(main, name="train_numpy")
