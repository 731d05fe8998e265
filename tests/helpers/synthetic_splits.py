"""Tiny processed splits for tests that run the training path without real MNIST."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_processed_splits(directory: Path, seed: int = 0) -> None:
    """Tiny ``train/val/test.npz`` in the processed format (x float32 (N,1,28,28), y int64) + stats.json."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 64), ("val", 30), ("test", 30)):
        y = np.arange(n, dtype=np.int64) % 10
        x = (rng.standard_normal((n, 1, 28, 28)) + 0.1 * y[:, None, None, None]).astype(np.float32)
        np.savez(directory / f"{split}.npz", x=x, y=y)
    (directory / "stats.json").write_text('{"mean": 0.0, "std": 1.0, "dataset": "synthetic"}\n')
