"""Training throughput: the NumPy library against the same network trained by plain PyTorch on the CPU.

Each measurement trains the seed network (``cnn.CNN()``) for one epoch on ``--n`` random 28x28 images with
Adam (lr 1e-3), batches shuffled, and reports samples/s and peak memory. The rows:

- ``numpy``: ``cnn.CNN.fit`` (one row per ``--numpy-threading`` x ``--numpy-blas`` variant);
- ``torch-nchw``: a plain ``torch.nn`` loop -- ``cnn.torch_model.TorchCNN`` (the same layers),
  ``torch.optim.Adam``, ``F.cross_entropy``, ``zero_grad`` / ``backward`` / ``step`` -- with torch's
  default threads, NCHW tensors;
- ``torch-cl``: the same loop with the model and every batch in ``torch.channels_last``;
- ``trainer``: ``cnn.torch_train.TorchTrainer.fit`` (the project's twin, ``deterministic=False``).

Every measurement runs in a fresh subprocess (peak memory is that run's own, nothing leaks between runs),
after a warm-up of a few batches on the same model; the rows are interleaved, their order reversed every
other repeat. Ratios are paired: per repeat, NumPy's samples/s over each torch row's from the same
repeat, and over the faster of the two plain rows (``best plain``, the target's reference); a row's ratio
is the median of its per-repeat ratios. The machine's speed drifts; the paired ratio much less, and the
spread of the per-repeat ratios (min-max in the table, all of them in the JSON) shows how noisy a run was.

Targets (issue 15), NumPy against the best plain torch row: >= 0.70x at batch 32, >= 0.80x at batch 128.

    python -m benchmarks.train_throughput                          # n=2048, batch 32 and 128, 5 repeats
    python -m benchmarks.train_throughput --n 4096 --repeats 9 --json docs/bench_train.json
    python -m benchmarks.train_throughput --numpy-blas auto Haswell SkylakeX   # OpenBLAS kernel sets

``--numpy-threading``: ``pool`` (the library default: kernels split over a thread pool, BLAS at one thread
per worker), ``blas`` (``cnn.kernels.set_num_threads(1)``: one Python thread, BLAS with its own threads),
or ``both``.

``--numpy-blas`` (one or more): ``auto`` (the library default: ``import cnn`` picks OpenBLAS's kernels for
the CPU, see ``cnn.blas``), ``openblas`` (OpenBLAS's own choice: ``CNN_OPENBLAS_AUTO=0``, no
``OPENBLAS_CORETYPE``), an OpenBLAS core type such as ``Haswell`` or ``SkylakeX`` (forced through
``OPENBLAS_CORETYPE``), or ``both`` (= ``auto openblas``). The kernel set each run actually used is read
back with threadpoolctl and reported.

Every record keeps ``foreign_cpu``: the share of the machine's CPU time that other processes used during
that measurement (on a shared machine other jobs make torch's OpenMP threads collapse, so a disturbed run
says nothing). ``--quiet-wait S``: before each measurement wait up to S seconds until >= 80% of the CPU
time is idle, and make a run that others disturbed (> 10%) again, up to 4 tries, keeping the cleanest.

A ratio is the median over the repeats that other processes left alone when at least 3 were (marked
``(k clean)`` in the table), else over all repeats. ``--from-json PATH`` summarises an earlier run's
records again without measuring.

``--torch``: which torch rows to run (default all three). The JSON (``--json``) holds the machine (CPU
model, vendor, family/model, flags that matter, library versions), every record and the summary rows with
every per-repeat ratio.
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
TARGETS = {32: 0.70, 128: 0.80}  # against the best plain torch row
WARMUP_BATCHES = 3
TORCH_ROWS = ("torch-nchw", "torch-cl", "trainer")
PLAIN_ROWS = ("torch-nchw", "torch-cl")
MAX_FOREIGN = 0.1  # share of the machine's CPU time other processes may take during a clean measurement
TRIES = 4


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU time of the whole machine so far, in clock ticks (Linux /proc/stat)."""
    try:
        with open("/proc/stat") as fh:
            ticks = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def cpu_idle(seconds: float = 0.5) -> float | None:
    """Fraction of the machine's CPU time that was idle over the next ``seconds``."""
    a = _cpu_jiffies()
    time.sleep(seconds)
    b = _cpu_jiffies()
    if a is None or b is None or b[1] <= a[1]:
        return None
    return 1.0 - (b[0] - a[0]) / (b[1] - a[1])


