"""DVC's own queue on one machine: two queued smoke experiments run at once (``dvc queue start -j 2``).

Each experiment runs the whole pipeline (both frameworks) in its own temporary workspace. Two jobs at
once on a small machine must not each take every core, so they are queued with ``-S train.threads=1``
(docs/scale.md: ``train.threads`` = cores // jobs). Both finish, each logs one run per framework with
one training thread, and each keeps its own learning rate.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.helpers.smoke_project import DVC, clean_env, run, smoke_repository

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

pytest.importorskip("dvc")
mlflow = pytest.importorskip("mlflow")
pytest.importorskip("torch")

LEARNING_RATES = {"queued-a": "0.001", "queued-b": "0.003"}


def test_two_queued_smoke_experiments_run_at_once_with_one_thread_each(tmp_path, mnist_raw_root):
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # outside the queue's temporary workspaces
    env = clean_env(MLFLOW_TRACKING_URI=tracking_uri)
    # The fetch stage copies the session's verified IDX files: two queued workers downloading MNIST at
    # once would test the network, not the queue.
    repo = smoke_repository(tmp_path / "repo", env, mnist_raw_root / "mnist")
    dvc = DVC
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
            status = run([dvc, "queue", "status"], repo, env).stdout
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

    shown = json.loads(run([dvc, "exp", "show", "--json"], repo, env).stdout)
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
