"""Sweep jobs on a Ray cluster: the launcher behind ``hydra/launcher=ray_cluster``.

    ray start --head --num-cpus=4 --include-dashboard=false             # once, on the head machine
    ray start --address=<head>:6379 --num-cpus=4                        # once, on every other machine
    RAY_ADDRESS=<head>:6379 python -m stages.sweep -m hydra/launcher=ray_cluster train.framework=numpy,torch

:func:`launch` (behind ``hydra_plugins.cnn_cluster.ray_cluster_launcher.RayClusterLauncher``) runs each job
with the ``hydra-ray-launcher`` plugin's own ``start_ray`` and remote job runner ``_run_job``, and adds
what a shared cluster needs around them:

- **joins, never starts**: the address is ``hydra.launcher.ray.init.address``, else ``$RAY_ADDRESS``,
  else ``auto`` (a cluster started with ``ray start`` on this machine); the plugin's default
  ``object_store_memory`` (which makes ``ray.init`` refuse to join a running cluster) is dropped;
- **asks for the CPUs it uses**: every job requests ``num_cpus`` = its ``train.threads`` (set from
  ``hydra.launcher.ray.remote.num_cpus`` when the job does not set it), so Ray never packs more
  training threads on a node than it has cores;
- **records where it ran**: the job's MLflow run carries ``ray.node_id``, ``ray.node_ip``,
  ``ray.worker_pid``, ``ray.task_id``, ``ray.wait_s`` (submit to start) and ``host`` tags (through
  MLflow's ``MLFLOW_RUN_CONTEXT``);
- **data by digest**: the prepared splits are put into Ray's object store once per sweep and staged on
  each node once, verified by SHA-256, under a file lock (:mod:`cnn.pipeline.splits`); a node whose own
  copy already has the same digests uses it as is;
- **failures are reported, finished jobs kept**: the launcher waits for every job, even after one
  failed; a job whose worker died (killed, out of memory, node lost) is reported as a failed job (one
  line naming the job, its overrides and Ray's error) and its MLflow run, left RUNNING by the dead
  process, is ended KILLED. The other jobs' runs are FINISHED and stay. ``remote.max_retries`` (0 in
  the preset) lets Ray re-run a job whose worker died instead; the retry ends the dead attempt's run.
  Ctrl-C cancels the running jobs (``ray.cancel``), which end their own runs.

The sweep's context reaches the jobs through the task's environment (Ray workers are not children of
the sweep process): the parent run id, ``MLFLOW_TRACKING_URI`` as the driver resolved it, and DVC's
experiment name.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict

from cnn.errors import CNNError, TrackingError

log = logging.getLogger(__name__)

ADDRESS_ENV = "RAY_ADDRESS"
RUN_CONTEXT_ENV = "MLFLOW_RUN_CONTEXT"  # MLflow adds this JSON object's items as tags to every new run
# What a job inherits from the process that launched the sweep (Ray workers are not its children).
FORWARDED_ENV = ("CNN_MLFLOW_PARENT_RUN_ID", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV")
THREADS_KEYS = ("train.threads", "+train.threads", "++train.threads")
CANCEL_WAIT_S = 30.0  # after Ctrl-C: how long interrupted jobs get to end their own runs


class RayJobError(CNNError):
    """A sweep job did not return: its Ray worker or node died, or Ray could not run it."""


def cluster_address(init: dict[str, Any]) -> str:
    """The cluster to join: ``init.address`` unless null/"auto", else ``$RAY_ADDRESS``, else ``auto``."""
    address = init.get("address")
    if address not in (None, "", "auto"):
        return str(address)
    return os.environ.get(ADDRESS_ENV, "").strip() or "auto"


def _override_value(overrides: Sequence[str], keys: Sequence[str]) -> str | None:
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and key in keys:
            return value
    return None


def job_threads(overrides: Sequence[str], base_threads: Any, num_cpus: int) -> int:
    """A job's training threads: its own ``train.threads`` override, else the config's, else ``num_cpus``."""
    value = _override_value(overrides, THREADS_KEYS)
    if value not in (None, "null", "None"):
        return max(1, int(value))
    if base_threads is not None:
        return max(1, int(base_threads))
    return max(1, int(num_cpus))


def _run_job_on_node(
    hydra_context: Any,
    sweep_config: DictConfig,
    task_function: Any,
    singleton_state: Any,
    env: dict[str, str],
    splits: dict[str, Any] | None,
    submitted: float,
) -> JobReturn:
    """The Ray task: stage the splits, tag the run with this node, then the plugin's ``_run_job``."""
    import ray
    from hydra_plugins.hydra_ray_launcher._launcher_util import _run_job

    started = time.time()
    context = ray.get_runtime_context()
    tags = {
        "ray.node_id": context.get_node_id(),
        "ray.node_ip": ray.util.get_node_ip_address(),
        "ray.worker_pid": str(os.getpid()),
        "ray.task_id": context.get_task_id() or "",
        "ray.wait_s": f"{started - submitted:.3f}",
        "host": socket.gethostname(),
    }
    saved = {key: os.environ.get(key) for key in (*env, RUN_CONTEXT_ENV)}
    os.environ.update(env)
    os.environ[RUN_CONTEXT_ENV] = json.dumps(tags)
    try:
        # A retried task (remote.max_retries > 0) has the same task id: end the dead attempt's run.
        try:
            end_runs_of_dead_tasks([tags["ray.task_id"]], env["MLFLOW_TRACKING_URI"])
        except TrackingError as err:
            print(f"sweep: warning: {err}", file=sys.stderr, flush=True)
        if splits is not None:
            from cnn.pipeline.splits import stage_splits

            local = stage_splits(splits["manifest"], splits["source"], splits["cache_dir"])
            with open_dict(sweep_config):
                sweep_config.data.processed_dir = str(local)
        return _run_job(hydra_context, sweep_config, task_function, singleton_state)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _plain_dict(node: DictConfig | None) -> dict[str, Any]:
    """A config node as a plain dict (empty for None)."""
    if node is None:
        return {}
    return {str(key): value for key, value in (OmegaConf.to_container(node, resolve=True) or {}).items()}  # type: ignore[union-attr]


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Run one batch of sweep jobs on the cluster (``RayClusterLauncher.launch``); see the module docstring.

    Hydra calls it once per sweep (basic sweeper) or once per batch of trials (Optuna).
    """
    import ray
    from hydra_plugins.hydra_ray_launcher._launcher_util import start_ray

    config, hydra_context = launcher.config, launcher.hydra_context
    assert config is not None and hydra_context is not None and launcher.task_function is not None
    setup_globals()
    init = _plain_dict(launcher.ray_cfg.init)
    init.pop("object_store_memory", None)  # only for starting a cluster; joining one refuses it
    init["address"] = cluster_address(init)
    try:
        start_ray(DictConfig(init))
    except ConnectionError as err:
        raise RayJobError(
            f"ray: no Ray cluster at {init['address']} ({' '.join(str(err).split())[:200]}); start one "
            "with `ray start --head` or set RAY_ADDRESS / hydra.launcher.ray.init.address"
        ) from None
    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    remote = _plain_dict(launcher.ray_cfg.remote)
    num_cpus = int(remote.pop("num_cpus", 1) or 1)
    data_cfg = _plain_dict(launcher.data_cfg)
    env = job_env(config)
    log.info("Ray: %d jobs on %s, sweep dir %s", len(job_overrides), init["address"], sweep_dir)

    refs, jobs = [], []
    runner = ray.remote(_run_job_on_node)
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        overrides = list(overrides)
        threads = job_threads(overrides, OmegaConf.select(config, "train.threads", default=None), num_cpus)
        if _override_value(overrides, THREADS_KEYS) is None:
            overrides.append(f"train.threads={threads}")
        sweep_config = hydra_context.config_loader.load_sweep_config(config, overrides)
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = f"ray_job_{idx}"
            sweep_config.hydra.job.num = idx
            sweep_config.hydra.sweep.dir = str(sweep_dir)
            sweep_config.data.processed_dir = str(Path(sweep_config.data.processed_dir).absolute())
        splits = _splits_for(launcher.state, sweep_config.data.processed_dir, data_cfg)
        log.info("\t#%d : %s (num_cpus=%d)", idx, " ".join(filter_overrides(overrides)), threads)
        ref = runner.options(num_cpus=threads, **remote).remote(
            hydra_context,
            sweep_config,
            launcher.task_function,
            Singleton.get_state(),
            env,
            splits,
            time.time(),
        )
        refs.append(ref)
        jobs.append((idx, overrides, sweep_config))
    return _collect(refs, jobs, env["MLFLOW_TRACKING_URI"])


def job_env(config: DictConfig) -> dict[str, str]:
    """Environment for the jobs: the sweep's parent run, DVC's experiment, the tracking URI."""
    from cnn.pipeline import tracking

    env = {key: os.environ[key] for key in FORWARDED_ENV if os.environ.get(key)}
    env["MLFLOW_TRACKING_URI"] = tracking.resolve_tracking_uri(
        OmegaConf.select(config, "tracking.uri", default=None)
    )
    return env


def _splits_for(state: dict[str, Any], processed_dir: str, data_cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The splits to stage on the nodes: their manifest and an object-store reference, put once per sweep."""
    import ray

    from cnn.pipeline.splits import ObjectStoreSource, split_manifest

    stage = str(data_cfg.get("stage", "auto"))
    if stage not in ("auto", "always", "never"):
        raise RayJobError(f"hydra.launcher.data.stage = {stage!r}; expected auto, always or never")
    if stage == "never":
        return None
    cache = state.setdefault("splits", {})
    if processed_dir not in cache:
        manifest = split_manifest(processed_dir)
        payload = {name: (Path(processed_dir) / name).read_bytes() for name in manifest}
        cache[processed_dir] = {
            "manifest": manifest,
            "source": ObjectStoreSource(
                [ray.put(payload)], reuse_dir=None if stage == "always" else processed_dir
            ),
            "cache_dir": data_cfg.get("cache_dir"),  # None: the node's own default
        }
    return cache[processed_dir]


