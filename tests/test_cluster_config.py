"""The Ray launcher's rules that need no cluster: which cluster it joins, how many threads a job trains
with (= the CPUs it asks Ray for), and that the presets compose. The cluster itself:
tests/test_cluster_ray.py."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("hydra")

from cnn.pipeline.cluster import cluster_address, job_threads

ROOT = Path(__file__).resolve().parents[1]


def test_the_address_comes_from_the_config_else_ray_address_else_a_local_cluster(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    assert cluster_address({"address": "other:6379"}) == "other:6379"
    assert cluster_address({"address": None}) == "head:6379"
    assert cluster_address({"address": "auto"}) == "head:6379"
    monkeypatch.delenv("RAY_ADDRESS")
    assert cluster_address({}) == "auto"


def test_a_job_trains_with_its_own_threads_else_the_configs_else_num_cpus():
    assert job_threads(["optimizer.lr=0.1", "train.threads=3"], base_threads=2, num_cpus=4) == 3
    assert job_threads(["++train.threads=5"], base_threads=None, num_cpus=4) == 5
    assert job_threads(["optimizer.lr=0.1"], base_threads=2, num_cpus=4) == 2
    assert job_threads(["train.threads=null"], base_threads=None, num_cpus=4) == 4
    assert job_threads([], base_threads=None, num_cpus=1) == 1


@pytest.mark.parametrize("launcher", ["ray_cluster", "slurm"])
def test_the_cluster_launcher_presets_compose(launcher):
    from hydra import compose, initialize_config_dir

    if launcher == "slurm":  # its schema comes with the plugin (the cluster extra)
        pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    target = str(cfg.hydra.launcher._target_)
    assert target.startswith("hydra_plugins.")  # Hydra instantiates launchers only from that package
    if launcher == "ray_cluster":
        assert target.endswith("RayClusterLauncher")
        assert cfg.hydra.launcher.ray.remote.max_retries == 0
        assert "object_store_memory" not in cfg.hydra.launcher.ray.init


def test_the_shared_optuna_preset_needs_a_storage_url_and_names_the_study():
    from hydra import compose, initialize_config_dir

    from cnn.pipeline.study import shared_study

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["hydra/sweeper=optuna_shared", "hydra.sweeper.storage.url=sqlite:///optuna.db"],
            return_hydra_config=True,
        )
    study = shared_study(cfg)
    assert study is not None and (study.name, study.url) == ("cnn-mnist-shared", "sqlite:///optuna.db")
