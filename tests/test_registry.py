"""The Model Registry: each evaluated model becomes a version; ``champion`` moves only to a better one.

Real MLflow on a SQLite store in ``tmp_path``, real logged models (tiny NumPy CNNs, logged as in training).
The accuracies are given, as the evaluate stage gives them, except where the champion must be re-evaluated
on other test images: there its real accuracy on those images is what the challenger is compared with.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mlflow")

import mlflow

from cnn.errors import TrackingError
from cnn.model import CNN
from cnn.pipeline import registry
from cnn.pipeline.logged_models import InputSpec, log_numpy_model
from tests.helpers.services import local_mlflow_store

SPEC = InputSpec("numpy", (1, 28, 28), 0.1307, 0.3081, 10)
TINY_ARCH = {"conv_channels": ((4,), (8,)), "dense_units": (16,)}


def split(n: int = 40, seed: int = 0) -> registry.TestSplit:
    rng = np.random.default_rng(seed)
    return registry.TestSplit(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n) % 10)


@pytest.fixture
def client(tmp_path, monkeypatch):
    uri = local_mlflow_store(tmp_path, monkeypatch, "registry")
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def trained_run(seed: int = 0) -> str:
    """A finished run holding a logged NumPy model (the training stage's shape of run)."""
    with mlflow.start_run() as run:
        log_numpy_model(CNN(**TINY_ARCH, seed=seed), SPEC, split(2).pixels)
    return run.info.run_id


def test_the_first_evaluated_model_becomes_champion_and_says_why(client):
    run_id = trained_run()
    p = registry.register_and_promote(client, "numpy", run_id, 0.91, split())
    assert (p.name, p.version, p.champion, p.promoted) == ("cnn-numpy", "1", "1", True)
    version = client.get_model_version_by_alias("cnn-numpy", "champion")
    assert str(version.version) == "1" and version.run_id == run_id
    assert version.tags["test_accuracy"] == "0.91" and version.tags["test_images"] == "40"
    assert (
        version.tags["champion_decision"]
        == "promoted to champion: first version of cnn-numpy; test_accuracy 0.9100"
    )
    assert (
        client.get_registered_model("cnn-numpy")
        .tags["champion_reason"]
        .startswith("version 1: first version")
    )
    assert client.get_run(run_id).data.tags["registered_model"] == "cnn-numpy/1"


def test_champion_moves_only_to_a_version_with_strictly_higher_test_accuracy(client):
    test = split()
    decisions = []
    for seed, accuracy in enumerate((0.90, 0.89, 0.90, 0.95)):
        p = registry.register_and_promote(client, "numpy", trained_run(seed), accuracy, test)
        decisions.append((p.version, p.champion, p.promoted))
    assert decisions == [("1", "1", True), ("2", "1", False), ("3", "1", False), ("4", "4", True)]
    assert str(client.get_model_version_by_alias("cnn-numpy", "champion").version) == "4"
    assert client.get_model_version("cnn-numpy", "2").tags["champion_decision"] == (
        "not champion: test_accuracy 0.8900 <= 0.9000 of version 1 (same test split, 40 test images)"
    )
    assert (
        client.get_model_version("cnn-numpy", "3")
        .tags["champion_decision"]
        .startswith("not champion: test_accuracy 0.9000 <= 0.9000 of version 1")
    )
    assert client.get_registered_model("cnn-numpy").tags["champion_reason"] == (
        "version 4: test_accuracy 0.9500 > 0.9000 of version 1 (same test split, 40 test images)"
    )


def test_an_equal_accuracy_is_a_tie_whatever_its_decimal_expansion(client):
    test = split(n=30)
    registry.register_and_promote(client, "numpy", trained_run(0), 10 / 30, test)
    tie = registry.register_and_promote(client, "numpy", trained_run(1), 10 / 30, test)
    assert not tie.promoted and tie.champion == "1"


def test_evaluating_the_same_run_again_reuses_its_version(client):
    run_id = trained_run()
    first = registry.register_and_promote(client, "numpy", run_id, 0.9, split())
    again = registry.register_and_promote(client, "numpy", run_id, 0.9, split())
    assert first.version == again.version == "1"
    assert len(client.search_model_versions("name = 'cnn-numpy'")) == 1
    assert again.reason == "champion: already the champion; test_accuracy 0.9000"


def test_a_champion_scored_on_other_test_images_is_re_evaluated_on_these(client):
    champion_run = trained_run(seed=1)
    registry.register_and_promote(client, "numpy", champion_run, 0.99, split(seed=1))  # a tiny, easy split
    other = split(n=50, seed=2)
    model = mlflow.pyfunc.load_model("models:/cnn-numpy/1")
    real = float(np.mean(model.predict(other.pixels).argmax(axis=1) == other.labels))

    below = registry.register_and_promote(client, "numpy", trained_run(seed=2), real, other)
    assert not below.promoted
    assert (
        f"<= {real:.4f} of version 1 (champion re-evaluated on this test split, 50 test images)"
        in below.reason
    )
    above = registry.register_and_promote(client, "numpy", trained_run(seed=3), real + 0.02, other)
    assert above.promoted and str(client.get_model_version_by_alias("cnn-numpy", "champion").version) == "3"


def test_each_framework_has_its_own_registered_model_and_champion(client):
    numpy_p = registry.register_and_promote(client, "numpy", trained_run(0), 0.8, split())
    torch_p = registry.register_and_promote(client, "torch", trained_run(1), 0.7, split())
    assert (numpy_p.name, torch_p.name) == ("cnn-numpy", "cnn-torch")
    assert numpy_p.promoted and torch_p.promoted


def test_a_run_without_a_logged_model_is_refused_with_one_line(client):
    with mlflow.start_run(run_name="no-model") as run:
        pass
    with pytest.raises(TrackingError, match=r"run \w+ \(no-model\) logged no model; nothing to register"):
        registry.register_and_promote(client, "numpy", run.info.run_id, 0.9, split())


def test_test_split_digest_depends_on_the_images_and_labels_only():
    a = split(seed=3)
    same = registry.TestSplit(a.pixels.copy(), a.labels.astype(np.int32))
    relabelled = registry.TestSplit(a.pixels, np.roll(a.labels, 1))
    assert a.digest == same.digest != relabelled.digest
