"""Which OpenBLAS kernels NumPy's matrix products run on: chosen for this CPU before NumPy loads them.

Most of a training step is spent in ``np.matmul`` (the convolutions' GEMMs), i.e. in the OpenBLAS that
NumPy bundles. OpenBLAS picks its kernels once, when it is loaded, from the CPU it finds. On AMD Zen 4
(CPU family 25 with AVX-512) it picks its Intel ``SkylakeX`` AVX-512 kernels, but Zen 4 executes
AVX-512 as two 256-bit halves, and OpenBLAS's AVX2 ``Haswell`` kernels ran this library's GEMM shapes
faster (``benchmarks/train_throughput.py --numpy-blas both`` measures the whole training step both ways;
figures in ``docs/library.md``).

``import cnn`` therefore sets ``OPENBLAS_CORETYPE=Haswell`` on such CPUs, which takes effect only when
NumPy has not been imported yet (import ``cnn`` first, or set the variable yourself). When NumPy came
first on such a CPU, ``import cnn`` says so once (a :class:`KernelChoiceWarning`) instead of losing the
speed silently. It never overrides an ``OPENBLAS_CORETYPE`` that is already set, and
``CNN_OPENBLAS_AUTO=0`` turns it (and the warning) off. The variable is inherited by child processes (DVC
stages, benchmark workers), which then make the same choice. On other CPUs nothing is set and nothing
depends on the import order: on AMD Zen 5 (family 26, full-width AVX-512) OpenBLAS's own ``SkylakeX``
kernels measured faster than ``Haswell``, and Intel CPUs keep OpenBLAS's choice.

The decision is a pure function of :class:`CpuFacts` (vendor, family, flags), read from
``/proc/cpuinfo`` by :func:`read_cpu_facts` and injectable everywhere, so every case is testable on any
CPU. Standard library only: this module runs before NumPy is imported.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

AUTO_ENV = "CNN_OPENBLAS_AUTO"
CORETYPE_ENV = "OPENBLAS_CORETYPE"


class KernelChoiceWarning(RuntimeWarning):
    """``import cnn`` came after NumPy on a CPU where it would have chosen other OpenBLAS kernels."""


@dataclass(frozen=True)
class CpuFacts:
    """What the kernel choice depends on: the CPU's vendor (``vendor_id``), family and feature flags."""

    vendor: str = ""
    family: int = -1
    flags: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, cpuinfo: str) -> CpuFacts:
        """The facts of the first processor in ``/proc/cpuinfo`` text (defaults for what is missing)."""
        vendor, family, flags = "", -1, frozenset[str]()
        for line in cpuinfo.splitlines():
            if not line.strip():
                break  # the end of the first processor's block
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "vendor_id":
                vendor = value
            elif key == "cpu family":
                try:
                    family = int(value)
                except ValueError:
                    pass
            elif key == "flags":
                flags = frozenset(value.split())
        return cls(vendor, family, flags)


def read_cpu_facts(path: str | os.PathLike[str] = "/proc/cpuinfo") -> CpuFacts:
    """This machine's :class:`CpuFacts`, read from ``/proc/cpuinfo`` (unknown facts off Linux)."""
    try:
        return CpuFacts.parse(Path(path).read_text(errors="replace"))
    except OSError:
        return CpuFacts()


def preferred_openblas_coretype(cpu: CpuFacts | str | None = None) -> str | None:
    """``"Haswell"`` on AMD Zen 4 (vendor AuthenticAMD, CPU family 25, AVX-512), else None (OpenBLAS's
    own choice is kept). A pure function of ``cpu``: :class:`CpuFacts`, the text of ``/proc/cpuinfo``,
    or None for this machine's (:func:`read_cpu_facts`)."""
    if cpu is None:
        cpu = read_cpu_facts()
    elif isinstance(cpu, str):
        cpu = CpuFacts.parse(cpu)
    if cpu.vendor == "AuthenticAMD" and cpu.family == 25 and "avx512f" in cpu.flags:
        return "Haswell"
    return None


def coretype_to_set(environ: Mapping[str, str], cpu: CpuFacts | None = None) -> str | None:
    """The ``OPENBLAS_CORETYPE`` to add to ``environ``: :func:`preferred_openblas_coretype` of ``cpu``
    (None: this machine), unless the variable is already set or ``CNN_OPENBLAS_AUTO`` is ``0``."""
    if environ.get(AUTO_ENV, "1").strip() == "0" or environ.get(CORETYPE_ENV):
        return None
    return preferred_openblas_coretype(cpu)


def select_openblas_kernels(cpu: CpuFacts | None = None) -> str | None:
    """Set ``OPENBLAS_CORETYPE`` to :func:`preferred_openblas_coretype` of ``cpu`` (None: this machine)
    when that can still take effect (NumPy not imported yet), the variable is unset and
    ``CNN_OPENBLAS_AUTO`` is not ``0``.

    Returns the core type set, or None when nothing was changed. When NumPy is loaded already and the
    variable would have been set, warns once (:class:`KernelChoiceWarning`): OpenBLAS keeps its own
    kernels for this process, which on AMD Zen 4 measured ~8% slower training at batch 128."""
    coretype = coretype_to_set(os.environ, cpu)
    if "numpy" in sys.modules:
        if coretype is not None:
            warnings.warn(
                f"NumPy was imported before cnn, so OpenBLAS keeps its own AVX-512 kernels on this CPU "
                f"instead of the {coretype} kernels cnn picks for it (training measured ~8% slower at "
                f"batch 128 on AMD Zen 4); import cnn before numpy, or set {CORETYPE_ENV}={coretype} "
                f"before Python starts ({AUTO_ENV}=0 silences this)",
                KernelChoiceWarning,
                stacklevel=2,
            )
        return None
    if coretype is not None:
        os.environ[CORETYPE_ENV] = coretype
    return coretype


def preferred_environment(
    environ: Mapping[str, str] | None = None, cpu: CpuFacts | None = None
) -> dict[str, str]:
    """``environ`` (default ``os.environ``) plus the ``OPENBLAS_CORETYPE`` that ``import cnn`` would set,
    for starting a process that imports NumPy before ``cnn`` (benchmarks, workers). Unchanged when the
    variable is set, ``CNN_OPENBLAS_AUTO=0``, or the CPU (``cpu``; None: this machine) keeps OpenBLAS's
    own choice."""
    env = dict(os.environ if environ is None else environ)
    coretype = coretype_to_set(env, cpu)
    if coretype is not None:
        env[CORETYPE_ENV] = coretype
    return env


def openblas_kernels() -> str | None:
    """The kernel set (``"Haswell"``, ``"SkylakeX"``, ...) of the OpenBLAS that NumPy loaded, or None when
    NumPy uses another BLAS or threadpoolctl cannot tell."""
    import numpy  # noqa: F401  (loads the BLAS library so that threadpoolctl can see it)

    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return None
    for info in threadpool_info():
        if info.get("internal_api") == "openblas":
            return info.get("architecture")
    return None