def wait_for_quiet(max_wait: float, min_idle: float = 0.8) -> float | None:
    """Wait (up to ``max_wait`` seconds) until at least ``min_idle`` of the CPUs' time is idle, so that a
    measurement does not start while other jobs load the machine; returns the last idle fraction seen."""
    deadline = time.monotonic() + max_wait
    while True:
        idle = cpu_idle()
        if idle is None or idle >= min_idle or time.monotonic() >= deadline:
            return idle


def run_watched(cmd: list[str], env: dict[str, str]) -> tuple[str, float | None]:
    """Run ``cmd`` (cwd: the repository) and return its stdout and the share of the machine's CPU time
    that *other* processes used meanwhile (the machine's busy time less this child's CPU time): a
    measurement disturbed by other jobs shows up here."""
    clk = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    before, kids = _cpu_jiffies(), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=ROOT).stdout
    after, kids2 = _cpu_jiffies(), resource.getrusage(resource.RUSAGE_CHILDREN)
    if before is None or after is None or after[1] <= before[1]:
        return out, None
    child = (kids2.ru_utime + kids2.ru_stime - kids.ru_utime - kids.ru_stime) * clk
    return out, max(0.0, (after[0] - before[0] - child) / (after[1] - before[1]))


def _rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def _blas_kernels() -> str | None:
    from cnn.blas import openblas_kernels

    return openblas_kernels()


def run_numpy(n: int, batch_size: int, threading: str) -> dict[str, Any]:
    from cnn import kernels
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
        "peak_rss_mb": _rss_mb(),
        "base_rss_mb": base,
        "blas_kernels": _blas_kernels(),
    }


def run_torch_plain(n: int, batch_size: int, channels_last: bool) -> dict[str, Any]:
    """The loop a PyTorch user writes: same network, Adam lr 1e-3, default threads, shuffled batches."""
    import torch
    import torch.nn.functional as F

    from cnn.torch_model import TorchCNN

    X, y = _data(n)
    base = _rss_mb()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    # torch's stub of Module.to lacks memory_format, which Module.to accepts.
    model = TorchCNN(seed=0).to(memory_format=fmt).train()  # type: ignore[call-overload]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(0)

    def epoch(count: int) -> None:
        order = torch.randperm(count, generator=gen)
        for start in range(0, count, batch_size):
            rows = order[start : start + batch_size]
            if len(rows) < 2:  # BatchNorm1d cannot normalise a one-sample batch
                continue
            xb, yb = Xt[rows].contiguous(memory_format=fmt), yt[rows]
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()  # as a training loop that tracks its loss does

    epoch(min(n, WARMUP_BATCHES * batch_size))
    t0 = time.perf_counter()
    epoch(n)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "peak_rss_mb": _rss_mb(),
        "base_rss_mb": base,
        "torch_threads": torch.get_num_threads(),
    }


def run_trainer(n: int, batch_size: int) -> dict[str, Any]:
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
        "peak_rss_mb": _rss_mb(),
        "base_rss_mb": base,
        "torch_threads": torch.get_num_threads(),
    }


def worker_env(blas: str) -> dict[str, str]:
    """The environment of a worker. ``auto``: the OpenBLAS kernels ``import cnn`` would choose (the worker
    imports NumPy first, so it cannot choose them itself); ``openblas``: OpenBLAS's own choice; anything
    else is an ``OPENBLAS_CORETYPE`` to force."""
    from cnn.blas import AUTO_ENV, CORETYPE_ENV, preferred_environment

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if blas == "auto":
        return preferred_environment(env)
    env.pop(CORETYPE_ENV, None)
    env[AUTO_ENV] = "0"
    if blas != "openblas":
        env[CORETYPE_ENV] = blas
    return env


