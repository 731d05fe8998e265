"""DVC's own queue on one machine: two queued smoke experiments run at once (``dvc queue start -j 2``).

Each experiment runs the whole pipeline (both frameworks) in its own temporary workspace. Two jobs at
once on a small machine must not each take every core, so they are queued with ``-S train.threads=1``
(docs/scale.md: ``train.threads`` = cores // jobs). Both finish, each logs one run per framework with
one training thread, and each keeps its own learning rate.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

pytest.importorskip("dvc")
mlflow = pytest.importorskip("mlflow")
pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
LEARNING_RATES = {"queued-a": "0.001", "queued-b": "0.003"}


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def smoke_repo(root: Path, env: dict[str, str], mnist: Path) -> Path:
    """A git + DVC repository with this checkout's conf/, cnn/, stages/ and dvc.yaml on the smoke preset,
    whose fetch stage copies the verified IDX files in ``mnist`` (two queued workers downloading at once
    would test the network, not the queue)."""
    assert all((mnist / f).is_file() for f in MNIST_FILES), f"no MNIST IDX files in {mnist}"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("conf", "cnn", "stages"):
        shutil.copytree(ROOT / name, root / name, ignore=ignore)
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy2(ROOT / name, root / name)
    (root / ".gitignore").write_text("__pycache__/\n/mlflow.db*\n/mlartifacts/\n/checkpoints/\n")
    config = (root / "conf" / "config.yaml").read_text()
    config = config.replace("  - experiment: seed_benchmark\n", "  - experiment: smoke\n")
    config += "\ndata:\n  source_dir: " + str(mnist) + "\n  mirrors: []\n"
    (root / "conf" / "config.yaml").write_text(config)
    run(["git", "init", "-q", "-b", "main"], root, env)
    run(["git", "config", "user.email", "queue-test@example.com"], root, env)
    run(["git", "config", "user.name", "Queue Test"], root, env)
    run([str(VENV_BIN / "dvc"), "init", "-q"], root, env)
    for key, value in (
        ("hydra.enabled", "true"),
        ("hydra.config_dir", "conf"),
        ("hydra.config_name", "config"),
    ):
        run([str(VENV_BIN / "dvc"), "config", key, value], root, env)
    run([sys.executable, "-m", "cnn.pipeline", "compose"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-q", "-m", "smoke pipeline"], root, env)
    return root


def test_two_queued_smoke_experiments_run_at_once_with_one_thread_each(tmp_path, mnist_raw_root):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "HYDRA_"))}
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # outside the queue's temporary workspaces
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        DVC_NO_ANALYTICS="1",
        GIT_CONFIG_NOSYSTEM="1",
        MPLBACKEND="Agg",
        MLFLOW_TRACKING_URI=tracking_uri,
    )
    repo = smoke_repo(tmp_path / "repo", env, mnist_raw_root / "mnist")
    dvc = str(VENV_BIN / "dvc")
    for name, lr in LEARNING_RATES.items():
        run(
            [dvc, "exp", "run", "--queue", "-n", name, "-S", f"optimizer.lr={lr}", "-S", "train.threads=1"],
            repo,
            env,
        )
    # The workers `queue start` spawns outlive it and inherit its stdout and stderr: with pipes there,
    # reading them would wait for the workers to finish, not for the command. Hence a file.
    log = tmp_path / "queue-start.log"
    try:
        with log.open("w") as out:
            started = subprocess.run(
                [dvc, "queue", "start", "-j", "2"],
                cwd=repo,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=120,
            )
        assert started.returncode == 0, log.read_text()

        deadline = time.monotonic() + 1000
        while True:
            status = run([dvc, "queue", "status"], repo, env)
            rows = [line for line in status.splitlines() if any(name in line for name in LEARNING_RATES)]
            if len(rows) == 2 and all(("Success" in r) or ("Failed" in r) for r in rows):
                break
            assert time.monotonic() < deadline, status
            time.sleep(5)
        if not all("Success" in r for r in rows):
            logs = [
                subprocess.run(
                    [dvc, "queue", "logs", name], cwd=repo, env=env, capture_output=True, text=True
                )
                for name in LEARNING_RATES
            ]
            pytest.fail(
                "a queued experiment failed:\n" + status + "\n".join(r.stdout + r.stderr for r in logs)
            )
    finally:  # stop what the test started, whatever happened above
        subprocess.run([dvc, "queue", "stop", "--kill"], cwd=repo, env=env, capture_output=True, timeout=120)

    shown = json.loads(run([dvc, "exp", "show", "--json"], repo, env))
    assert shown, "dvc exp show lists nothing"
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("cnn-mnist")
    runs = client.search_runs([experiment.experiment_id])
    by_exp: dict[str, dict[str, object]] = {}
    for r in runs:
        by_exp.setdefault(r.data.tags.get("dvc_exp_name", ""), {})[r.data.tags["framework"]] = r
    for name, lr in LEARNING_RATES.items():
        assert sorted(by_exp[name]) == ["numpy", "torch"], sorted(by_exp)
        for r in by_exp[name].values():
            assert r.info.status == "FINISHED"
            assert r.data.params["train.threads"] == "1"
            assert float(r.data.params["optimizer.lr"]) == float(lr)
