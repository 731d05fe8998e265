"""Fetch a dataset's four IDX files into ``<raw_dir>/<name>/``, verified against pinned SHA-256 digests.

Layout written (the files are stored **uncompressed**, under their original names)::

    <raw_dir>/<name>/train-images-idx3-ubyte   train-labels-idx1-ubyte
                     t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte
                     manifest.json   {"dataset", "storage", "files": {name: {"sha256", "bytes", "source"}},
                                      "sources"}

Guarantees:

* A file is streamed (and gunzipped when it is ``.gz``) into a temporary file next to its destination
  while its SHA-256 is computed, and renamed into place only if the digest matches the pinned one. An
  interrupted, truncated or corrupt transfer therefore never leaves a file under a trusted name.
* Files already present are re-hashed (about 0.2 s for MNIST) and kept when they match: nothing is
  fetched again. A present file that does not match is deleted and fetched again.
* Sources are asked, in order, only for the files still missing; the first verified copy of each file
  wins. If files are still missing after the last source, one :class:`DataError` lists what every
  source gave. Each failed source is also logged as it fails (logger ``cnn.data``, one line each).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnn.atomic import atomic_open, atomic_write_bytes
from cnn.data.datasets import IDX_FILES, DatasetSpec, get_dataset
from cnn.data.idx import GZIP_MAGIC
from cnn.data.sources import DEFAULT_TIMEOUT_S, Source, SourceUnavailable, default_sources
from cnn.errors import DataError

log = logging.getLogger("cnn.data")

MANIFEST = "manifest.json"
STORAGE = "uncompressed IDX"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch_dataset` did.

    Attributes:
        directory: ``<raw_dir>/<name>``, holding the four verified files and ``manifest.json``.
        manifest: the manifest's content.
        fetched: the file names obtained from a source during this call (empty when all were present).
    """

    directory: Path
    manifest: dict[str, Any]
    fetched: tuple[str, ...]


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks; :class:`DataError` if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with Path(path).open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    return digest.hexdigest()


def install_verified(candidate: Path, dest: Path, sha256: str, size: int) -> str | None:
    """Copy ``candidate`` (plain or gzip, by magic bytes) to ``dest`` iff its uncompressed content has
    digest ``sha256`` and ``size`` bytes.

    The content is streamed into a temporary file in ``dest``'s folder and renamed onto ``dest`` only
    after the digest matched; on any failure (mismatch, bad gzip, too large, an interrupt) the temporary
    is removed and ``dest`` is untouched.

    Returns:
        ``None`` on success, else one line saying what was found instead.
    """
    digest = hashlib.sha256()
    written = 0
    try:
        with atomic_open(dest) as out, candidate.open("rb") as raw:
            compressed = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            source = gzip.GzipFile(fileobj=raw) if compressed else raw
            with source:
                # Read at most one byte past the expected size: a bomb or an oversized file stops there.
                while written <= size and (chunk := source.read(min(_CHUNK, size + 1 - written))):
                    written += len(chunk)
                    digest.update(chunk)
                    out.write(chunk)
            found = digest.hexdigest()
            if written > size:
                raise _Rejected(f"larger than the expected {size} bytes")
            if written < size:
                raise _Rejected(f"{written} bytes, expected {size}")
            if found != sha256:
                raise _Rejected(f"SHA-256 {found[:12]}..., expected {sha256[:12]}...")
    except _Rejected as exc:  # atomic_open removed the temporary; dest is untouched
        return f"{candidate.name}: {exc}"
    except (OSError, EOFError, zlib.error) as exc:  # unreadable or corrupt gzip
        return f"{candidate.name}: corrupt or unreadable: {exc}"
    return None


class _Rejected(Exception):
    """A candidate file's content is not the pinned one (the message says how)."""


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest in ``directory``, or ``None`` if it is absent or not a JSON object."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def verify_dataset_dir(directory: Path, spec: DatasetSpec) -> dict[str, str]:
    """Check that ``directory`` holds the four files of ``spec`` with their pinned digests.

    Returns ``{file name: sha256}``; raises :class:`DataError` naming the first missing or changed file
    and telling the user to run the fetch stage.
    """
    digests: dict[str, str] = {}
    for name in IDX_FILES:
        path = directory / name
        if not path.is_file():
            raise DataError(f"{path}: missing; run `python -m stages.fetch` first")
        found = sha256_file(path)
        if found != spec.sha256[name]:
            raise DataError(
                f"{path}: SHA-256 {found} does not match the pinned {spec.sha256[name]} of {spec.title}; "
                "delete it and run `python -m stages.fetch` again"
            )
        digests[name] = found
    return digests


