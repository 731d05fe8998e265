"""A throwaway git + DVC copy of this project on the smoke experiment, for the end-to-end tests.

:func:`copy_project` copies ``conf/``, ``cnn/``, ``stages/``, ``dvc.yaml`` and ``.dvcignore`` (plus any
``extra`` files), switches ``conf/config.yaml`` to ``experiment: smoke`` (so ``dvc exp run``, which
composes ``conf/`` itself, stays on the smoke preset too) and points its fetch stage at a folder of
verified MNIST IDX files (the session fixture ``mnist_raw_root``: no test downloads MNIST twice, and no
two DVC workers download it at once). :func:`init_repository` makes it a git + DVC repository;
:func:`smoke_repository` does both, composes ``params.yaml`` and commits.
:func:`clean_env` is the environment the subprocesses run in, :func:`run` runs one and says why it failed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parents[1]
VENV_BIN = VENV / "bin"
DVC = str(VENV_BIN / "dvc")
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DEFAULT_EXPERIMENT = "  - experiment: seed_benchmark\n"


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without MLflow, DVC and Hydra settings (the copy uses its own), with this
    interpreter's ``bin/`` first on PATH (the stages' ``python`` and ``dvc``), DVC's analytics off,
    no system git config, matplotlib headless; then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "HYDRA_"))}
    env.pop("PYTHONPATH", None)  # the stages import the copy's cnn/ (python -m runs from the copy)
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        DVC_NO_ANALYTICS="1",
        GIT_CONFIG_NOSYSTEM="1",
        MPLBACKEND="Agg",
    )
    env.update(extra)
    return env


def run(
    cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in ``cwd``, output captured; with ``check``, fail with its exit code and output.

    Not for commands that leave processes behind holding the pipes (``dvc queue start``): reading them
    would wait for those processes."""
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def copy_project(root: Path, mnist: Path, extra: Iterable[str] = ()) -> Path:
    """This checkout's pipeline copied into ``root`` (created), on the smoke experiment, its fetch stage
    reading the IDX files in ``mnist``. ``extra``: more top-level files to copy (``Makefile``, ...)."""
    missing = [name for name in MNIST_FILES if not (mnist / name).is_file()]
    assert not missing, f"no {', '.join(missing)} in {mnist}"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("conf", "cnn", "stages"):
        shutil.copytree(ROOT / name, root / name, ignore=ignore)
    for name in ("dvc.yaml", ".dvcignore", *extra):
        shutil.copy2(ROOT / name, root / name)
    if not (root / ".gitignore").exists():
        (root / ".gitignore").write_text(
            "__pycache__/\n/mlflow.db*\n/mlartifacts/\n/checkpoints/\n/.pytest_cache/\n"
        )
    config = (root / "conf" / "config.yaml").read_text()
    assert DEFAULT_EXPERIMENT in config, "conf/config.yaml no longer defaults to experiment: seed_benchmark"
    config = config.replace(DEFAULT_EXPERIMENT, "  - experiment: smoke\n")
    config += f"\ndata:\n  source_dir: {mnist}\n  mirrors: []\n"
    (root / "conf" / "config.yaml").write_text(config)
    return root


def init_repository(root: Path, env: dict[str, str], dvc_config: Path | None = None) -> None:
    """``git init`` (branch main, a test identity) and ``dvc init`` in ``root``; DVC's Hydra composition
    switched on (``conf/config``) or, with ``dvc_config``, that ``.dvc/config`` copied in instead."""
    run(["git", "init", "-q", "-b", "main"], root, env)
    git_identity(root, env)
    run([DVC, "init", "-q"], root, env)
    if dvc_config is not None:
        shutil.copy2(dvc_config, root / ".dvc" / "config")
        return
    for key, value in (
        ("hydra.enabled", "true"),
        ("hydra.config_dir", "conf"),
        ("hydra.config_name", "config"),
    ):
        run([DVC, "config", key, value], root, env)


def smoke_repository(root: Path, env: dict[str, str], mnist: Path) -> Path:
    """:func:`copy_project` into ``root``, :func:`init_repository`, ``params.yaml`` composed, all committed
    as ``main``: the pipeline ready for ``dvc repro`` or ``dvc exp run``."""
    copy_project(root, mnist)
    init_repository(root, env)
    run([sys.executable, "-m", "cnn.pipeline", "compose"], root, env)
    commit_all(root, env, "smoke pipeline")
    return root


def git_identity(root: Path, env: dict[str, str]) -> None:
    run(["git", "config", "user.email", "smoke-test@example.com"], root, env)
    run(["git", "config", "user.name", "Smoke Test"], root, env)


def commit_all(root: Path, env: dict[str, str], message: str) -> None:
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-q", "-m", message], root, env)
