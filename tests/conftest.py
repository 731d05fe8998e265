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