def fetch_dataset(
    name: str | DatasetSpec,
    raw_dir: str | Path = "data/raw",
    *,
    source_dir: str | Path | None = None,
    mirrors: Sequence[str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    sources: Sequence[Source] | None = None,
) -> FetchResult:
    """Make ``<raw_dir>/<name>/`` hold the four verified IDX files of dataset ``name`` and a manifest.

    Args:
        name: ``"mnist"`` or ``"fashion_mnist"`` (:data:`cnn.data.datasets.DATASETS`), or a
            :class:`DatasetSpec` (tests use small generated datasets this way).
        raw_dir: parent folder; the files go to ``raw_dir / name``.
        source_dir: a local folder with the files (Kaggle or LeCun downloads, ``.gz`` or not), tried first.
        mirrors: HTTPS base URLs to try next; ``None`` = torchvision's mirrors for the dataset, ``[]`` = none.
        timeout_s: per-mirror connect/read timeout.
        sources: overrides the whole source list (``source_dir``/``mirrors``/``timeout_s`` are then unused).

    Returns:
        A :class:`FetchResult`.

    Raises:
        ConfigError: unknown dataset name.
        DataError: some file could not be obtained with a matching digest from any source.
    """
    spec = get_dataset(name)
    directory = Path(raw_dir) / spec.name
    directory.mkdir(parents=True, exist_ok=True)
    old_manifest = read_manifest(directory) or {}
    recorded_files = old_manifest.get("files")
    old_files = recorded_files if isinstance(recorded_files, dict) else {}

    origin: dict[str, str] = {}
    missing: list[str] = []
    for file in IDX_FILES:
        path = directory / file
        if path.is_file():
            if sha256_file(path) == spec.sha256[file]:
                previous = old_files.get(file)
                recorded = previous.get("source") if isinstance(previous, dict) else None
                origin[file] = recorded if isinstance(recorded, str) else "already present"
                continue
            log.warning(
                "%s: SHA-256 does not match the pinned digest; deleting it and fetching it again", path
            )
            path.unlink()
        missing.append(file)

    fetched: list[str] = []
    report: list[str] = []
    if missing:
        chosen = (
            list(sources) if sources is not None else default_sources(spec, source_dir, mirrors, timeout_s)
        )
        for source in chosen:
            if not missing:
                break
            outcome = _try_source(source, spec, directory, missing)
            for file in outcome.installed:
                origin[file] = source.label
            fetched.extend(outcome.installed)
            missing = [file for file in missing if file not in outcome.installed]
            report.append(f"{source.label}: {outcome.summary}")
            if outcome.installed:
                log.info("%s: %d verified file(s)", source.label, len(outcome.installed))
            else:
                log.warning("%s: %s", source.label, outcome.summary)
        if missing:
            tried = " | ".join(report) if report else "no sources configured"
            raise DataError(
                f"could not obtain verified {spec.title} file(s) {', '.join(missing)} in {directory}; "
                f"tried: {tried}"
            )

    manifest = {
        "dataset": spec.name,
        "storage": STORAGE,
        "files": {
            file: {"sha256": spec.sha256[file], "bytes": spec.sizes[file], "source": origin[file]}
            for file in IDX_FILES
        },
        "sources": sorted(set(origin.values())),
    }
    if manifest != old_manifest:
        atomic_write_bytes(directory / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return FetchResult(directory=directory, manifest=manifest, fetched=tuple(fetched))


@dataclass
class _Outcome:
    installed: list[str]
    summary: str


def _try_source(source: Source, spec: DatasetSpec, directory: Path, missing: list[str]) -> _Outcome:
    """Ask one source for the missing files and install those that verify."""
    with tempfile.TemporaryDirectory(prefix="cnn-fetch-") as work:
        try:
            offered = source.candidates(list(missing), Path(work))
        except SourceUnavailable as exc:
            return _Outcome([], str(exc))
        installed: list[str] = []
        problems: list[str] = []
        for file in missing:
            candidates = offered.get(file, [])
            if not candidates:
                problems.append(f"{file}: not offered")
            for candidate in candidates:
                problem = install_verified(candidate, directory / file, spec.sha256[file], spec.sizes[file])
                if problem is None:
                    installed.append(file)
                    break
                problems.append(problem)
    summary = f"{len(installed)} verified file(s)"
    rejected = [p for p in problems if not p.endswith("not offered")] if installed else problems
    if rejected:
        summary += "; " + "; ".join(rejected)
    return _Outcome(installed, summary)
