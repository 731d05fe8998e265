"""The logged models take what a user has -- raw MNIST pixels -- and the served champion answers over HTTP.

- :func:`cnn.pipeline.logged_models.prepare_images`: uint8 0-255 or float 0-1, ``(N, 28, 28)`` or
  ``(N, 1, 28, 28)``, normalised exactly as the preprocess stage does; anything else refused in one line;
- the logged NumPy and torch models (``mlflow.pyfunc.load_model``) return the model's logits for raw
  images, record an output signature, a raw input example and their normalisation, and load without
  unpickling anything;
- end to end (slow): real MNIST, the training and evaluate stages' code, the registry's champion served by
  a real ``mlflow models serve --env-manager local`` on 127.0.0.1, raw uint8 test images POSTed to
  ``/invocations``: the same classes as ``CNN.predict`` on ``data/processed``.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mlflow")

import mlflow

from cnn.data.preprocess import normalize_images
from cnn.errors import DataError
from cnn.model import CNN
from cnn.pipeline.logged_models import InputSpec, log_numpy_model, log_torch_model, prepare_images, raw_pixels
from tests.helpers.services import free_port, local_mlflow_store

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
MEAN, STD = 0.1307, 0.3081
SPEC = InputSpec("numpy", (1, 28, 28), MEAN, STD, 10)
TINY_ARCH = {"conv_channels": ((4,), (8,)), "dense_units": (16,)}


def pixels(n: int, seed: int = 0) -> np.ndarray:
    """``n`` uint8 images (N, 28, 28) with MNIST-like content: mostly black, some bright strokes."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    mask = rng.random((n, 28, 28)) < 0.2
    images[mask] = rng.integers(1, 256, size=int(mask.sum()), dtype=np.uint8)
    return images


# ------------------------------------------------------------------------------------- the input contract
def test_uint8_pixels_are_normalised_exactly_like_the_preprocess_stage():
    px = pixels(7)
    np.testing.assert_array_equal(prepare_images(px, SPEC), normalize_images(px, MEAN, STD))


def test_every_accepted_form_of_the_same_images_gives_the_same_network_input():
    px = pixels(5, seed=1)
    expected = normalize_images(px, MEAN, STD)
    forms = {
        "uint8 (N, 28, 28)": px,
        "uint8 (N, 1, 28, 28)": px[:, None],
        "int64, as JSON integers arrive": px.astype(np.int64),
        "float64 in [0, 1]": px / 255.0,
        "float32 in [0, 1], channel axis": (px / np.float32(255))[:, None],
        "nested lists": px.tolist(),
    }
    for form, images in forms.items():
        x = prepare_images(images, SPEC)
        assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32, form
        np.testing.assert_allclose(x, expected, rtol=0, atol=1e-5, err_msg=form)


def test_no_images_give_an_empty_batch():
    assert prepare_images(np.zeros((0, 28, 28), np.uint8), SPEC).shape == (0, 1, 28, 28)


BAD_INPUTS = {
    "rows cut": (
        pixels(3)[:, :20],
        "expected images of shape (N, 28, 28) or (N, 1, 28, 28), found (3, 20, 28)",
    ),
    "flattened": (pixels(3).reshape(3, 784), "found (3, 784)"),
    "three channels": (np.zeros((2, 3, 28, 28), np.uint8), "found (2, 3, 28, 28)"),
    "one image without batch axis": (pixels(1)[0], "found (28, 28)"),
    "data/processed arrays": (normalize_images(pixels(2), MEAN, STD), "float pixels must lie in [0, 1]"),
    "floats 0-255": (pixels(2).astype(np.float32), "float pixels must lie in [0, 1], found 0..255"),
    "integers above 255": (
        pixels(2).astype(np.int64) + 200,
        "integer pixels must lie in 0..255, found 200..",
    ),
    "negative integers": (pixels(2).astype(np.int16) - 1, "integer pixels must lie in 0..255, found -1.."),
    "NaN": (np.full((1, 28, 28), np.nan), "NaN or infinite"),
    "booleans": (pixels(2) > 0, "found dtype bool"),
    "strings": (np.full((1, 28, 28), "a"), "found dtype <U1"),
    "ragged lists": ([[[0] * 28] * 28, [[0] * 27] * 28], "rectangular array"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_refused_with_one_line_naming_what_was_expected_and_found(case):
    images, message = BAD_INPUTS[case]
    with pytest.raises(DataError) as err:
        prepare_images(images, SPEC)
    assert message in str(err.value)
    assert str(err.value).startswith("model input: ") and "\n" not in str(err.value)


def test_raw_pixels_inverts_the_preprocess_normalisation_exactly():
    px = pixels(9, seed=2)
    np.testing.assert_array_equal(raw_pixels(normalize_images(px, MEAN, STD), MEAN, STD), px)


def test_input_spec_comes_from_the_preprocess_stats_and_names_a_bad_file(tmp_path):
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"mean": MEAN, "std": STD, "dataset": "mnist"}))
    assert InputSpec.from_stats(stats, "numpy", [1, 28, 28], 10) == SPEC
    stats.write_text(json.dumps({"mean": MEAN, "std": 0.0}))
    with pytest.raises(DataError, match=r"stats.json: expected a finite mean and a positive std"):
        InputSpec.from_stats(stats, "numpy", [1, 28, 28], 10)
    with pytest.raises(DataError, match=r"missing.json: not found; run the preprocess stage first"):
        InputSpec.from_stats(tmp_path / "missing.json", "numpy", [1, 28, 28], 10)


