"""``import cnn`` picks OpenBLAS's kernels for the CPU before NumPy loads them (cnn.blas).

The choice is a pure function of the CPU's facts (vendor, family, flags), so every case is tested here
whatever CPU runs the tests: the facts are injected, never read from this machine."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from cnn.blas import (
    AUTO_ENV,
    CORETYPE_ENV,
    CpuFacts,
    KernelChoiceWarning,
    coretype_to_set,
    preferred_environment,
    preferred_openblas_coretype,
    read_cpu_facts,
)

ROOT = Path(__file__).resolve().parents[1]

ZEN4 = CpuFacts("AuthenticAMD", 25, frozenset({"avx2", "fma", "avx512f", "avx512dq", "avx512bw"}))
ZEN3 = CpuFacts("AuthenticAMD", 25, frozenset({"avx2", "fma"}))
ZEN5 = CpuFacts("AuthenticAMD", 26, frozenset({"avx2", "fma", "avx512f"}))
INTEL_AVX512 = CpuFacts("GenuineIntel", 6, frozenset({"avx2", "fma", "avx512f"}))
INTEL_AVX2 = CpuFacts("GenuineIntel", 6, frozenset({"avx2", "fma"}))
UNKNOWN = CpuFacts()


def cpuinfo(cpu: CpuFacts) -> str:
    """Two processors' blocks of ``/proc/cpuinfo`` for ``cpu``."""
    block = f"processor\t: {{}}\nvendor_id\t: {cpu.vendor}\ncpu family\t: {cpu.family}\nmodel\t\t: 17\n"
    block += "flags\t\t: fpu sse2 " + " ".join(sorted(cpu.flags)) + "\n"
    return block.format(0) + "\n" + block.format(1)


@pytest.mark.parametrize(
    ("cpu", "expected"),
    [
        (ZEN4, "Haswell"),  # Zen 4: OpenBLAS would pick its SkylakeX AVX-512 kernels
        (ZEN3, None),  # family 25 without AVX-512: OpenBLAS already uses AVX2
        (ZEN5, None),  # full-width AVX-512: SkylakeX measured faster than Haswell (docs/library.md)
        (INTEL_AVX512, None),
        (INTEL_AVX2, None),
        (UNKNOWN, None),
    ],
    ids=["zen4", "zen3", "zen5", "intel-avx512", "intel-avx2", "unknown"],
)
def test_the_avx2_kernels_are_preferred_only_on_zen4(cpu, expected):
    assert preferred_openblas_coretype(cpu) == expected
    assert preferred_openblas_coretype(cpuinfo(cpu)) == expected  # the same facts, read from text


def test_cpu_facts_are_read_from_the_first_processor_of_proc_cpuinfo(tmp_path):
    assert CpuFacts.parse(cpuinfo(ZEN4)).vendor == "AuthenticAMD"
    assert CpuFacts.parse(cpuinfo(ZEN4)).family == 25
    assert {"avx512f", "avx2", "sse2"} <= CpuFacts.parse(cpuinfo(ZEN4)).flags
    assert CpuFacts.parse("") == CpuFacts.parse("garbage without colons\n") == UNKNOWN
    assert CpuFacts.parse("cpu family\t: not a number\n").family == -1
    (tmp_path / "cpuinfo").write_text(cpuinfo(INTEL_AVX512))
    assert read_cpu_facts(tmp_path / "cpuinfo").vendor == "GenuineIntel"
    assert read_cpu_facts(tmp_path / "missing") == UNKNOWN  # no /proc/cpuinfo: OpenBLAS decides


@pytest.mark.parametrize("cpu", [ZEN4, ZEN5, INTEL_AVX512], ids=["zen4", "zen5", "intel-avx512"])
def test_a_preset_coretype_or_the_opt_out_is_never_overridden(cpu):
    preferred = preferred_openblas_coretype(cpu)
    assert coretype_to_set({}, cpu) == preferred
    assert coretype_to_set({CORETYPE_ENV: "Zen"}, cpu) is None
    assert coretype_to_set({AUTO_ENV: "0"}, cpu) is None
    assert coretype_to_set({AUTO_ENV: "1"}, cpu) == preferred


