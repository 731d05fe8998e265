"""Under ``CI=true`` a skipped test is a failed test: a suite cannot pass vacuously.

A test that skips in CI (a missing package, a missing tool, an input that could not be fetched) proves
nothing, yet it leaves the run green. This pytest plugin turns every skip into a failure whose message
names the test and the skip reason, when the environment has ``CI=true``:

- skips while a test runs (``pytest.skip``, ``pytest.importorskip`` inside a test or a fixture) and
  ``skip`` / ``skipif`` marks become failed tests (a skip in setup is reported as an error, as any
  failure in setup is);
- skips while a module is collected (a module-level ``pytest.importorskip``) become collection errors.

The one exception: tests marked ``cuda`` (tests/test_torch_cuda.py) may skip, because CI machines have no
GPU. ``xfail`` is not a skip and is left alone. Without ``CI=true`` nothing changes.

tests/conftest.py enables it for the suite; ``pytest -p tests.helpers.ci_skips`` enables it anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

ALLOWED_MARKER = "cuda"


def in_ci() -> bool:
    """True when the environment says this is a CI run (``CI=true``, as CI services set it)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason a skipped report gives, without pytest's ``Skipped: `` prefix."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and in_ci()
        and item.get_closest_marker(ALLOWED_MARKER) is None
    ):
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} skipped under CI=true, and only tests marked '{ALLOWED_MARKER}' may skip in CI: "
            f"{skip_reason(report)}"
        )
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    if report.skipped and in_ci():
        report.outcome = "failed"
        report.longrepr = (
            f"{collector.nodeid} skipped at collection under CI=true, and only tests marked "
            f"'{ALLOWED_MARKER}' may skip in CI: {skip_reason(report)}"
        )
    return report
