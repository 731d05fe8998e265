"""Small generated MNIST-like datasets as raw IDX files, and the spec that pins them (data tests)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from cnn.data import IDX_FILES, DatasetSpec, RawDataset, sha256_file, write_idx

# Unequal classes, as in MNIST (class 1 is the largest there too).
CLASS_SIZES = np.array([50, 70, 55, 60, 52, 45, 58, 65, 48, 57])


def make_raw(rng: np.random.Generator, n_test: int = 100, side: int = 28) -> RawDataset:
    """A small MNIST-like dataset: labels with unequal class sizes, random uint8 images whose brightness
    grows with the image index (so subsets drawn from different places have different statistics)."""
    train_labels = rng.permutation(np.repeat(np.arange(10), CLASS_SIZES)).astype(np.uint8)
    n_train = len(train_labels)
    level = np.linspace(0, 200, n_train)[:, None, None]
    train_images = (level + rng.integers(0, 56, size=(n_train, side, side))).astype(np.uint8)
    test_labels = np.arange(n_test, dtype=np.uint8) % 10
    test_images = rng.integers(0, 256, size=(n_test, side, side), dtype=np.uint8)
    return RawDataset(train_images, train_labels, test_images, test_labels)


def write_raw(directory: Path, raw: RawDataset, gz: bool = False) -> dict[str, Path]:
    """Write ``raw`` as the four IDX files (optionally .gz); returns file name -> path."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = dict(zip(IDX_FILES, (raw.train_images, raw.train_labels, raw.test_images, raw.test_labels)))
    paths = {}
    for name, array in arrays.items():
        path = write_idx(directory / name, array)
        if gz:
            path = path.with_name(name + ".gz")
            path.write_bytes(gzip.compress((directory / name).read_bytes()))
            (directory / name).unlink()
        paths[name] = path
    return paths


def spec_for(directory: Path, name: str = "tiny") -> DatasetSpec:
    """A DatasetSpec pinning the digests and sizes of the (uncompressed) IDX files in ``directory``."""
    return DatasetSpec(
        name=name,
        title="Tiny",
        sha256={f: sha256_file(directory / f) for f in IDX_FILES},
        sizes={f: (directory / f).stat().st_size for f in IDX_FILES},
    )