def test_the_preferred_environment_for_a_child_process_respects_the_same_switches():
    assert preferred_environment({"PATH": "/bin"}, ZEN4) == {"PATH": "/bin", CORETYPE_ENV: "Haswell"}
    assert preferred_environment({"PATH": "/bin"}, ZEN5) == {"PATH": "/bin"}
    assert preferred_environment({AUTO_ENV: "0"}, ZEN4) == {AUTO_ENV: "0"}
    assert preferred_environment({CORETYPE_ENV: "Zen"}, ZEN4) == {CORETYPE_ENV: "Zen"}


def test_importing_numpy_first_on_a_cpu_that_gets_other_kernels_warns_what_is_lost(monkeypatch):
    from cnn.blas import select_openblas_kernels

    monkeypatch.delenv(CORETYPE_ENV, raising=False)
    monkeypatch.delenv(AUTO_ENV, raising=False)
    assert "numpy" in sys.modules  # as in a notebook that imported NumPy before cnn
    with pytest.warns(KernelChoiceWarning, match="import cnn before numpy, or set OPENBLAS_CORETYPE=Haswell"):
        assert select_openblas_kernels(ZEN4) is None
    assert CORETYPE_ENV not in os.environ  # too late to take effect: nothing is set


@pytest.mark.parametrize(
    ("cpu", "env"),
    [(ZEN5, {}), (INTEL_AVX512, {}), (ZEN4, {AUTO_ENV: "0"}), (ZEN4, {CORETYPE_ENV: "SkylakeX"})],
    ids=["zen5", "intel-avx512", "zen4-opted-out", "zen4-user-chose"],
)
def test_importing_numpy_first_is_silent_where_nothing_is_lost(monkeypatch, cpu, env):
    from cnn.blas import select_openblas_kernels

    monkeypatch.delenv(CORETYPE_ENV, raising=False)
    monkeypatch.delenv(AUTO_ENV, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_openblas_kernels(cpu) is None


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
KERNELS = "from cnn.blas import openblas_kernels; print(openblas_kernels())"
# Loads cnn/blas.py on its own (standard library only, so NumPy stays unloaded) and lets it decide for
# an injected Zen 4 before ``import cnn``: the whole chain, facts -> variable -> OpenBLAS, on any CPU.
AS_IF_ZEN4 = (
    "import importlib.util, sys; "
    f"spec = importlib.util.spec_from_file_location('blas_alone', {str(ROOT / 'cnn' / 'blas.py')!r}); "
    "blas = importlib.util.module_from_spec(spec); sys.modules['blas_alone'] = blas; "
    "spec.loader.exec_module(blas); "
    "blas.select_openblas_kernels(blas.CpuFacts('AuthenticAMD', 25, frozenset({'avx512f'}))); "
    "import cnn; "
)


def test_importing_cnn_first_sets_the_preferred_kernels_for_this_cpu():
    assert run_python("import cnn; " + SHOW) == str(preferred_openblas_coretype())


def test_nothing_is_changed_when_numpy_was_imported_first_or_the_user_chose():
    assert run_python("import numpy; import cnn; " + SHOW) == "None"
    assert run_python("import cnn; " + SHOW, **{AUTO_ENV: "0"}) == "None"
    assert run_python("import cnn; " + SHOW, **{CORETYPE_ENV: "Zen"}) == "Zen"


@pytest.mark.skipif(sys.platform != "linux", reason="OpenBLAS core types are chosen from /proc/cpuinfo")
def test_numpy_runs_on_the_kernels_chosen_for_an_injected_zen4():
    assert run_python(AS_IF_ZEN4 + SHOW) == "Haswell"
    assert run_python(AS_IF_ZEN4 + KERNELS) == "Haswell"
    # Opting out leaves OpenBLAS's own choice for this CPU, the one it makes with NumPy imported first.
    own_choice = run_python("import numpy; " + KERNELS)
    assert run_python(AS_IF_ZEN4 + KERNELS, **{AUTO_ENV: "0"}) == own_choice
