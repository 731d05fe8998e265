"""``import cnn`` picks OpenBLAS's kernels for the CPU before NumPy loads them (cnn.blas)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnn.blas import AUTO_ENV, CORETYPE_ENV, preferred_openblas_coretype

ROOT = Path(__file__).resolve().parents[1]


def cpuinfo(vendor: str, family: int, flags: str) -> str:
    """Two processors' blocks of ``/proc/cpuinfo``."""
    block = "processor\t: {}\nvendor_id\t: " + vendor + f"\ncpu family\t: {family}\nmodel\t\t: 17\n"
    block += f"flags\t\t: {flags}\n"
    return block.format(0) + "\n" + block.format(1)


ZEN4 = cpuinfo("AuthenticAMD", 25, "fpu sse2 avx avx2 fma avx512f avx512dq avx512bw")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ZEN4, "Haswell"),  # Zen 4: OpenBLAS would pick its SkylakeX AVX-512 kernels
        (cpuinfo("AuthenticAMD", 25, "fpu sse2 avx avx2 fma"), None),  # Zen 3: OpenBLAS already uses AVX2
        (cpuinfo("AuthenticAMD", 26, "avx2 fma avx512f"), None),  # Zen 5: full-width AVX-512, not measured
        (cpuinfo("GenuineIntel", 6, "avx2 fma avx512f"), None),
        ("", None),
        ("garbage without colons\n", None),
    ],
)
def test_the_avx2_kernels_are_preferred_only_on_zen4(text, expected):
    assert preferred_openblas_coretype(text) == expected


def run_python(code: str, **env: str | None) -> str:
    """Run ``code`` in a fresh interpreter with the repository on the path; ``None`` unsets a variable."""
    environ = {k: v for k, v in os.environ.items() if k not in (CORETYPE_ENV, AUTO_ENV)}
    environ["PYTHONPATH"] = str(ROOT)
    for key, value in env.items():
        if value is not None:
            environ[key] = value
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, check=True
    )
    return out.stdout.strip()


SHOW = "import os; print(os.environ.get('OPENBLAS_CORETYPE'))"


def test_importing_cnn_first_sets_the_preferred_kernels_for_this_cpu():
    assert run_python("import cnn; " + SHOW) == str(preferred_openblas_coretype())


def test_nothing_is_changed_when_numpy_was_imported_first_or_the_user_chose():
    assert run_python("import numpy; import cnn; " + SHOW) == "None"
    assert run_python("import cnn; " + SHOW, **{AUTO_ENV: "0"}) == "None"
    assert run_python("import cnn; " + SHOW, **{CORETYPE_ENV: "Zen"}) == "Zen"


@pytest.mark.skipif(preferred_openblas_coretype() is None, reason="only Zen 4 CPUs get other kernels")
def test_numpy_runs_on_the_chosen_kernels_here():
    code = "import cnn; from cnn.blas import openblas_kernels; print(openblas_kernels())"
    assert run_python(code) == preferred_openblas_coretype()
    assert run_python(code, **{AUTO_ENV: "0"}) != preferred_openblas_coretype()


def test_the_preferred_environment_for_a_child_process_respects_the_same_switches():
    from cnn.blas import preferred_environment

    assert preferred_environment({"PATH": "/bin"}) == {
        "PATH": "/bin",
        **({CORETYPE_ENV: preferred_openblas_coretype()} if preferred_openblas_coretype() else {}),
    }
    assert preferred_environment({AUTO_ENV: "0"}) == {AUTO_ENV: "0"}
    assert preferred_environment({CORETYPE_ENV: "Zen"}) == {CORETYPE_ENV: "Zen"}
