"""The torch twin on a CUDA GPU: the same function as on the CPU, data staged on the device once,
deterministic training, bf16 autocast. Skipped where no GPU is present."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

from cnn.model import CNN  # noqa: E402
from cnn.torch_model import TorchCNN, to_numpy, to_torch  # noqa: E402
from cnn.torch_train import TorchTrainer, resolve_device  # noqa: E402

SMALL = dict(input_shape=(1, 12, 12), conv_channels=((8,), (8,)), dense_units=(16,), num_classes=4)


def data(n: int, seed: int = 0, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 12, 12)).astype(dtype), rng.integers(0, 4, n)


def test_auto_device_is_cuda_when_a_gpu_is_present():
    assert resolve_device("auto").type == "cuda"


@pytest.mark.parametrize(("dtype", "atol"), [(np.float32, 2e-4), (np.float64, 1e-10)])
def test_gpu_logits_equal_the_numpy_models(dtype, atol):
    numpy_model = CNN(**SMALL, dtype=dtype, seed=1).eval()
    x, _ = data(32, dtype=dtype)
    trainer = TorchTrainer(to_torch(numpy_model), device="cuda")
    assert trainer.model.device.type == "cuda"
    np.testing.assert_allclose(trainer.predict_logits(x), numpy_model.forward(x), rtol=0, atol=atol)


def test_gpu_training_follows_the_cpu_trajectory_in_float64():
    X, y = data(64)
    kw = dict(SMALL, dropout_rate=0.0, dense_dropout=0.0, dtype=np.float64, seed=2)
    fit = dict(epochs=2, batch_size=16, optimizer="sgd", optimizer_kwargs={"momentum": 0.9},
               learning_rate=0.05, verbose=0)  # fmt: skip
    cpu, gpu = TorchTrainer(TorchCNN(**kw), device="cpu"), TorchTrainer(TorchCNN(**kw), device="cuda")
    h_cpu, h_gpu = cpu.fit(X, y, **fit), gpu.fit(X, y, **fit)
    np.testing.assert_allclose(h_gpu["loss"], h_cpu["loss"], rtol=1e-9)
    back = to_numpy(gpu.model)  # weights come back to the host for NumPy
    for key, value in cpu.model.state_dict().items():
        np.testing.assert_allclose(back.state_dict()[key], value.numpy(), rtol=0, atol=1e-8, err_msg=key)


def test_gpu_training_is_deterministic_run_after_run():
    X, y = data(64, dtype=np.float32)
    runs = []
    for _ in range(2):
        tr = TorchTrainer(TorchCNN(**SMALL, seed=3), device="cuda", channels_last=True)
        runs.append(tr.fit(X, y, epochs=2, batch_size=16, seed=5, verbose=0)["loss"])
    assert runs[0] == runs[1]


def test_bf16_autocast_trains_and_keeps_float32_weights_and_outputs():
    X, y = data(128, dtype=np.float32)
    tr = TorchTrainer(TorchCNN(**SMALL, seed=4), device="cuda", amp=True)
    assert tr.amp
    hist = tr.fit(X, y, epochs=3, batch_size=32, learning_rate=3e-3, verbose=0)
    assert np.isfinite(hist["loss"]).all() and hist["loss"][-1] < hist["loss"][0]
    assert tr.model.features[0].weight.dtype == torch.float32
    assert tr.predict_proba(X[:5]).dtype == np.float32


def test_checkpoints_saved_on_the_gpu_load_on_the_cpu(tmp_path):
    tr = TorchTrainer(TorchCNN(**SMALL, seed=5), device="cuda")
    tr.save(tmp_path / "m.pt")
    model = TorchCNN.load(tmp_path / "m.pt", map_location="cpu")
    assert model.device.type == "cpu"