def least_disturbed_run(cmd: list[str], blas: str, quiet_wait: float) -> dict[str, Any]:
    """Run the worker ``cmd`` (its last stdout line is its JSON record) with the OpenBLAS choice
    ``blas``; returns that record plus ``foreign_cpu`` and ``tries``. With ``quiet_wait`` > 0 each try
    first waits up to that long for an idle machine, and a disturbed run (``foreign_cpu`` above
    :data:`MAX_FOREIGN`) is made again, up to :data:`TRIES` times, keeping the least disturbed."""
    best: dict[str, Any] | None = None
    for attempt in range(1, (TRIES if quiet_wait > 0 else 1) + 1):
        if quiet_wait > 0:
            wait_for_quiet(quiet_wait)
        out, foreign = run_watched(cmd, worker_env(blas))
        record = json.loads(out.strip().splitlines()[-1])
        record.update(foreign_cpu=foreign, tries=attempt)
        if best is None or (foreign or 0.0) < (best["foreign_cpu"] or 0.0):
            best = record
        if foreign is None or foreign <= MAX_FOREIGN:
            break
    assert best is not None
    return best


def measure(
    row: str, n: int, batch_size: int, threading: str = "pool", blas: str = "auto", quiet_wait: float = 0.0
) -> dict[str, Any]:
    """One measurement in a fresh interpreter; returns the worker's JSON record plus ``foreign_cpu``, the
    share of the machine's CPU time other processes took meanwhile. With ``quiet_wait`` > 0 the run
    waits up to that many seconds for an idle machine, and a run that others disturbed (``foreign_cpu``
    above :data:`MAX_FOREIGN`) is made again, up to :data:`TRIES` times in all, keeping the least
    disturbed."""
    cmd = [sys.executable, "-m", "benchmarks.train_throughput", "--worker", row, "--n", str(n)]
    cmd += ["--batch-sizes", str(batch_size), "--numpy-threading", threading]
    best = least_disturbed_run(cmd, blas, quiet_wait)
    best.update(row=row, batch_size=batch_size, n=n, samples_per_sec=n / best["seconds"])
    if row == "numpy":
        best.update(threading=threading, blas=blas)
    return best


def cpu_info() -> dict[str, Any]:
    """CPU model, vendor, family/model and the SIMD flags that decide OpenBLAS's kernels (/proc/cpuinfo)."""
    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine()}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return info
    first = text.split("\n\n", 1)[0]
    fields = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in first.splitlines())}
    flags = set(fields.get("flags", "").split())
    info.update(
        cpu=fields.get("model name", info["cpu"]),
        vendor=fields.get("vendor_id"),
        family=int(fields["cpu family"]) if fields.get("cpu family", "").isdigit() else None,
        model=int(fields["model"]) if fields.get("model", "").isdigit() else None,
        simd=sorted(
            f for f in flags if f in {"avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}
        ),
    )
    return info


def machine() -> dict[str, Any]:
    import threadpoolctl
    import torch

    return {
        **cpu_info(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "threadpoolctl": threadpoolctl.__version__,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "openblas_env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")},
    }


def _clean(record: dict) -> bool:
    return (record.get("foreign_cpu") or 0.0) <= MAX_FOREIGN


def _ratios(np_runs: list[dict], ref: list[dict]) -> tuple[list[float], list[float]]:
    """Per-repeat NumPy/reference ratios: all of them, and those of the repeats where neither run was
    disturbed by other processes (``foreign_cpu`` <= :data:`MAX_FOREIGN`)."""
    by_rep = {r["repeat"]: r for r in ref}
    pairs = [(r, by_rep[r["repeat"]]) for r in np_runs if r["repeat"] in by_rep]
    ratios = [a["samples_per_sec"] / b["samples_per_sec"] for a, b in pairs]
    clean = [a["samples_per_sec"] / b["samples_per_sec"] for a, b in pairs if _clean(a) and _clean(b)]
    return ratios, clean


def _ratio_entry(ratios: list[float], clean: list[float]) -> dict[str, Any]:
    """The ratio of record: the median over the clean repeats when there are at least 3, else over all."""
    enough = len(clean) >= 3
    return {
        "ratio": statistics.median(clean if enough else ratios),
        "ratios": ratios,
        "ratios_clean": clean,
        "clean": enough,
    }


def format_ratio(entry: dict[str, Any]) -> str:
    """A :func:`_ratio_entry` as a table cell: ``0.78 [0.70-0.85] (9 clean)``, the range over the repeats
    the ratio was taken from."""
    used = entry["ratios_clean"] if entry["clean"] else entry["ratios"]
    note = f" ({len(used)} clean)" if entry["clean"] else ""
    return f"{entry['ratio']:.2f} [{min(used):.2f}-{max(used):.2f}]{note}"


