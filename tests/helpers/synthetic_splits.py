"""Tiny processed splits for tests that run the training path without real MNIST."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SIZES = {"train": 64, "val": 30, "test": 30}
# The data params these splits answer to: a sweep job checks its splits against its own data params
# (cnn.pipeline.splits.ensure_splits), so sweep tests pass these overrides along with data.processed_dir.
TINY_DATA_OVERRIDES = tuple(f"data.{split}_size={n}" for split, n in SIZES.items())


def write_processed_splits(directory: Path, seed: int = 0) -> None:
    """Tiny ``train/val/test.npz`` in the processed format (x float32 (N,1,28,28), y int64) + stats.json.

    ``stats.json`` describes them as the preprocess stage would: mnist-shaped splits of ``SIZES`` images
    drawn with seed 0 (``TINY_DATA_OVERRIDES``), normalised with mean 0 and std 1.
    """
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in SIZES.items():
        y = np.arange(n, dtype=np.int64) % 10
        x = (rng.standard_normal((n, 1, 28, 28)) + 0.1 * y[:, None, None, None]).astype(np.float32)
        np.savez(directory / f"{split}.npz", x=x, y=y)
    stats = {
        "mean": 0.0,
        "std": 1.0,
        "dataset": "mnist",
        "seed": 0,
        "sizes": SIZES,
        "requested": {f"{split}_size": n for split, n in SIZES.items()},
    }
    (directory / "stats.json").write_text(json.dumps(stats) + "\n")
