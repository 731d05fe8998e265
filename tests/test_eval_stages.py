"""cnn.pipeline.evaluate and the evaluate and plot stages on tiny fixture outputs: two small real models
(NumPy CNN and TorchCNN, different seeds so they disagree), a 60-image test split, training metrics
and histories."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnn.data import save_split
from cnn.errors import CheckpointError, DataError
from cnn.model import CNN
from cnn.pipeline.evaluate import PlotPaths, evaluate, evaluate_from_config, load_predictions
from cnn.pipeline.figures import FIGURES, render_figures

torch = pytest.importorskip("torch")
from cnn.torch_model import TorchCNN  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N_TEST = 60
ARCH = {"conv_channels": ((4,), (4,)), "dense_units": (8,)}


def history(acc: float) -> list[dict]:
    return [
        {
            "epoch": e,
            "loss": 2 / e,
            "accuracy": acc * e / 2,
            "val_loss": 2.1 / e,
            "val_accuracy": acc * e / 2.1,
            "lr": 1e-3,
            "epoch_time": 1.5,
        }
        for e in (1, 2)
    ]


def make_pipeline_outputs(root) -> PlotPaths:
    """What fetch, preprocess and the two training stages would have left under ``root``."""
    paths = PlotPaths(
        processed_dir=root / "data" / "processed",
        models_dir=root / "models",
        metrics_dir=root / "metrics",
        plots_dir=root / "plots",
        reports_dir=root / "reports",
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_TEST, 1, 28, 28)).astype(np.float32)
    y = (np.arange(N_TEST) % 10).astype(np.int64)
    save_split(paths.test, x, y)
    paths.stats.write_text(
        json.dumps({"dataset": "mnist", "sizes": {"train": 500, "val": 100, "test": N_TEST}})
    )
    CNN(**ARCH, seed=0).save(paths.model("numpy"))
    TorchCNN(**ARCH, seed=1).save(paths.model("torch"))
    paths.metrics_dir.mkdir(parents=True)
    paths.plots_dir.mkdir(parents=True)
    for fw, seconds in (("numpy", 30.0), ("torch", 3.0)):
        train = {"train_time_s": seconds, "samples_per_sec": 1000 / seconds, "epochs": 2, "batch_size": 32}
        train["final"] = {"loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.45}
        paths.train_metrics(fw).write_text(json.dumps(train))
        paths.history(fw).write_text(json.dumps(history(0.5 if fw == "numpy" else 0.6)))
    return paths


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    paths = make_pipeline_outputs(tmp_path_factory.mktemp("pipeline"))
    return paths, evaluate(paths, batch_size=25, track=False)


def test_evaluate_metrics_equal_the_models_own_predictions(evaluated):
    paths, ev = evaluated
    m = json.loads(paths.evaluate_metrics.read_text())
    assert m == json.loads(json.dumps(ev.metrics))
    x, y = np.load(paths.test)["x"], np.load(paths.test)["y"]
    numpy_model = CNN.load(paths.model("numpy"))
    reference = numpy_model.evaluate(x, y)
    assert m["numpy"]["test_accuracy"] == pytest.approx(reference["accuracy"])
    assert m["numpy"]["test_loss"] == pytest.approx(reference["loss"], rel=1e-5)
    torch_model = TorchCNN.load(paths.model("torch")).eval()
    with torch.no_grad():
        logits = torch_model(torch.from_numpy(x))
    assert m["torch"]["test_loss"] == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(y))), rel=1e-5
    )
    assert m["torch"]["test_accuracy"] == pytest.approx(float((logits.argmax(1).numpy() == y).mean()))


def test_evaluate_json_has_the_contract_keys_and_brings_in_training_numbers(evaluated):
    paths, _ = evaluated
    m = json.loads(paths.evaluate_metrics.read_text())
    per_class = json.loads(paths.per_class.read_text())  # not a DVC metric: dvc exp show stays readable
    for fw, seconds in (("numpy", 30.0), ("torch", 3.0)):
        r = m[fw]
        assert {"test_accuracy", "test_loss", "macro", "weighted", "misclassified"} <= set(r)
        assert "per_class" not in r
        r = {**r, "per_class": per_class[fw]}
        assert r["train_time_s"] == seconds and r["epochs"] == 2 and r["batch_size"] == 32
        assert r["samples_per_sec"] == pytest.approx(1000 / seconds) and r["final_val_accuracy"] == 0.45
        assert r["inference_images_per_sec"] > 0 and r["inference_batch_size"] == 25
        assert list(r["per_class"]) == [str(c) for c in range(10)]
        assert sum(c["support"] for c in r["per_class"].values()) == N_TEST
        assert r["misclassified"] == round(N_TEST * (1 - r["test_accuracy"]))
    assert m["test_images"] == N_TEST


def test_agreement_and_disagreement_indices_match_the_predictions(evaluated):
    paths, _ = evaluated
    m = json.loads(paths.evaluate_metrics.read_text())
    pred = load_predictions(paths.predictions)
    np_pred, pt_pred = pred["numpy_proba"].argmax(1), pred["torch_proba"].argmax(1)
    d = json.loads(paths.disagreements.read_text())
    assert d["indices"] == np.flatnonzero(np_pred != pt_pred).tolist()
    assert d["numpy"] == np_pred[d["indices"]].tolist() and d["true"] == pred["y"][d["indices"]].tolist()
    ag = m["agreement"]
    assert ag["disagreements"] == len(d["indices"]) > 0  # different seeds: the models do disagree
    assert ag["rate"] == pytest.approx(1 - len(d["indices"]) / N_TEST)
    assert (
        ag["both_correct"] + ag["only_numpy_correct"] + ag["only_torch_correct"] + ag["both_wrong"] == N_TEST
    )
    assert 0 < ag["mcnemar_p"] <= 1


def test_predictions_file_holds_probabilities_of_each_model(evaluated):
    paths, _ = evaluated
    pred = load_predictions(paths.predictions)
    x = np.load(paths.test)["x"]
    for fw in ("numpy", "torch"):
        p = pred[f"{fw}_proba"]
        assert p.shape == (N_TEST, 10) and p.dtype == np.float32
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(pred["numpy_proba"].argmax(1), CNN.load(paths.model("numpy")).predict(x))


def test_confusion_plot_data_has_one_actual_predicted_row_per_test_image(evaluated):
    paths, _ = evaluated
    pred = load_predictions(paths.predictions)
    for fw in ("numpy", "torch"):
        rows = json.loads(paths.confusion(fw).read_text())
        assert len(rows) == N_TEST and set(rows[0]) == {"actual", "predicted"}
        assert [r["actual"] for r in rows] == pred["y"].tolist()
        assert [r["predicted"] for r in rows] == pred[f"{fw}_proba"].argmax(1).tolist()


def test_comparison_report_is_rendered_with_both_frameworks(evaluated):
    paths, ev = evaluated
    md = paths.comparison.read_text()
    acc = ev.metrics["numpy"]["test_accuracy"]
    assert f"| NumPy CNN | MNIST (500 train, 60 test) | {acc:.2%} |" in md
    assert "| PyTorch CNN |" in md and "30.0 s | 2 × 32 |" in md and "3.0 s | 2 × 32 |" in md
    assert "Training: PyTorch is 10.0× faster than NumPy." in md
    assert "Measured on" in md


def test_evaluate_names_the_missing_training_metrics_file(tmp_path):
    paths = make_pipeline_outputs(tmp_path)
    paths.train_metrics("torch").unlink()
    with pytest.raises(DataError, match=r"train_torch\.json: training metrics not found"):
        evaluate(paths, track=False)


def test_evaluate_names_the_missing_model(tmp_path):
    paths = make_pipeline_outputs(tmp_path)
    paths.model("numpy").unlink()
    with pytest.raises(CheckpointError, match=r"model\.npz: trained numpy model not found"):
        evaluate(paths, track=False)


def test_evaluate_from_config_reads_the_inference_batch_size_from_the_evaluate_group(tmp_path, monkeypatch):
    from cnn.pipeline.config import validate_config

    make_pipeline_outputs(tmp_path)
    monkeypatch.chdir(tmp_path)  # outputs other than data.processed_dir are relative to the repo root
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["processed_dir"] = "data/processed"
    params["evaluate"]["batch_size"] = 7
    cfg = validate_config(params)
    ev = evaluate_from_config(cfg, track=False)
    assert ev.metrics["numpy"]["inference_batch_size"] == ev.metrics["torch"]["inference_batch_size"] == 7
    assert json.loads((tmp_path / "metrics" / "evaluate.json").read_text()) == json.loads(
        json.dumps(ev.metrics)
    )


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


def test_plot_stage_writes_the_six_figures(evaluated):
    paths, _ = evaluated
    written = render_figures(paths, num_samples=16, max_misclassified=8, track=False)
    assert [p.stem for p in written] == list(FIGURES)
    for p in written:
        width, height = png_size(p)
        assert width >= 1000 and height >= 200, p.name


def test_plot_refuses_predictions_from_another_test_split(evaluated, tmp_path):
    paths, _ = evaluated
    other = replace(paths, reports_dir=tmp_path)
    np.savez(other.predictions, y=np.zeros(N_TEST, np.int64), numpy_proba=np.zeros((N_TEST, 10), np.float32))
    with pytest.raises(DataError, match="labels differ"):
        render_figures(other, track=False)


@pytest.mark.slow
def test_both_stages_log_to_the_training_runs(tmp_path):
    """Real MLflow on a SQLite file: evaluate adds test metrics and the report, plot adds the figures."""
    mlflow = pytest.importorskip("mlflow")
    from cnn.pipeline import tracking

    paths = make_pipeline_outputs(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.configure_tracking(uri)
    experiment = tracking.ensure_experiment("test-eval", uri)
    client = mlflow.MlflowClient(uri)
    run_ids = {}
    for fw in ("numpy", "torch"):
        run = client.create_run(experiment, run_name=f"repro-{fw}")
        client.set_terminated(run.info.run_id)
        tracking.write_run_pointer(paths.run_pointer(fw), run, tracking_uri=uri)
        run_ids[fw] = run.info.run_id
    ev = evaluate(paths, batch_size=30, track=True, tracking_uri=uri)
    render_figures(paths, num_samples=8, track=True, tracking_uri=uri)
    for fw, run_id in run_ids.items():
        logged = client.get_run(run_id).data.metrics
        assert logged["test_accuracy"] == pytest.approx(ev.metrics[fw]["test_accuracy"])
        assert logged["agreement_rate"] == pytest.approx(ev.metrics["agreement"]["rate"])
        artifacts = {a.path for a in client.list_artifacts(run_id, "evaluation")}
        assert {
            "evaluation/comparison.md",
            "evaluation/evaluate.json",
            f"evaluation/confusion_{fw}.json",
        } <= artifacts
        figures = {a.path for a in client.list_artifacts(run_id, "figures")}
        assert figures == {f"figures/{name}.png" for name in FIGURES}


@pytest.mark.slow
def test_stage_commands_run_from_params_yaml(tmp_path, repo_root):
    """``python -m stages.evaluate`` and ``python -m stages.plot`` as DVC runs them, in the working dir."""
    from cnn.pipeline import compose_params

    make_pipeline_outputs(tmp_path)
    compose_params([], output=tmp_path / "params.yaml", config_dir=repo_root / "conf")
    for stage in ("evaluate", "plot"):
        done = subprocess.run(
            [sys.executable, "-m", f"stages.{stage}", "--no-track"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().splitlines()[-1].startswith(f"{stage}: ")
    assert (tmp_path / "reports" / "comparison.md").is_file()
    assert sorted(p.stem for p in (tmp_path / "reports" / "figures").glob("*.png")) == sorted(FIGURES)


def test_a_dead_tracking_server_fails_before_any_inference(tmp_path):
    import socket

    from cnn.errors import TrackingError

    paths = make_pipeline_outputs(tmp_path)
    with socket.socket() as s:  # a port nobody listens on once the socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TrackingError, match=str(port)):
        evaluate(paths, track=True, tracking_uri=f"http://127.0.0.1:{port}")
    assert not paths.evaluate_metrics.exists() and not paths.comparison.exists()