def _collect(refs: list[Any], jobs: list[tuple[int, list[str], DictConfig]], uri: str) -> list[JobReturn]:
    """Wait for every job; a job that did not return becomes a FAILED ``JobReturn`` naming the cause."""
    import ray

    pending = list(refs)
    try:
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=None)
    except KeyboardInterrupt:  # Ctrl-C: interrupt the running jobs (they end their runs KILLED) first
        for ref in pending:
            ray.cancel(ref)
        ray.wait(pending, num_returns=len(pending), timeout=CANCEL_WAIT_S)
        end_runs_of_dead_tasks([ref.task_id().hex() for ref in pending], uri)
        raise
    results: list[JobReturn] = []
    dead: list[str] = []
    for ref, (idx, overrides, sweep_config) in zip(refs, jobs):
        try:
            results.append(ray.get(ref))
        except Exception as err:  # a worker or node died, or Ray could not run the task
            brief = " ".join(str(err).split())[:300] or type(err).__name__
            dead.append(ref.task_id().hex())
            results.append(
                JobReturn(
                    overrides=overrides,
                    working_dir=str(Path(sweep_config.hydra.sweep.dir) / str(idx)),
                    task_name=sweep_config.hydra.job.name,
                    status=JobStatus.FAILED,
                    _return_value=RayJobError(
                        f"ray: sweep job {idx} ({' '.join(filter_overrides(overrides))}) did not finish: "
                        f"{type(err).__name__}: {brief}; its MLflow run is ended KILLED; re-run the sweep"
                    ),
                )
            )
    if dead:
        ended = end_runs_of_dead_tasks(dead, uri)
        log.warning("Ray: %d job(s) died; ended their runs KILLED: %s", len(dead), ", ".join(ended) or "none")
    return results


def end_runs_of_dead_tasks(task_ids: Sequence[str], uri: str, status: str = "KILLED") -> list[str]:
    """End KILLED the MLflow runs still RUNNING that Ray tasks ``task_ids`` opened; return their ids.

    A process that is killed cannot end its own run; the launcher that saw it die does.
    """
    import mlflow

    client = mlflow.MlflowClient(uri)
    ended = []
    try:
        experiments = [e.experiment_id for e in client.search_experiments()]
        for task_id in task_ids:
            for run in client.search_runs(
                experiments,
                filter_string=f"tags.`ray.task_id` = '{task_id}' and attributes.status = 'RUNNING'",
            ):
                client.set_terminated(run.info.run_id, status=status)
                ended.append(run.info.run_id)
    except Exception as err:  # reported, never hides the job's own failure
        raise TrackingError(f"ray: could not end the runs of dead jobs on {uri}: {err}") from None
    return ended
