"""Inference throughput: ``CNN.predict_proba`` against plain PyTorch eval on the CPU, images per second.

Both frameworks run the seed network (float32, eval mode, the same weights) from NumPy in to
probabilities out, one call per batch of ``--batches`` images (default 1, 64 and 1000). The rows:

- ``numpy``: ``cnn.CNN.predict_proba(x)`` (the library's public path, eval mode);
- ``torch-nchw``: ``softmax(model(torch.from_numpy(x)))`` under ``torch.inference_mode()``, model in
  ``eval()``, torch's default threads, NCHW;
- ``torch-cl``: the same with the model and the input in ``torch.channels_last``;
- ``trainer``: ``cnn.torch_train.TorchTrainer.predict_proba`` (the project's twin, its defaults);
- ``torch-nchw-cuda`` / ``torch-cl-cuda``: the plain rows on the GPU, added when torch sees one.

Each measurement runs in a fresh subprocess (one warm-up call, then calls until ``--min-time`` seconds
have passed); the rows are interleaved and their order reversed every other repeat. Ratios are paired:
per repeat and batch, NumPy's images/s over each torch row's and over the faster plain CPU row
(``best plain``); a ratio is the median of its per-repeat ratios.

Target (issue 15): NumPy >= 0.9x the best plain torch row at batch 64 and 1000.

    python -m benchmarks.inference                                 # table, 5 repeats
    python -m benchmarks.inference --repeats 7 --json docs/bench_inference.json
    python -m benchmarks.inference --batches 64 1000 --min-time 0.5 --numpy-blas Haswell SkylakeX

``--numpy-blas`` is as in ``benchmarks.train_throughput``: ``auto`` (the OpenBLAS kernels ``import cnn``
picks), ``openblas`` (OpenBLAS's own choice) or an ``OPENBLAS_CORETYPE`` to force; one NumPy row each.
``--quiet-wait S`` waits up to S seconds for an idle machine before each measurement and repeats a run
that other processes disturbed; ratios use the undisturbed repeats when at least 3 were (as there).
``--from-json PATH`` summarises an earlier run's records again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.train_throughput import (
    _clean,
    _ratio_entry,
    _write_json,
    format_ratio,
    least_disturbed_run,
    machine,
)

TARGET = 0.9
TARGET_BATCHES = (64, 1000)
CPU_ROWS = ("torch-nchw", "torch-cl", "trainer")
PLAIN_ROWS = ("torch-nchw", "torch-cl")


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


def _predictor(row: str, seed: int = 0) -> Callable[[np.ndarray], Any]:
    from cnn.model import CNN

    numpy_model = CNN(dtype=np.float32, seed=seed).eval()
    if row == "numpy":
        return numpy_model.predict_proba
    import torch

    from cnn.torch_model import to_torch

    if row == "trainer":
        from cnn.torch_train import TorchTrainer

        return TorchTrainer(to_torch(numpy_model), device="cpu").predict_proba
    device = "cuda" if row.endswith("-cuda") else "cpu"
    fmt = torch.channels_last if row.startswith("torch-cl") else torch.contiguous_format
    # torch's stub of Module.to lacks memory_format, which Module.to accepts.
    model = to_torch(numpy_model, device).to(memory_format=fmt).eval()  # type: ignore[call-overload]

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            xt = torch.from_numpy(x).to(device).contiguous(memory_format=fmt)
            return torch.softmax(model(xt), dim=1).cpu().numpy()

    return predict


def run_worker(row: str, batches: list[int], min_time: float, seed: int = 0) -> dict[str, Any]:
    from cnn.blas import openblas_kernels

    predict = _predictor(row, seed)
    rng = np.random.default_rng(seed)
    out = {}
    for b in batches:
        x = rng.standard_normal((b, 1, 28, 28), dtype=np.float32)
        out[str(b)] = images_per_second(predict, x, min_time)
    return {"images_per_s": out, "blas_kernels": openblas_kernels()}


def measure(
    row: str, batches: list[int], min_time: float, blas: str = "auto", quiet_wait: float = 0.0
) -> dict[str, Any]:
    """One row, every batch size, in a fresh interpreter; waits for an idle machine and repeats a
    disturbed run as ``benchmarks.train_throughput.measure`` does."""
    cmd = [sys.executable, "-m", "benchmarks.inference", "--worker", row, "--min-time", str(min_time)]
    cmd += ["--batches", *map(str, batches)]
    best = least_disturbed_run(cmd, blas, quiet_wait)
    best["row"] = row if row != "numpy" else f"numpy ({blas})"
    return best


def summarise(records: list[dict], batches: list[int], numpy_rows: list[str]) -> list[dict]:
    """Per batch and NumPy row: medians and the paired ratios against each torch row and the best plain
    row of each repeat (over the undisturbed repeats when at least 3 were, as in train_throughput)."""
    rows = []
    torch_rows = sorted({r["row"] for r in records if not r["row"].startswith("numpy")})
    for b in batches:
        key = str(b)

        def series(name: str) -> dict[int, dict]:
            return {r["repeat"]: r for r in records if r["row"] == name}

        def ips(r: dict, key: str = key) -> float:
            return r["images_per_s"][key]

        def paired(mine: dict[int, dict], ref: dict[int, dict]) -> dict[str, Any]:
            both = [(mine[k], ref[k]) for k in mine if k in ref]
            ratios = [ips(x) / ips(y) for x, y in both]
            clean = [ips(x) / ips(y) for x, y in both if _clean(x) and _clean(y)]
            return _ratio_entry(ratios, clean)

        best: dict[int, dict] = {}
        for name in PLAIN_ROWS:
            for rep, r in series(name).items():
                if rep not in best or ips(r) > ips(best[rep]):
                    best[rep] = r
        for np_row in numpy_rows:
            mine = series(np_row)
            row: dict[str, Any] = {"batch": b, "numpy": np_row}
            row["numpy_images_per_s"] = statistics.median(ips(r) for r in mine.values())
            row["torch"] = {
                name: {"images_per_s": statistics.median(ips(r) for r in series(name).values())}
                | paired(mine, series(name))
                for name in torch_rows
            }
            if best:
                row.update(paired(mine, best))
                row["target"] = TARGET if b in TARGET_BATCHES else None
            rows.append(row)
    return rows


def format_table(report: dict[str, Any]) -> str:
    m = report["machine"]
    rows = report["summary"]
    names = sorted({k for r in rows for k in r["torch"]})
    cols = ["batch", "numpy", "numpy images/s", *[f"{k} images/s" for k in names]]
    cols += [f"vs {k}" for k in names] + ["vs best plain", "target", "met"]
    caption = (
        f"Images/s, seed CNN, float32, eval mode. {m['cpu']} ({m.get('vendor')}, family {m.get('family')} "
        f"model {m.get('model')}, {m['cpus']} CPUs), numpy {m['numpy']}, torch {m['torch']} "
        f"({m['torch_threads']} threads); {report['repeats']} repeats, fresh process each; ratio = median "
        "of per-repeat ratios [min-max]."
    )
    lines = [caption, "", "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]

    for r in rows:
        t = r["torch"]
        target = r.get("target")
        cells = [str(r["batch"]), r["numpy"], f"{r['numpy_images_per_s']:,.0f}"]
        cells += [f"{t[k]['images_per_s']:,.0f}" for k in names] + [format_ratio(t[k]) for k in names]
        cells += [format_ratio(r) if "ratio" in r else "", "" if target is None else f">= {target}"]
        cells += ["" if target is None else ("yes" if r["ratio"] >= target else "no")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1000], help="batch sizes")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of timed calls per cell")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats (default 5)")
    parser.add_argument("--numpy-blas", nargs="+", default=["auto"], metavar="KERNELS",
                        help="auto, openblas or an OPENBLAS_CORETYPE (default auto)")  # fmt: skip
    parser.add_argument("--quiet-wait", type=float, default=0.0, metavar="S",
                        help="wait up to S s for >= 80%% idle CPUs before each run")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the machine, records and summary here")
    parser.add_argument(
        "--from-json", type=Path, metavar="PATH", help="summarise the records of an earlier --json"
    )
    parser.add_argument("--torch", nargs="+", choices=CPU_ROWS, default=list(CPU_ROWS),
                        help="torch CPU rows to measure (default all)")  # fmt: skip
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.batches) < 1 or args.min_time <= 0 or args.repeats < 1:
        parser.error("batch sizes and --repeats must be >= 1 and --min-time > 0")
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.batches, args.min_time)))
        return 0
    if args.from_json:  # summarise again, measuring nothing
        report = json.loads(args.from_json.read_text())
        records = report["records"]
        numpy_rows = list(dict.fromkeys(r["row"] for r in records if r["row"].startswith("numpy")))
        batches = sorted({int(b) for r in records for b in r["images_per_s"]})
        report["summary"] = summarise(records, batches, numpy_rows)
        print(format_table(report))
        if args.json:
            _write_json(args.json, report)
        return 0

    import torch

    rows = [("numpy", b) for b in dict.fromkeys(args.numpy_blas)] + [(r, "auto") for r in args.torch]
    if torch.cuda.is_available():
        rows += [("torch-nchw-cuda", "auto"), ("torch-cl-cuda", "auto")]
    records = []
    for rep in range(args.repeats):
        order = rows if rep % 2 == 0 else rows[::-1]
        for row, blas in order:
            rec = measure(row, args.batches, args.min_time, blas, args.quiet_wait)
            rec["repeat"] = rep
            records.append(rec)
            cells = "  ".join(f"b{b} {v:9.0f}" for b, v in rec["images_per_s"].items())
            others = "" if rec["foreign_cpu"] is None else f"  others {rec['foreign_cpu']:.0%}"
            print(
                f"  repeat {rep + 1}/{args.repeats} {rec['row']:18s} {cells}{others}",
                file=sys.stderr,
                flush=True,
            )
    numpy_rows = [f"numpy ({b})" for b in dict.fromkeys(args.numpy_blas)]
    report = {
        "machine": {**machine(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "min_time_s": args.min_time,
        "repeats": args.repeats,
        "summary": summarise(records, args.batches, numpy_rows),
        "records": records,
    }
    print(format_table(report))
    if args.json:
        _write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
