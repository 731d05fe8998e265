"""Shared fixtures. Tests that need torch skip cleanly where it is not installed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# Keep BLAS single-threaded per test unless a test asks otherwise: results stay reproducible.
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
