"""Splits that match the config: a job trains on, and logs, the data its config names.

A sweep job (``stages/sweep.py``) or a worker of a cluster run overrides ``data.*`` like any other key,
but the DVC ``preprocess`` stage wrote ``data.processed_dir`` for ``params.yaml``'s data params only.
:func:`ensure_splits` gives the job a folder whose ``{train,val,test}.npz`` were made for *its* data
params:

1. ``data.processed_dir`` itself, when its ``stats.json`` says it holds exactly those splits (dataset,
   seed, and the three sizes as asked -- ``stats["requested"]``, written by
   :func:`cnn.data.preprocess_dataset`);
2. else ``<parent of data.processed_dir>/splits/<dataset>-<digest>/``, the digest being a hash of the
   data params (:func:`data_params_digest`), prepared from the verified raw files in
   ``<data.raw_dir>/<data.name>/`` the first time a job asks for it. Preparation holds an exclusive file
   lock (``<folder>.lock``), so parallel jobs (joblib, Ray workers on one machine or on a shared file
   system) prepare it once and the others wait and reuse it; ``stats.json`` is written last, so a folder
   without it is never taken for complete;
3. else (no raw files) a :class:`~cnn.errors.DataError`, one line naming what is on disk and what the
   job asks for, raised before any training.

Use it before training and put the returned folder in the job's config, so the logged
``data.processed_dir`` is the folder trained on::

    job["data"]["processed_dir"] = str(ensure_splits(job))
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cnn.errors import DataError

__all__ = ["SPLIT_KEYS", "data_params_digest", "describe_mismatch", "ensure_splits", "splits_dir_for"]

# The data params that decide what the splits hold (raw_dir and processed_dir only say where).
SPLIT_KEYS = ("name", "train_size", "val_size", "test_size", "seed")
SPLITS_SUBDIR = "splits"


def data_params_digest(data: Mapping[str, Any]) -> str:
    """A 12-hex-digit digest of the data params that decide the splits (``SPLIT_KEYS``)."""
    key = json.dumps({k: data.get(k) for k in SPLIT_KEYS}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def splits_dir_for(data: Mapping[str, Any]) -> Path:
    """Where :func:`ensure_splits` makes the splits of ``data`` when ``data.processed_dir`` holds others."""
    parent = Path(data["processed_dir"]).parent
    return parent / SPLITS_SUBDIR / f"{data['name']}-{data_params_digest(data)}"


def _read_stats(directory: Path) -> dict[str, Any] | None:
    path = directory / "stats.json"
    if not path.is_file():
        return None
    try:
        stats = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return stats if isinstance(stats, dict) else None


def _sizes(values: Mapping[str, Any]) -> str:
    return "/".join("all" if values.get(k) is None else str(values.get(k)) for k in ("train", "val", "test"))


def describe_mismatch(directory: Path, data: Mapping[str, Any]) -> str | None:
    """None when ``directory`` holds the complete splits ``data`` asks for, else what it holds instead."""
    stats = _read_stats(directory)
    if stats is None:
        return f"{directory} holds no complete splits (no readable stats.json)"
    asked = {"train": data["train_size"], "val": data["val_size"], "test": data["test_size"]}
    requested = stats.get("requested")
    if isinstance(requested, Mapping):
        held = {s: requested.get(f"{s}_size") for s in ("train", "val", "test")}
    else:  # no sizes as asked (an older stats.json): the sizes made, which never equal an "all" (None)
        held = {s: (stats.get("sizes") or {}).get(s, "?") for s in ("train", "val", "test")}
    same = stats.get("dataset") == data["name"] and stats.get("seed") == data["seed"] and held == asked
    if same and all((directory / f"{s}.npz").is_file() for s in ("train", "val", "test")):
        return None
    return (
        f"{directory} holds {_sizes(held)} (train/val/test) splits of {stats.get('dataset')} seed "
        f"{stats.get('seed')} but the job asks for {_sizes(asked)} of {data['name']} seed {data['seed']}"
    )


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    import fcntl

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_splits(cfg: Mapping[str, Any]) -> Path:
    """The folder holding the ``{train,val,test}.npz`` and ``stats.json`` that ``cfg["data"]`` asks for.

    ``cfg`` is a composed config (only its ``data`` group is read). See the module docstring for the
    order: ``data.processed_dir`` when it matches, else a per-config folder prepared once under a file
    lock from ``<data.raw_dir>/<data.name>/``.

    Raises:
        DataError: the splits on disk are not the asked ones and there are no raw files to make them
            from (one line: what is there, what is asked, what to run); or the raw files fail their
            checks, or a folder on the way is a file.
    """
    from cnn.data import preprocess_dataset

    data = cfg["data"]
    processed = Path(data["processed_dir"])
    mismatch = describe_mismatch(processed, data)
    if mismatch is None:
        return processed
    target = splits_dir_for(data)
    if describe_mismatch(target, data) is None:
        return target
    raw = Path(data["raw_dir"]) / str(data["name"])
    if not raw.is_dir():
        raise DataError(
            f"{mismatch}, and there is no {raw} to make them from: run `python -m stages.fetch` and "
            "`dvc repro preprocess` with these data params, or set data.processed_dir to splits made so"
        )
    with _exclusive(target.with_name(target.name + ".lock")):
        if describe_mismatch(target, data) is not None:  # nobody prepared it while we waited
            preprocess_dataset(
                data["name"],
                data["raw_dir"],
                target,
                train_size=data["train_size"],
                val_size=data["val_size"],
                test_size=data["test_size"],
                seed=data["seed"],
            )
    return target
