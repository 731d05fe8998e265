"""The splits a job trains on: those its config asks for (:func:`ensure_splits`), and, on a machine that
did not prepare them, fetched once per machine and verified by digest (:func:`stage_splits`).

**Splits that match the config.** A sweep job (``stages/sweep.py``) or a cluster worker overrides
``data.*`` like any other key, but the DVC ``preprocess`` stage wrote ``data.processed_dir`` for
``params.yaml``'s data params only. :func:`ensure_splits` gives the job a folder whose
``{train,val,test}.npz`` were made for *its* data params:

1. ``data.processed_dir`` itself, when its ``stats.json`` says it holds exactly those splits (dataset,
   seed, and the three sizes as asked: ``stats["requested"]``, written by
   :func:`cnn.data.preprocess_dataset`);
2. else ``<parent of data.processed_dir>/splits/<dataset>-<digest>/``, the digest a hash of the data
   params (:func:`data_params_digest`), prepared from the verified raw files in
   ``<data.raw_dir>/<data.name>/`` the first time a job asks for it, under :func:`file_lock` on
   ``<folder>.lock``: parallel jobs prepare it once, the others wait and reuse it. ``stats.json`` is
   written last, so a folder without it is never taken for complete;
3. else (no raw files) a :class:`~cnn.errors.DataError`, one line naming what is on disk and what the job
   asks for, raised before any training.

Call it before training and put the returned folder in the job's config, so that the logged
``data.processed_dir`` is the folder trained on: ``job["data"]["processed_dir"] = str(ensure_splits(job))``.

**Staging on a fresh machine.** A sweep job on a fresh cluster node needs ``train.npz``, ``val.npz``,
``test.npz`` and ``stats.json`` of ``data.processed_dir``. :func:`stage_splits` gives it a local folder
holding exactly the files of a manifest (name -> SHA-256):

1. the node's own copy (``source.reuse_dir``) when every file there has the manifest's digest;
2. else the node's cache, ``<cache_dir>/<manifest key>/``, when already staged (and still verified);
3. else, under an exclusive file lock on ``<cache_dir>/<manifest key>.lock`` (so two jobs on one
   machine never race), the bytes from ``source.fetch()`` — checked against the manifest before
   anything is written — go to a temporary folder that is renamed into place in one step. A second job
   waiting on the lock then finds the folder complete and fetches nothing.

A source is anything with ``reuse_dir`` (a folder that may already hold the files, or None) and
``fetch() -> {name: bytes}``: :class:`ObjectStoreSource` (Ray's object store: the launcher puts the
files there once per sweep) and :class:`DirectorySource` (a shared disk, or a checkout after
``dvc pull``). A DVC-remote source plugs in the same way.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from cnn.atomic import atomic_directory, atomic_write_bytes
from cnn.errors import DataError

SPLIT_FILES = ("train.npz", "val.npz", "test.npz", "stats.json")
REQUIRED = ("train.npz", "val.npz", "test.npz")
CACHE_ENV = "CNN_SPLIT_CACHE"


class SplitSource(Protocol):
    reuse_dir: str | None

    def fetch(self) -> Mapping[str, bytes]: ...


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_manifest(processed_dir: str | os.PathLike[str]) -> dict[str, str]:
    """``{file name: sha256}`` of the split files in ``processed_dir``; DataError names a missing split."""
    folder = Path(processed_dir)
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{folder}: no prepared {', '.join(missing)} to send to the workers (run `dvc repro preprocess`)"
        )
    return {name: sha256_file(folder / name) for name in SPLIT_FILES if (folder / name).is_file()}


def manifest_key(manifest: Mapping[str, str]) -> str:
    """A short name for a manifest: the SHA-256 of its sorted JSON, 16 hex digits."""
    return hashlib.sha256(json.dumps(dict(sorted(manifest.items()))).encode()).hexdigest()[:16]


def matches(folder: str | os.PathLike[str] | None, manifest: Mapping[str, str]) -> bool:
    """True when ``folder`` holds every manifest file with its digest."""
    if folder is None:
        return False
    folder = Path(folder)
    try:
        return all(sha256_file(folder / name) == digest for name, digest in manifest.items())
    except OSError:
        return False


def default_cache_dir() -> Path:
    """This machine's folder for staged splits: ``$CNN_SPLIT_CACHE`` or ``~/.cache/cnn/splits``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "cnn" / "splits")


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if needed), released on exit or process death."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def stage_splits(
    manifest: Mapping[str, str], source: SplitSource, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """A local folder with the manifest's files, verified; fetched from ``source`` at most once per machine.

    Raises:
        DataError: the fetched bytes do not match the manifest (nothing is written), or the cache folder
            cannot be written.
    """
    if matches(source.reuse_dir, manifest):
        return Path(source.reuse_dir)  # type: ignore[arg-type]
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    key = manifest_key(manifest)
    target = cache / key
    if matches(target, manifest):
        return target
    try:
        with file_lock(cache / f"{key}.lock"):
            if matches(target, manifest):  # staged by another job while this one waited
                return target
            payload = source.fetch()
            for name, digest in manifest.items():
                if name not in payload:
                    raise DataError(f"split source has no {name} for manifest {key}")
                got = hashlib.sha256(payload[name]).hexdigest()
                if got != digest:
                    raise DataError(
                        f"{name}: fetched bytes have SHA-256 {got[:12]}…, expected {digest[:12]}…"
                    )
            with atomic_directory(target) as tmp:  # a damaged earlier copy is replaced in one rename
                for name in manifest:
                    atomic_write_bytes(tmp / name, payload[name])
    except OSError as err:
        raise DataError(f"{cache}: cannot stage the splits there ({err.strerror or err})") from None
    return target


class ObjectStoreSource:
    """Split files in Ray's object store (``refs[0]`` holds ``{name: bytes}``), put there once per sweep.

    The reference travels inside a list so that Ray passes it to the task unresolved: a node fetches the
    bytes only when it has to stage them.
    """

    def __init__(self, refs: list[Any], reuse_dir: str | None = None) -> None:
        self.refs = refs
        self.reuse_dir = reuse_dir

    def fetch(self) -> Mapping[str, bytes]:
        import ray

        return ray.get(self.refs[0])


class DirectorySource:
    """Split files in a folder every node can read (a shared disk, a checkout after ``dvc pull``)."""

    def __init__(self, folder: str | os.PathLike[str], reuse_dir: str | None = None) -> None:
        self.folder = Path(folder)
        self.reuse_dir = reuse_dir

    def fetch(self) -> Mapping[str, bytes]:
        try:
            return {p.name: p.read_bytes() for p in self.folder.iterdir() if p.name in SPLIT_FILES}
        except OSError as err:
            raise DataError(f"{self.folder}: cannot read the splits ({err.strerror or err})") from None


# ----------------------------------------------------------------------------------------------------
# Splits that match the config
# ----------------------------------------------------------------------------------------------------
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
    with file_lock(target.with_name(target.name + ".lock")):
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
