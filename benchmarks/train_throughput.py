"""Training throughput: the NumPy library against the same network in PyTorch on the CPU.

Each measurement trains the default CNN (``cnn.CNN()``, the seed network) for one epoch on ``--n`` random
28x28 images with Adam (lr 1e-3) through the project's real training paths, ``cnn.CNN.fit`` and
``cnn.torch_train.TorchTrainer.fit`` (torch with its default threads, all cores, and
``deterministic=False``: torch at its fastest), and reports samples/s and peak memory. Every measurement
runs in a fresh subprocess (so peak memory is that framework's own, and no state leaks between runs),
after a warm-up fit of a few batches on the same model. Frameworks are interleaved, alternating which
goes first, and the NumPy/torch ratio is taken per repeat from neighbouring runs: the machine's speed
drifts, the ratio much less.

Targets on the project's 2-core machine: NumPy >= 0.65x torch at batch 32 and >= 0.75x at batch 128.

    python benchmarks/train_throughput.py                          # n=2048, batch 32 and 128, 3 repeats
    python benchmarks/train_throughput.py --n 4096 --repeats 5 --json bench.json
    python benchmarks/train_throughput.py --numpy-threading both   # also: 1 Python thread + BLAS threads

``--numpy-threading``: ``pool`` (the library default: kernels split over a thread pool, BLAS at one thread
per worker), ``blas`` (``cnn.kernels.set_num_threads(1)``: one Python thread, BLAS with its own threads),
or ``both``.

``--numpy-blas``: ``auto`` (the library default: ``import cnn`` picks OpenBLAS's kernels for the CPU, see
``cnn.blas``), ``openblas`` (OpenBLAS's own choice: ``CNN_OPENBLAS_AUTO=0``, no ``OPENBLAS_CORETYPE``),
or ``both``. The kernel set each NumPy run used is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {32: 0.65, 128: 0.75}
WARMUP_BATCHES = 3


def _rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def run_numpy(n: int, batch_size: int, threading: str) -> dict[str, Any]:
    from cnn import kernels
    from cnn.blas import openblas_kernels
    from cnn.model import CNN

    if threading == "blas":
        kernels.set_num_threads(1)
    X, y = _data(n)
    base = _rss_mb()
    model = CNN(seed=0)
    warm = min(n, WARMUP_BATCHES * batch_size)
    model.fit(X[:warm], y[:warm], epochs=1, batch_size=batch_size, verbose=0)
    t0 = time.perf_counter()
    model.fit(X, y, epochs=1, batch_size=batch_size, verbose=0)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "samples_per_sec": n / seconds,
        "peak_rss_mb": _rss_mb(),
        "base_rss_mb": base,
        "blas_kernels": openblas_kernels(),
    }


def run_torch(n: int, batch_size: int) -> dict[str, Any]:
    import torch

    from cnn.torch_model import TorchCNN
    from cnn.torch_train import TorchTrainer

    X, y = _data(n)
    base = _rss_mb()
    trainer = TorchTrainer(TorchCNN(seed=0), device="cpu", threads=None, deterministic=False, seed=0)
    warm = min(n, WARMUP_BATCHES * batch_size)
    trainer.fit(X[:warm], y[:warm], epochs=1, batch_size=batch_size, verbose=0)
    t0 = time.perf_counter()
    trainer.fit(X, y, epochs=1, batch_size=batch_size, verbose=0)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "samples_per_sec": n / seconds,
        "peak_rss_mb": _rss_mb(),
        "base_rss_mb": base,
        "torch_threads": torch.get_num_threads(),
    }


def worker_env(blas: str) -> dict[str, str]:
    """The environment of a worker: ``auto`` sets the OpenBLAS kernels ``import cnn`` would choose (the
    worker imports NumPy first, so it cannot choose them itself); ``openblas`` leaves OpenBLAS to choose."""
    from cnn.blas import AUTO_ENV, CORETYPE_ENV, preferred_environment

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if blas == "openblas":
        env.pop(CORETYPE_ENV, None)
        env[AUTO_ENV] = "0"
        return env
    return preferred_environment(env)


def measure(framework: str, n: int, batch_size: int, threading: str, blas: str = "auto") -> dict[str, Any]:
    """One measurement in a fresh interpreter; returns the worker's JSON record."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", framework, "--n", str(n)]
    cmd += ["--batch-sizes", str(batch_size), "--numpy-threading", threading]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=worker_env(blas), cwd=ROOT)
    record = json.loads(out.stdout.strip().splitlines()[-1])
    record.update(framework=framework, batch_size=batch_size, n=n)
    if framework == "numpy":
        record.update(threading=threading, blas=blas)
    return record