# ------------------------------------------------------------------------------------- logged models
@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    return local_mlflow_store(tmp_path, monkeypatch, "serving")


def test_logged_numpy_model_answers_raw_images_with_the_models_logits(store):
    model = CNN(**TINY_ARCH, seed=3)
    with mlflow.start_run():
        info = log_numpy_model(model, SPEC, pixels(3))
    px = pixels(9, seed=4)
    expected = model.eval().forward(normalize_images(px, MEAN, STD))
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    for images in (px, px[:, None], px / 255.0):
        logits = loaded.predict(images)
        assert logits.shape == (9, 10) and logits.dtype == np.float32
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(
        mlflow.exceptions.MlflowException, match=r"model input: float pixels must lie in \[0, 1\]"
    ):
        loaded.predict(normalize_images(px, MEAN, STD))


def test_logged_torch_model_answers_raw_images_with_the_modules_logits_for_any_batch_size(store):
    torch = pytest.importorskip("torch")
    from cnn.torch_model import TorchCNN

    module = TorchCNN(**TINY_ARCH, seed=1)
    module.train()
    with mlflow.start_run():
        info = log_torch_model(module, InputSpec("torch", (1, 28, 28), MEAN, STD, 10), pixels(3))
    assert module.training, "logging must not change the caller's module mode"
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    for n in (1, 7):
        px = pixels(n, seed=n)
        with torch.no_grad():
            expected = module.eval()(torch.from_numpy(normalize_images(px, MEAN, STD))).numpy()
        logits = loaded.predict(px)
        assert logits.shape == (n, 10) and logits.dtype == np.float32
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_numpy_and_torch_twins_logged_with_the_same_weights_answer_the_same(store):
    pytest.importorskip("torch")
    from cnn.torch_model import to_torch

    model = CNN(**TINY_ARCH, seed=5)
    with mlflow.start_run():
        numpy_info = log_numpy_model(model, SPEC, pixels(2))
        torch_info = log_torch_model(
            to_torch(model), InputSpec("torch", (1, 28, 28), MEAN, STD, 10), pixels(2)
        )
    px = pixels(6, seed=6)
    a = mlflow.pyfunc.load_model(numpy_info.model_uri).predict(px)
    b = mlflow.pyfunc.load_model(torch_info.model_uri).predict(px)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_logged_model_records_its_output_signature_a_raw_input_example_and_its_normalisation(store):
    with mlflow.start_run():
        info = log_numpy_model(CNN(**TINY_ARCH, seed=0), SPEC, pixels(3))
    meta = mlflow.models.get_model_info(info.model_uri)
    (output,) = meta.signature.outputs.to_dict()
    assert output["tensor-spec"] == {"dtype": "float32", "shape": (-1, 10)}
    assert (
        meta.signature.inputs is None
    )  # four accepted forms: no single tensor schema (see logged_models.py)
    assert "uint8 pixels 0-255 or float 0-1, shape (N, 28, 28) or (N, 1, 28, 28)" in meta.metadata["input"]
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    example = np.asarray(json.loads((local / meta.saved_input_example_info["artifact_path"]).read_text()))
    assert example.shape == (3, 28, 28) and example.min() >= 0 and example.max() <= 255
    spec = json.loads(next(local.rglob("input_spec.json")).read_text())
    assert (spec["mean"], spec["std"], spec["input_shape"]) == (MEAN, STD, [1, 28, 28])