def summarise(
    records: list[dict[str, Any]], batch_sizes: list[int], variants: list[tuple[str, str]]
) -> list[dict]:
    """Per batch size and NumPy variant: medians, peak memory and the paired ratios against each torch row
    and against the best plain row of each repeat."""
    rows = []
    for bs in batch_sizes:
        at = [r for r in records if r["batch_size"] == bs]
        torch_runs = {name: [r for r in at if r["row"] == name] for name in TORCH_ROWS}
        torch_runs = {k: v for k, v in torch_runs.items() if v}
        best: dict[int, dict] = {}  # per repeat, the faster plain torch run
        for name in PLAIN_ROWS:
            for r in torch_runs.get(name, []):
                if r["repeat"] not in best or r["samples_per_sec"] > best[r["repeat"]]["samples_per_sec"]:
                    best[r["repeat"]] = r
        best_runs = [best[k] for k in sorted(best)]
        for threading, blas in variants:
            np_runs = [
                r for r in at if r["row"] == "numpy" and (r["threading"], r["blas"]) == (threading, blas)
            ]
            row: dict[str, Any] = {
                "batch_size": bs,
                "numpy_threading": threading,
                "numpy_blas": blas,
                "numpy_blas_kernels": "/".join(sorted({str(r.get("blas_kernels")) for r in np_runs})),
                "numpy_samples_per_sec": statistics.median(r["samples_per_sec"] for r in np_runs),
                "numpy_peak_rss_mb": max(r["peak_rss_mb"] for r in np_runs),
                "numpy_train_mb": max(r["peak_rss_mb"] - r["base_rss_mb"] for r in np_runs),
                "target": TARGETS.get(bs),
                "torch": {},
            }
            for name, runs in torch_runs.items():
                row["torch"][name] = {
                    "samples_per_sec": statistics.median(r["samples_per_sec"] for r in runs),
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                    "train_mb": max(r["peak_rss_mb"] - r["base_rss_mb"] for r in runs),
                    **_ratio_entry(*_ratios(np_runs, runs)),
                }
            if best_runs:
                row["best_plain_samples_per_sec"] = statistics.median(r["samples_per_sec"] for r in best_runs)
                row.update(_ratio_entry(*_ratios(np_runs, best_runs)))
            rows.append(row)
    return rows


