"""One atomic writer: only ``cnn/atomic.py`` renames a temporary file onto its target.

Every file the project writes goes through :func:`cnn.atomic.atomic_open` (a temporary name in the same
folder, fsync, then ``os.replace``), so a reader never sees half a file. The checkpoint module may call the
rename primitives only through ``cnn.atomic``.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RENAME = re.compile(r"\bos\.(replace|rename)\(|\.(rename|replace)\(\s*[\w.]*\s*\)|\bshutil\.move\(")
ATOMIC_IMPORT = re.compile(r"^from cnn\.atomic import|^import cnn\.atomic", re.M)


def exempt(rel: str, text: str) -> bool:
    """cnn/atomic.py itself; the checkpoint module only while it imports cnn.atomic."""
    return rel == "cnn/atomic.py" or (rel == "cnn/checkpoint.py" and bool(ATOMIC_IMPORT.search(text)))


def python_files() -> list[Path]:
    return sorted([*(ROOT / "cnn").rglob("*.py"), *(ROOT / "stages").rglob("*.py")])


def test_only_cnn_atomic_renames_files_into_place():
    offenders = []
    for path in python_files():
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        if exempt(rel, text):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            if RENAME.search(code) and not code.lstrip().startswith(('"', "'", "``")):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, "write through cnn.atomic instead:\n" + "\n".join(offenders)


def test_the_checkpoint_module_writes_through_cnn_atomic():
    checkpoint = ROOT / "cnn" / "checkpoint.py"
    if checkpoint.is_file():
        assert ATOMIC_IMPORT.search(checkpoint.read_text(encoding="utf-8"))
