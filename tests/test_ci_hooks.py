"""The CI rule (tests/helpers/ci_skips.py): under ``CI=true`` a skip fails the run, except a test that
needs a CUDA GPU; without ``CI=true`` a skip is a skip.

Each test runs pytest on a tiny suite in a temporary directory (the ``pytester`` plugin) with the rule
enabled as a plugin, once with ``CI=true`` and once without it.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

PLUGIN = "tests.helpers.ci_skips"

TESTS = """
import pytest

def test_passes():
    pass

def test_skips_at_run_time():
    pytest.skip("the tool is not installed")

@pytest.mark.skipif(True, reason="only on another CPU")
def test_skipped_by_a_mark():
    pass

@pytest.fixture
def data():
    pytest.skip("no data to test on")

def test_skipped_by_its_fixture(data):
    pass

@pytest.mark.cuda
@pytest.mark.skipif(True, reason="needs a CUDA GPU")
def test_needs_a_gpu():
    pass

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_known_bug():
    assert False
"""

IMPORT_SKIPPED = """
import pytest

pytest.importorskip("a_package_that_is_not_installed")

def test_never_collected():
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nmarkers =\n    cuda: needs a CUDA GPU\n")
    pytester.makepyfile(test_suite=TESTS)
    return pytester


def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None) -> pytest.RunResult:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    return pytester.runpytest("-p", PLUGIN, "-rA")


def test_without_ci_a_skip_is_a_skip(suite, monkeypatch):
    result = run(suite, monkeypatch, ci=None)
    result.assert_outcomes(passed=1, skipped=4, xfailed=1)
    assert result.ret == pytest.ExitCode.OK


def test_with_ci_false_a_skip_is_a_skip(suite, monkeypatch):
    result = run(suite, monkeypatch, ci="false")
    result.assert_outcomes(passed=1, skipped=4, xfailed=1)


def test_under_ci_every_skip_but_the_gpu_one_fails_the_run(suite, monkeypatch):
    result = run(suite, monkeypatch, ci="true")
    # A skip while the test runs is a failed test; a skip in setup (mark, fixture) is an error, as any
    # failure in setup is. The GPU test still skips, and xfail is not a skip.
    result.assert_outcomes(passed=1, failed=1, errors=2, skipped=1, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.parametrize(
    ("test", "reason"),
    [
        ("test_skips_at_run_time", "the tool is not installed"),
        ("test_skipped_by_a_mark", "only on another CPU"),
        ("test_skipped_by_its_fixture", "no data to test on"),
    ],
)
def test_under_ci_the_failure_names_the_test_and_the_skip_reason(suite, monkeypatch, test, reason):
    result = run(suite, monkeypatch, ci="true")
    result.stdout.fnmatch_lines([f"*test_suite.py::{test} skipped under CI=true*: {reason}"])


def test_under_ci_the_gpu_test_keeps_its_skip(suite, monkeypatch):
    result = run(suite, monkeypatch, ci="true")
    result.stdout.fnmatch_lines(["SKIPPED *test_suite.py*needs a CUDA GPU"])


def test_under_ci_a_module_skipped_at_collection_fails_the_run(pytester, monkeypatch):
    pytester.makepyfile(test_optional=IMPORT_SKIPPED)
    result = run(pytester, monkeypatch, ci="true")
    result.assert_outcomes(errors=1)
    assert result.ret == pytest.ExitCode.INTERRUPTED  # a collection error stops the run before any test
    result.stdout.fnmatch_lines(
        ["*test_optional.py skipped at collection under CI=true*a_package_that_is_not_installed*"]
    )


def test_without_ci_a_module_skipped_at_collection_is_a_skip(pytester, monkeypatch):
    pytester.makepyfile(test_optional=IMPORT_SKIPPED)
    result = run(pytester, monkeypatch, ci=None)
    result.assert_outcomes(skipped=1)
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
