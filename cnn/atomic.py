"""Atomic file writes: a reader sees the old file or the complete new one, never a part of one."""

from __future__ import annotations

import os
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
