"""Atomic file writes: a reader sees the old file or the complete new one, never a part of one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary file next to ``path`` for binary writing; on a clean exit fsync it, give it the
    usual permissions (``0o666 & ~umask``) and rename it onto ``path``.

    An exception inside the block (including ``KeyboardInterrupt``) removes the temporary and leaves
    ``path`` untouched. The temporary's name is unique (``.<name>.<random>.tmp``), so concurrent writers
    never share one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], *chunks: bytes | memoryview | np.ndarray) -> Path:
    """Write the chunks to ``path`` atomically (:func:`atomic_open`); returns the path."""
    with atomic_open(path) as fh:
        for chunk in chunks:
            fh.write(chunk)  # type: ignore[arg-type]  # an ndarray is a buffer; numpy stubs (py3.10) omit it
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_open`); returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Fill a temporary folder next to ``path``; on a clean exit give it the usual permissions
    (``0o777 & ~umask``) and rename it onto ``path`` (an existing folder there is set aside first, then
    removed). A reader sees the old folder, no folder, or the complete new one, never a part of one.

    An exception inside the block removes the temporary and leaves ``path`` untouched. Files written in
    the block should be fsync-ed by the writer if they must survive a crash (:func:`atomic_open` does).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():  # set aside, then replaced in one rename
            stale = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".stale"))
            os.replace(path, stale / path.name)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