def test_loading_and_running_a_logged_model_unpickles_nothing(store, monkeypatch):
    torch = pytest.importorskip("torch")
    from cnn.torch_model import to_torch

    model = CNN(**TINY_ARCH, seed=7)
    with mlflow.start_run():
        infos = [
            log_numpy_model(model, SPEC, pixels(2)),
            log_torch_model(to_torch(model), InputSpec("torch", (1, 28, 28), MEAN, STD, 10), pixels(2)),
        ]

    def refuse(*args, **kwargs):
        raise AssertionError("a pickle was loaded")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    for info in infos:
        local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
        assert not list(local.rglob("*.pkl")), "models-from-code: no pickled python_model"
        assert mlflow.pyfunc.load_model(info.model_uri).predict(pixels(2)).shape == (2, 10)


# ------------------------------------------------------------------------------------- served end to end


def _post(url: str, body: object) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def served_champion(mnist_raw_root, tmp_path, monkeypatch):
    """Real MNIST (600/100/200 images) -> train_numpy -> evaluate (registers cnn-numpy@champion) -> served."""
    from cnn.data import preprocess_dataset
    from cnn.pipeline import compose_params, load_params, run_train_stage
    from cnn.pipeline.evaluate import EvaluatePaths, evaluate

    raw_dir = mnist_raw_root
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    processed = tmp_path / "processed"
    preprocess_dataset("mnist", raw_dir, processed, train_size=600, val_size=100, test_size=200, seed=0)
    params = tmp_path / "params.yaml"
    compose_params(
        [
            "experiment=smoke",
            "train.epochs=3",
            f"data.processed_dir='{processed}'",
            f"train.checkpoint_dir='{tmp_path / 'checkpoints'}'",
            f"tracking.uri='{uri}'",
        ],
        output=params,
        config_dir=ROOT / "conf",
    )
    run_train_stage("numpy", params, verbose=0)
    evaluate(
        EvaluatePaths(processed_dir=processed),
        frameworks=("numpy",),
        batch_size=load_params(params)["evaluate"]["batch_size"],
        tracking_uri=uri,
    )

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=uri, PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}")
    command = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", "models:/cnn-numpy@champion"]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow models serve did not start:\n{(tmp_path / 'serve.log').read_text()}")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", processed, raw_dir
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the uvicorn worker it started
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def test_make_serve_is_this_command_on_loopback_from_the_projects_environment():
    """``make serve`` runs what the test below runs (a dry run: -o keeps make from installing .venv)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    dry = subprocess.run(
        [make, "-n", "-o", ".venv/.installed", "serve", "SERVE_PORT=5123"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    command = " ".join(dry.stdout.replace("\\\n", " ").split())
    assert f'PATH="{ROOT}/.venv/bin:$PATH"' in command  # MLflow starts the server as `uvicorn`
    assert f'MLFLOW_TRACKING_URI="${{MLFLOW_TRACKING_URI:-sqlite:///{ROOT}/mlflow.db}}"' in command
    assert (
        '.venv/bin/mlflow models serve -m "models:/cnn-numpy@champion" --env-manager local '
        "--host 127.0.0.1 --port 5123"
    ) in command


@pytest.mark.slow
def test_served_champion_answers_raw_mnist_test_images_like_predict(served_champion, tmp_path):
    from cnn.data import read_idx_dir

    url, processed, raw_dir = served_champion
    raw = read_idx_dir(raw_dir / "mnist")
    images, labels = (
        raw.test_images[:300],
        raw.test_labels[:300],
    )  # uint8 (300, 28, 28), straight from the IDX
    stats = json.loads((processed / "stats.json").read_text())
    model = CNN.load(tmp_path / "models" / "numpy" / "model.npz")
    expected = model.predict(normalize_images(images, stats["mean"], stats["std"]))

    status, answer = _post(f"{url}/invocations", {"inputs": images.tolist()})
    assert status == 200
    predicted = np.asarray(answer["predictions"]).argmax(axis=1)
    np.testing.assert_array_equal(predicted, expected)
    assert np.mean(predicted == labels) > 0.5  # a trained model, not noise

    status, answer = _post(f"{url}/invocations", {"instances": (images[:5, None] / 255.0).tolist()})
    assert status == 200
    np.testing.assert_array_equal(np.asarray(answer["predictions"]).argmax(axis=1), expected[:5])

    status, answer = _post(f"{url}/invocations", {"inputs": images[:2, :20].tolist()})
    assert status == 400
    assert (
        "model input: expected images of shape (N, 28, 28) or (N, 1, 28, 28), found (2, 20, 28)"
        in (answer["message"])
    )