def machine() -> dict[str, Any]:
    import torch

    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(
            (ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), ""
        )
    except (OSError, subprocess.CalledProcessError):
        model = platform.processor()
    return {
        "cpu": model,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def summarise(
    records: list[dict[str, Any]], batch_sizes: list[int], variants: list[tuple[str, str]]
) -> list[dict]:
    """Per batch size and NumPy variant: medians, and the median of the per-repeat paired ratios."""
    rows = []
    for bs in batch_sizes:
        torch_runs = [r for r in records if r["framework"] == "torch" and r["batch_size"] == bs]
        for threading, blas in variants:
            np_runs = [
                r
                for r in records
                if r["framework"] == "numpy"
                and r["batch_size"] == bs
                and (r["threading"], r["blas"]) == (threading, blas)
            ]
            ratios = [a["samples_per_sec"] / b["samples_per_sec"] for a, b in zip(np_runs, torch_runs)]
            rows.append(
                {
                    "batch_size": bs,
                    "numpy_threading": threading,
                    "numpy_blas": blas,
                    "numpy_blas_kernels": "/".join(sorted({str(r.get("blas_kernels")) for r in np_runs})),
                    "numpy_samples_per_sec": statistics.median(r["samples_per_sec"] for r in np_runs),
                    "torch_samples_per_sec": statistics.median(r["samples_per_sec"] for r in torch_runs),
                    "ratio": statistics.median(ratios),
                    "ratios": ratios,
                    "target": TARGETS.get(bs),
                    "numpy_peak_rss_mb": max(r["peak_rss_mb"] for r in np_runs),
                    "numpy_train_mb": max(r["peak_rss_mb"] - r["base_rss_mb"] for r in np_runs),
                    "torch_peak_rss_mb": max(r["peak_rss_mb"] for r in torch_runs),
                    "torch_train_mb": max(r["peak_rss_mb"] - r["base_rss_mb"] for r in torch_runs),
                }
            )
    return rows


def table(rows: list[dict], info: dict[str, Any], n: int, repeats: int) -> str:
    head = (
        f"{info['cpu']} ({info['cpus']} CPUs), Python {info['python']}, numpy {info['numpy']}, "
        f"torch {info['torch']} ({info['torch_threads']} threads); n={n}, {repeats} repeat(s), "
        "one epoch, Adam; medians (ratio: median of per-repeat ratios)"
    )
    cols = ["batch", "numpy threading", "numpy BLAS kernels", "numpy samples/s", "torch samples/s", "ratio",
            "target", "met", "numpy peak MiB (train)", "torch peak MiB (train)"]  # fmt: skip
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        target = r["target"]
        met = "" if target is None else ("yes" if r["ratio"] >= target else "no")
        lines.append(
            f"| {r['batch_size']} | {r['numpy_threading']} | {r['numpy_blas_kernels']} ({r['numpy_blas']}) | "
            f"{r['numpy_samples_per_sec']:.0f} | "
            f"{r['torch_samples_per_sec']:.0f} | {r['ratio']:.2f} | "
            f"{'' if target is None else f'>= {target:.2f}'} | {met} | "
            f"{r['numpy_peak_rss_mb']:.0f} ({r['numpy_train_mb']:.0f}) | "
            f"{r['torch_peak_rss_mb']:.0f} ({r['torch_train_mb']:.0f}) |"
        )
    lines.append("")
    lines.append("peak MiB: peak resident memory of the measuring process; (train): its growth from model")
    lines.append("construction through the warm-up and the timed epoch.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2048, help="random images per epoch (default 2048)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats per setting (default 3)")
    parser.add_argument("--numpy-threading", choices=["pool", "blas", "both"], default="pool")
    parser.add_argument("--numpy-blas", choices=["auto", "openblas", "both"], default="auto")
    parser.add_argument("--json", type=Path, help="also write the records and the summary here")
    parser.add_argument("--worker", choices=["numpy", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.n < 1 or args.repeats < 1 or min(args.batch_sizes) < 1:
        parser.error("--n, --repeats and --batch-sizes must be positive")

    if args.worker:  # one measurement, printed as one JSON line for the parent
        bs = args.batch_sizes[0]
        result = (
            run_numpy(args.n, bs, args.numpy_threading) if args.worker == "numpy" else run_torch(args.n, bs)
        )
        print(json.dumps(result))
        return 0

    threadings = ["pool", "blas"] if args.numpy_threading == "both" else [args.numpy_threading]
    blases = ["auto", "openblas"] if args.numpy_blas == "both" else [args.numpy_blas]
    variants = [(t, b) for t in threadings for b in blases]
    records = []
    for rep in range(args.repeats):
        for bs in args.batch_sizes:
            order = [("numpy", v) for v in variants] + [("torch", ("pool", "auto"))]
            if rep % 2:
                order.reverse()
            for framework, (threading, blas) in order:
                rec = measure(framework, args.n, bs, threading, blas)
                rec["repeat"] = rep
                records.append(rec)
                label = framework + (f"/{threading}/{blas}" if framework == "numpy" else "")
                print(
                    f"  repeat {rep + 1}/{args.repeats} batch {bs:4d} {label:18s} "
                    f"{rec['samples_per_sec']:8.1f} samples/s  peak {rec['peak_rss_mb']:.0f} MiB",
                    flush=True,
                )
    info = machine()
    rows = summarise(records, args.batch_sizes, variants)
    print()
    print(table(rows, info, args.n, args.repeats))
    if args.json:
        payload = {"machine": info, "n": args.n, "repeats": args.repeats, "summary": rows, "records": records}
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
