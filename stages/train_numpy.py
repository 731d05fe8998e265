"""Stage ``train_numpy``: train the from-scratch NumPy CNN as ``params.yaml`` says.

    python -m stages.train_numpy [--debug]

Reads the whole ``params.yaml`` (validated first: a bad value exits 2 before any work), trains on
``<data.processed_dir>/{train,val}.npz`` and writes ``models/numpy/model.npz``,
``models/numpy/mlflow_run.json``, ``metrics/train_numpy.json`` and ``plots/history_numpy.json``; logs one
MLflow run ``<DVC exp name or "repro">-numpy``. All the work is :func:`cnn.pipeline.run_train_stage`.
"""

from __future__ import annotations

from cnn.pipeline import run_train_stage, stage_main


def main() -> None:
    run_train_stage("numpy")


if __name__ == "__main__":
    stage_main(main, name="train_numpy")
