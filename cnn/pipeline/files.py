"""The pipeline's small file formats, written atomically through :mod:`cnn.atomic` and read with one-line
errors: JSON (metrics, DVC plot data, run pointers), text (reports) and compressed ``.npz`` (no pickle)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from cnn.atomic import atomic_open, atomic_write_text
from cnn.errors import DataError

__all__ = ["read_json", "write_json", "write_npz", "write_text"]


def write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (no NaN/inf) to ``path`` atomically; returns the path."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    return atomic_write_text(path, text)


def write_npz(path: str | os.PathLike[str], **arrays: np.ndarray) -> Path:
    """Write ``arrays`` as a compressed ``.npz`` to ``path`` atomically; returns the path."""
    with atomic_open(path) as fh:  # a file object: np.savez would append ".npz" to a bare name
        np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub: **kwds typed as allow_pickle
    return Path(path)


def read_json(path: str | os.PathLike[str], what: str, hint: str) -> Any:
    """Parse ``path`` as JSON; :class:`DataError` naming the file if it is missing (with ``hint``: which
    stage writes it) or malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found; {hint}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: expected {what} as JSON, found unreadable content ({exc})") from None
