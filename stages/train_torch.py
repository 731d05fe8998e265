"""Stage ``train_torch``: train the PyTorch twin (same architecture, seed, batches) as ``params.yaml`` says.

    python -m stages.train_torch [--params params.yaml] [--no-track] [--debug]

Reads the whole ``params.yaml`` (validated first: a bad value exits 2 before any work), trains on
``<data.processed_dir>/{train,val}.npz`` and writes ``models/torch/model.pt``,
``models/torch/mlflow_run.json``, ``metrics/train_torch.json`` and ``plots/history_torch.json``; logs one
MLflow run ``<DVC exp name or "repro">-torch``. All the work is :func:`cnn.pipeline.run_train_stage`.
"""

from __future__ import annotations

from cnn.pipeline import run_train_stage, stage_main
from cnn.pipeline.stage import stage_args


def main(argv: list[str]) -> None:
    args = stage_args(argv, __doc__)
    run_train_stage("torch", args.params, track=not args.no_track)


if __name__ == "__main__":
    stage_main(main, name="train_torch")
