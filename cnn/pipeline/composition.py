"""Keep ``params.yaml`` composed from the ``conf/`` it claims to come from: the ``compose`` stage.

DVC composes ``conf/`` into ``params.yaml`` only under ``dvc exp run``; plain ``dvc repro`` reads
``params.yaml`` as it is. So the pipeline's first stage, ``compose``, depends on ``conf/`` and outputs
``params.yaml`` plus :data:`SOURCE_FILE`, which records the SHA-256 of the ``conf/`` tree that
``params.yaml`` was composed from. DVC runs the stage when ``conf/`` or either file changed, and
:func:`refresh_params` then decides:

- ``conf/`` is the one recorded: ``params.yaml`` is current, whatever overrides it was composed with
  (``make repro OVERRIDES=...``, ``python -m cnn.pipeline compose ...``): kept as it is;
- under ``dvc exp run`` (``$DVC_EXP_NAME`` set): DVC composed ``params.yaml`` from this very ``conf/`` and
  the ``-S`` overrides a moment ago: kept, and ``conf/`` recorded;
- otherwise ``conf/`` changed since the composition (an edit, then plain ``dvc repro``): composed again
  from ``conf/`` alone, with one line saying so. Earlier overrides are dropped, as ``dvc exp run`` without
  ``-S`` drops them too.

Every later stage depends on ``params.yaml``, so DVC checks their params after this stage ran: plain
``dvc repro`` after an edit of ``conf/`` trains with the new values.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnn.pipeline.files import write_json
from cnn.pipeline.params import compose_params, load_params
from cnn.pipeline.paths import CONFIG_DIR, PARAMS_FILE

__all__ = ["SOURCE_FILE", "compose_and_record", "conf_digest", "recorded_digest", "refresh_params"]

log = logging.getLogger(__name__)

#: Beside ``params.yaml``: ``{"conf_sha256": ...}`` of the ``conf/`` tree it was composed from.
SOURCE_FILE = "params.conf.json"


def conf_digest(config_dir: str | os.PathLike[str] = CONFIG_DIR) -> str:
    """SHA-256 over every file of ``config_dir`` (relative path and bytes, in sorted order).

    Python caches and editor backups would change it without changing the config: ``__pycache__``
    folders and names starting with ``.`` or ending in ``~`` are skipped.
    """
    root = Path(config_dir)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if "__pycache__" in rel.parts or any(part.startswith(".") for part in rel.parts):
            continue
        if rel.name.endswith("~"):
            continue
        digest.update(rel.as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def recorded_digest(source_file: str | os.PathLike[str] = SOURCE_FILE) -> str | None:
    """The ``conf/`` digest recorded in ``source_file``, or None when it is missing or unreadable."""
    try:
        value = json.loads(Path(source_file).read_text(encoding="utf-8")).get("conf_sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _record(digest: str, source_file: str | os.PathLike[str]) -> None:
    write_json(source_file, {"composed_from": CONFIG_DIR, "conf_sha256": digest})


def compose_and_record(
    overrides: Sequence[str] = (),
    output: str | os.PathLike[str] = PARAMS_FILE,
    config_dir: str | os.PathLike[str] = CONFIG_DIR,
    source_file: str | os.PathLike[str] = SOURCE_FILE,
) -> dict[str, Any]:
    """:func:`~cnn.pipeline.params.compose_params`, then record which ``conf/`` it was composed from."""
    digest = conf_digest(config_dir)
    cfg = compose_params(overrides, output=output, config_dir=config_dir)
    _record(digest, source_file)
    return cfg


def refresh_params(
    output: str | os.PathLike[str] = PARAMS_FILE,
    config_dir: str | os.PathLike[str] = CONFIG_DIR,
    source_file: str | os.PathLike[str] = SOURCE_FILE,
) -> str:
    """Make ``output`` the composition of the current ``config_dir`` (the ``compose`` stage's work).

    Returns what was done: ``"kept"`` (already composed from this ``conf/``), ``"kept-exp"`` (composed by
    ``dvc exp run``) or ``"composed"``. The result is validated either way.

    Raises:
        ConfigError: ``conf/`` does not compose, or ``params.yaml`` does not validate.
    """
    digest = conf_digest(config_dir)
    if recorded_digest(source_file) == digest and Path(output).is_file():
        load_params(output)
        return "kept"
    if os.environ.get("DVC_EXP_NAME") and Path(output).is_file():
        load_params(output)
        _record(digest, source_file)
        return "kept-exp"
    compose_and_record((), output=output, config_dir=config_dir, source_file=source_file)
    return "composed"