def table(rows: list[dict], info: dict[str, Any], n: int, repeats: int) -> str:
    fam = f", family {info.get('family')} model {info.get('model')}" if info.get("family") is not None else ""
    head = (
        f"{info['cpu']} ({info.get('vendor')}{fam}, {info['cpus']} CPUs), Python {info['python']}, numpy "
        f"{info['numpy']}, torch {info['torch']} ({info['torch_threads']} threads); n={n}, {repeats} "
        "repeat(s), one epoch, Adam lr 1e-3; samples/s are medians, a ratio is the median of the per-repeat "
        "NumPy/torch ratios [min-max]"
    )
    lines = [head, ""]
    cols = ["batch", "numpy (threading, BLAS kernels)", "numpy samples/s"]
    names = [k for k in TORCH_ROWS if any(k in r["torch"] for r in rows)]
    cols += [f"{k} samples/s" for k in names] + [f"vs {k}" for k in names]
    cols += ["vs best plain", "target", "met", "numpy peak MiB (train)"]
    cols += [f"{k} peak MiB" for k in names]
    lines += ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]

    for r in rows:
        t = r["torch"]
        target = r["target"]
        met = "" if target is None or "ratio" not in r else ("yes" if r["ratio"] >= target else "no")
        cells = [
            str(r["batch_size"]),
            f"{r['numpy_threading']}, {r['numpy_blas_kernels']} ({r['numpy_blas']})",
            f"{r['numpy_samples_per_sec']:.0f}",
        ]
        cells += [f"{t[k]['samples_per_sec']:.0f}" if k in t else "" for k in names]
        cells += [format_ratio(t[k]) if k in t else "" for k in names]
        cells += [format_ratio(r) if "ratio" in r else "", "" if target is None else f">= {target:.2f}", met]
        cells += [f"{r['numpy_peak_rss_mb']:.0f} ({r['numpy_train_mb']:.0f})"]
        cells += [f"{t[k]['peak_rss_mb']:.0f} ({t[k]['train_mb']:.0f})" if k in t else "" for k in names]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "torch-nchw / torch-cl: a plain torch.nn loop, NCHW / channels_last; trainer: TorchTrainer.fit."
    )
    lines.append(
        "best plain: the faster of torch-nchw and torch-cl in each repeat. (k clean): the ratio is the"
    )
    lines.append(
        f"median over the k repeats whose runs other processes left alone (<= {MAX_FOREIGN:.0%} of the CPUs)."
    )
    lines.append("peak MiB: peak resident memory of the measuring process; (train): its growth from model")
    lines.append("construction on.")
    return "\n".join(lines)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2048, help="random images per epoch (default 2048)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats per setting (default 5)")
    parser.add_argument("--numpy-threading", choices=["pool", "blas", "both"], default="pool")
    parser.add_argument("--numpy-blas", nargs="+", default=["auto"], metavar="KERNELS",
                        help="auto, openblas, both or an OPENBLAS_CORETYPE")  # fmt: skip
    parser.add_argument("--torch", nargs="+", choices=TORCH_ROWS, default=list(TORCH_ROWS),
                        help="torch rows to measure (default all)")  # fmt: skip
    parser.add_argument("--quiet-wait", type=float, default=0.0, metavar="S",
                        help="wait up to S s for >= 80%% idle CPUs before each run")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the machine, records and summary here")
    parser.add_argument(
        "--from-json", type=Path, metavar="PATH", help="summarise the records of an earlier --json"
    )
    parser.add_argument("--worker", choices=["numpy", *TORCH_ROWS], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.n < 2 or args.repeats < 1 or min(args.batch_sizes) < 2:
        parser.error("--n and --batch-sizes must be >= 2, --repeats >= 1")

    if args.worker:  # one measurement, printed as one JSON line for the parent
        bs = args.batch_sizes[0]
        if args.worker == "numpy":
            result = run_numpy(args.n, bs, args.numpy_threading)
        elif args.worker == "trainer":
            result = run_trainer(args.n, bs)
        else:
            result = run_torch_plain(args.n, bs, channels_last=args.worker == "torch-cl")
        print(json.dumps(result))
        return 0

    if args.from_json:  # summarise again (e.g. after a change to the summary), measuring nothing
        payload = json.loads(args.from_json.read_text())
        records = payload["records"]
        variants = list(dict.fromkeys((r["threading"], r["blas"]) for r in records if r["row"] == "numpy"))
        sizes = list(dict.fromkeys(r["batch_size"] for r in records))
        payload["summary"] = summarise(records, sizes, variants)
        print(table(payload["summary"], payload["machine"], payload["n"], payload["repeats"]))
        if args.json:
            _write_json(args.json, payload)
        return 0

    threadings = ["pool", "blas"] if args.numpy_threading == "both" else [args.numpy_threading]
    blases = [b for x in args.numpy_blas for b in (["auto", "openblas"] if x == "both" else [x])]
    variants = [(t, b) for t in threadings for b in dict.fromkeys(blases)]
    records = []
    for rep in range(args.repeats):
        for bs in args.batch_sizes:
            order = [("numpy", v) for v in variants] + [(name, ("pool", "auto")) for name in args.torch]
            if rep % 2:
                order.reverse()
            for row, (threading, blas) in order:
                rec = measure(row, args.n, bs, threading, blas, args.quiet_wait)
                rec["repeat"] = rep
                records.append(rec)
                label = row + (f"/{threading}/{blas}" if row == "numpy" else "")
                print(
                    f"  repeat {rep + 1}/{args.repeats} batch {bs:4d} {label:24s} "
                    f"{rec['samples_per_sec']:8.1f} samples/s  peak {rec['peak_rss_mb']:.0f} MiB"
                    + ("" if rec["foreign_cpu"] is None else f"  others {rec['foreign_cpu']:.0%}")
                    + (f" (try {rec['tries']})" if rec["tries"] > 1 else "")
                    + (f"  [{rec['blas_kernels']}]" if row == "numpy" else ""),
                    flush=True,
                )
    info = machine()
    rows = summarise(records, args.batch_sizes, variants)
    print()
    print(table(rows, info, args.n, args.repeats))
    if args.json:
        payload = {"machine": info, "n": args.n, "repeats": args.repeats, "summary": rows, "records": records}
        _write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
