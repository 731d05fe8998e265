"""``params.yaml``: compose it from ``conf/`` and read it back validated.

- :func:`compose_params` -- compose ``conf/`` into ``params.yaml`` exactly as ``dvc exp run`` does (it calls
  DVC's own Hydra composition), then validate it. ``make repro`` runs it before ``dvc repro``, which does
  not compose by itself (``python -m cnn.pipeline compose [OVERRIDE ...]``).
- :func:`load_params` -- read and validate ``params.yaml`` (:func:`cnn.pipeline.config.validate_config`).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from cnn.atomic import atomic_write_bytes
from cnn.errors import ConfigError
from cnn.pipeline.config import validate_config
from cnn.pipeline.paths import CONFIG_DIR, CONFIG_NAME, PARAMS_FILE
from cnn.pipeline.stage import one_line

__all__ = ["compose_params", "load_params"]


def compose_params(
    overrides: Sequence[str] = (),
    output: str | os.PathLike[str] = PARAMS_FILE,
    config_dir: str | os.PathLike[str] = CONFIG_DIR,
    config_name: str = CONFIG_NAME,
) -> dict[str, Any]:
    """Compose ``config_dir`` with Hydra ``overrides`` into ``output``, as ``dvc exp run -S ...`` would.

    The file is written by DVC's own ``compose_and_dump`` (so ``dvc exp run`` and ``make repro`` produce
    byte-identical files) to a temporary name, validated, then moved into place: an invalid composition
    leaves the previous ``params.yaml`` untouched.

    Returns:
        The validated config (:func:`cnn.pipeline.config.validate_config`).

    Raises:
        ConfigError: an unknown group option or key, a malformed override, or a value the schema rejects.
    """
    from dvc.utils.hydra import compose_and_dump
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    output = Path(output)
    config_dir = Path(config_dir).resolve()
    if not (config_dir / f"{config_name}.yaml").is_file():
        raise ConfigError(f"{config_dir / config_name}.yaml: not found; expected the Hydra primary config")
    with tempfile.TemporaryDirectory(prefix="cnn-compose-") as work:
        # DVC picks its dumper by suffix: the composed file must end in .yaml too.
        composed_file = Path(work) / f"{output.stem}{output.suffix}"
        try:
            compose_and_dump(
                composed_file, str(config_dir), None, config_name, str(config_dir.parent), list(overrides)
            )
            composed = cast(
                dict[str, Any], OmegaConf.to_container(OmegaConf.load(composed_file), resolve=True)
            )
            cfg = validate_config(composed, source=f"{CONFIG_DIR}/ with overrides {list(overrides)}")
        except (HydraException, OmegaConfBaseException) as exc:
            raise ConfigError(
                f"{CONFIG_DIR}/ with overrides {list(overrides)}: {_hydra_message(exc)}"
            ) from exc
        atomic_write_bytes(output, composed_file.read_bytes())
    return cfg


def _hydra_message(exc: BaseException) -> str:
    """One line from a Hydra composition error: key, value and what is allowed where Hydra says so."""
    text = str(exc).strip()
    missing = re.search(r"Could not find '([\w/]+)/(\w+)'", text)
    options = getattr(exc, "options", None)
    if missing and options:
        group, option = missing.groups()
        allowed = ", ".join(options)
        return f"{group} = {option!r} is not allowed; expected one of {allowed} ({CONFIG_DIR}/{group}/)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and lines[0].startswith("Could not override"):
        # "Could not override 'optimizer.foo'. To append to your config use +optimizer.foo=1"
        return " ".join(lines[:2])
    return lines[0] if lines else type(exc).__name__


def load_params(path: str | os.PathLike[str] = PARAMS_FILE) -> dict[str, Any]:
    """Read ``path`` (the composed config) and return it validated, every schema key filled in.

    Raises:
        ConfigError: missing or not YAML, or :func:`~cnn.pipeline.config.validate_config` rejects it.
    """
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: not found; compose it from {CONFIG_DIR}/ with `python -m cnn.pipeline compose` "
            "(make repro and dvc exp run do this)"
        )
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (OmegaConfBaseException, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid YAML config: {one_line(exc)}") from exc
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping of config groups, found {type(raw).__name__}")
    return validate_config(cast(Mapping[str, Any], raw), source=str(path))
