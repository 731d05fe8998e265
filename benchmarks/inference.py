"""Inference throughput of the NumPy CNN and its PyTorch twin: images per second at batch 1, 64 and 1000.

Both frameworks run the same network (the seed architecture by default, float32, eval mode) through
their public inference path -- ``CNN.predict_proba`` and ``TorchTrainer.predict_proba``, NumPy in and
NumPy out -- on the CPU, and torch also on the GPU when one is present. The torch CPU figures are given for
both memory formats (``contiguous`` NCHW and ``channels_last`` NHWC), which is how the trainer's
``channels_last`` default was chosen.

Each cell: one warm-up call, then repeated calls until ``--min-time`` seconds have passed; the figure is
images / elapsed seconds. One run prints a table (and the machine); ``--json`` prints JSON instead. Run it
as a module from the repository root::

    .venv/bin/python -m benchmarks.inference                       # table
    .venv/bin/python -m benchmarks.inference --json > inference.json
    .venv/bin/python -m benchmarks.inference --batches 1 64 --min-time 0.5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from cnn.blas import openblas_kernels
from cnn.model import CNN


def images_per_second(predict: Callable[[np.ndarray], Any], x: np.ndarray, min_time: float) -> float:
    """Throughput of ``predict(x)``: one warm-up call, then calls until ``min_time`` seconds have passed."""
    predict(x)
    calls, start = 0, time.perf_counter()
    while True:
        predict(x)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return calls * len(x) / elapsed


def machine_info(threads: int) -> dict[str, Any]:
    """CPU model, core count, threads used, library versions and GPU name (if any)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numpy_blas_kernels": openblas_kernels(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def run(batches: list[int], min_time: float, threads: int | None, seed: int = 0) -> dict[str, Any]:
    """Measure every (framework, device, batch) cell; returns ``{"machine": ..., "results": [...]}``."""
    import torch
    from threadpoolctl import threadpool_limits

    from cnn.torch_model import to_torch
    from cnn.torch_train import TorchTrainer, default_threads

    threads = threads or default_threads()
    rng = np.random.default_rng(seed)
    numpy_model = CNN(dtype=np.float32, seed=seed).eval()
    inputs = {
        b: rng.standard_normal((b, *numpy_model.config.input_shape)).astype(np.float32) for b in batches
    }

    paths: list[tuple[str, str, Callable[[np.ndarray], Any]]] = [("numpy", "cpu", numpy_model.predict_proba)]
    for fmt in ("contiguous", "channels_last"):
        tr = TorchTrainer(
            to_torch(numpy_model), device="cpu", threads=threads, channels_last=fmt == "channels_last"
        )
        paths.append((f"torch ({fmt})", "cpu", tr.predict_proba))
    if torch.cuda.is_available():
        for fmt in ("contiguous", "channels_last"):
            tr = TorchTrainer(to_torch(numpy_model), device="cuda", channels_last=fmt == "channels_last")
            paths.append((f"torch ({fmt})", "cuda", tr.predict_proba))

    results = []
    with threadpool_limits(limits=threads):  # the NumPy BLAS gets the same threads as torch
        for name, device, predict in paths:
            with torch.inference_mode():
                for b in batches:
                    ips = images_per_second(predict, inputs[b], min_time)
                    results.append({"framework": name, "device": device, "batch": b, "images_per_s": ips})
                    print(f"  {name:<22} {device:<5} batch {b:>5}: {ips:>10.1f} images/s", file=sys.stderr)
    return {"machine": machine_info(threads), "min_time_s": min_time, "results": results}


def format_table(report: dict[str, Any]) -> str:
    """A Markdown table: one row per framework/device, one column per batch size."""
    batches = sorted({r["batch"] for r in report["results"]})
    rows: dict[tuple[str, str], dict[int, float]] = {}
    for r in report["results"]:
        rows.setdefault((r["framework"], r["device"]), {})[r["batch"]] = r["images_per_s"]
    head = "| framework | device | " + " | ".join(f"batch {b}" for b in batches) + " |"
    sep = "|---|---|" + "---:|" * len(batches)
    body = [
        f"| {fw} | {dev} | " + " | ".join(f"{cells[b]:,.0f}" for b in batches) + " |"
        for (fw, dev), cells in rows.items()
    ]
    m = report["machine"]
    gpu = f", GPU {m['gpu']}" if m["gpu"] else ", no GPU"
    threads = f"{m['threads']} thread" + ("s" if m["threads"] != 1 else "")
    caption = (
        f"Images/s, seed CNN, float32, eval mode. {m['cpu']} ({m['cores']} cores, {threads})"
        f"{gpu}; numpy {m['numpy']} (OpenBLAS kernels {m['numpy_blas_kernels']}), torch {m['torch']}."
    )
    return "\n".join([caption, "", head, sep, *body])


def main(argv: list[str] | None = None) -> int:
    from cnn.blas import preferred_environment

    env = preferred_environment()
    if argv is None and env != dict(os.environ):
        # NumPy is loaded already (this module imports it first): start again with the OpenBLAS kernels
        # that ``import cnn`` picks for this CPU, as the library's users get them (see cnn.blas).
        # Started as ``python -m benchmarks.inference``: start again the same way (sys.argv[0] is the file).
        command = ["-m", __spec__.name] if __spec__ is not None else [sys.argv[0]]
        os.execve(sys.executable, [sys.executable, *command, *sys.argv[1:]], env)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1000], help="batch sizes")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of timed calls per cell")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    if min(args.batches) < 1 or args.min_time <= 0:
        parser.error("batch sizes must be >= 1 and --min-time > 0")
    report = run(args.batches, args.min_time, args.threads)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
