"""Sweeps on a real two-node Ray cluster (``hydra/launcher=ray_cluster``), run by tests/test_cluster_ray.py.

Not collected on its own (the name does not start with ``test_``): it must run inside a network namespace
that has only loopback, which tests/test_cluster_ray.py creates (``unshare -n``) before running this file
with pytest. The cluster helper refuses to start anywhere else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.ray_cluster import local_ray_cluster
from tests.helpers.synthetic_splits import TINY_DATA_OVERRIDES, write_processed_splits

mlflow = pytest.importorskip("mlflow")

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = "ray-test"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a head node and a second node, 2 CPUs each, dashboard off; stopped afterwards."""
    with local_ray_cluster(tmp_path_factory.mktemp("ray"), cpus=(2, 2)) as address:
        yield address


def sweep_command(tmp_path: Path, *overrides: str) -> list[str]:
    processed = tmp_path / "processed"
    if not processed.exists():
        write_processed_splits(processed)
    return [
        sys.executable,
        "-m",
        "stages.sweep",
        "-m",
        "hydra/launcher=ray_cluster",
        "experiment=smoke",
        f"data.processed_dir={processed}",
        *TINY_DATA_OVERRIDES,  # the data params of those splits
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"tracking.experiment={EXPERIMENT}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        *overrides,
    ]


def sweep_env(address: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": address, "RAY_DEDUP_LOGS": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def runs(tmp_path: Path) -> tuple[list, list]:
    """(parents, children) in the test experiment."""
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    every = client.search_runs([experiment.experiment_id])
    parents = [r for r in every if r.data.tags.get("sweep") == "parent"]
    children = [r for r in every if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def test_four_job_smoke_sweep_runs_on_both_nodes_with_one_parent_and_the_jobs_params(cluster, tmp_path):
    cache = tmp_path / "split-cache"
    command = sweep_command(
        tmp_path,
        "train.framework=numpy,torch",
        "optimizer.lr=1e-3,3e-3",
        "hydra.launcher.data.stage=always",  # both nodes share this disk: make them stage anyway
        f"hydra.launcher.data.cache_dir={cache}",
    )
    done = subprocess.run(
        command, cwd=tmp_path, env=sweep_env(cluster), capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stderr[-4000:]

    parents, children = runs(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert all(c.info.status == "FINISHED" for c in children)
    assert sorted((c.data.tags["framework"], float(c.data.params["optimizer.lr"])) for c in children) == [
        ("numpy", 1e-3),
        ("numpy", 3e-3),
        ("torch", 1e-3),
        ("torch", 3e-3),
    ]
    # Each job asked Ray for one CPU and trained with one thread.
    assert {c.data.params["train.threads"] for c in children} == {"1"}
    # The jobs ran on more than one node, and each run says where.
    assert len({c.data.tags["ray.node_id"] for c in children}) == 2
    assert {c.data.tags["ray.node_ip"] for c in children} == {"127.0.0.1"}
    # The splits were staged once on this machine, verified, and every job trained on the same bytes.
    staged = [p for p in cache.iterdir() if p.is_dir()]
    assert len(staged) == 1
    assert {c.data.params["data.processed_dir"] for c in children} == {str(staged[0])}
    assert len({c.data.tags["data_digest"] for c in children}) == 1
    for name in ("train.npz", "val.npz", "test.npz", "stats.json"):
        assert (staged[0] / name).read_bytes() == (tmp_path / "processed" / name).read_bytes()
    print(
        "per-job wait from submit to start (s):", sorted(float(c.data.tags["ray.wait_s"]) for c in children)
    )


def wait_for_running_child(tmp_path: Path, epochs: str, timeout_s: float = 120) -> object:
    """The RUNNING child run with ``train.epochs=<epochs>``, once the sweep has logged it."""
    deadline = time.monotonic() + timeout_s
    # The parent's pointer exists once the sweep has created the store and the experiment: reading
    # before that would race the sweep's own schema creation.
    while not (tmp_path / "multirun" / "mlflow_parent_run.json").exists():
        assert time.monotonic() < deadline, "the sweep never opened its parent run"
        time.sleep(0.2)
    while time.monotonic() < deadline:
        for child in runs(tmp_path)[1]:
            if child.info.status == "RUNNING" and child.data.params.get("train.epochs") == epochs:
                return child
        time.sleep(0.2)
    raise AssertionError(f"no RUNNING job with train.epochs={epochs} within {timeout_s} s")


def test_a_job_whose_worker_is_killed_is_reported_its_run_ended_killed_and_a_rerun_completes(
    cluster, tmp_path
):
    command = sweep_command(tmp_path, "train.framework=numpy", "train.epochs=1,400")
    log = tmp_path / "sweep.log"
    with log.open("w") as out:  # a file, not a pipe: Ray's log lines would fill a pipe nobody reads yet
        sweep = subprocess.Popen(command, cwd=tmp_path, env=sweep_env(cluster), stdout=out, stderr=out)
        try:
            victim = wait_for_running_child(tmp_path, "400")
            os.kill(
                int(victim.data.tags["ray.worker_pid"]), signal.SIGKILL
            )  # a worker process of our cluster
            sweep.wait(timeout=300)
        finally:
            if sweep.poll() is None:
                sweep.kill()
                sweep.wait()
    stderr = log.read_text()
    assert sweep.returncode == 1
    error = [line for line in stderr.splitlines() if line.startswith("sweep: error:")]
    assert len(error) == 1 and "sweep job 1" in error[0] and "train.epochs=400" in error[0], stderr[-3000:]
    assert "WorkerCrashedError" in error[0]

    parents, children = runs(tmp_path)
    assert [p.info.status for p in parents] == ["FAILED"]
    status = {c.data.params["train.epochs"]: c.info.status for c in children}
    assert status == {"1": "FINISHED", "400": "KILLED"}  # the finished job is kept, none left RUNNING

    rerun = subprocess.run(
        command, cwd=tmp_path, env=sweep_env(cluster), capture_output=True, text=True, timeout=400
    )
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    parents, children = runs(tmp_path)
    assert sorted(p.info.status for p in parents) == ["FAILED", "FINISHED"]
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert sorted(c.data.params["train.epochs"] for c in finished) == ["1", "1", "400"]
    assert not [c for c in children if c.info.status == "RUNNING"]
