"""The NumPy CNN and its PyTorch twin are the same function: same state_dict keys and shapes, the same
logits after moving weights either way, and, in float64 with dropout off, the same training trajectory
step by step. The last is the strongest test of the from-scratch library: every layer's forward and
backward, the loss and the optimizer must match torch to rounding for it to pass."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cnn.losses import CrossEntropyLoss  # noqa: E402
from cnn.model import CNN  # noqa: E402
from cnn.optimizers import make_optimizer  # noqa: E402
from cnn.torch_model import TorchCNN, to_numpy, to_torch  # noqa: E402
from cnn.torch_train import TorchTrainer, make_torch_optimizer  # noqa: E402
from cnn.training import batch_order  # noqa: E402

# Small enough for a fast float64 NumPy run, large enough to exercise every layer kind, two conv blocks,
# both batch norms and a hidden dense layer.
SMALL = dict(input_shape=(1, 12, 12), conv_channels=((4, 4), (6,)), dense_units=(16,), num_classes=5)
NO_DROPOUT = dict(dropout_rate=0.0, dense_dropout=0.0)
TOL = {np.float32: 2e-4, np.float64: 1e-10}


def data(n: int, seed: int = 0, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 12, 12)).astype(dtype), rng.integers(0, 5, n)


def with_running_statistics(model: CNN, seed: int = 1) -> CNN:
    """Give every BatchNorm non-trivial running statistics (means far from 0, variances far from 1) by
    running training-mode forward passes over shifted, scaled data."""
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(5):
        model.forward(3.0 + 2.0 * rng.standard_normal((16, *model.config.input_shape)))
    return model.eval()


def moved(model: CNN, seed: int = 2) -> CNN:
    """``model`` with every parameter and buffer shifted away from its value (weights too, which
    :func:`with_running_statistics` leaves alone), so a copy that dropped any array would be caught."""
    rng = np.random.default_rng(seed)
    model.load_state_dict(
        {
            k: v + (rng.uniform(0.5, 1.5, v.shape) if v.dtype.kind == "f" else 3)
            for k, v in model.state_dict().items()
        }
    )
    return model


def assert_differs_everywhere_from_a_fresh_model(state: dict, config, dtype, seed: int) -> None:
    """A load or copy that ignored the arrays would give a fresh model of the same config and seed:
    ``state`` (NumPy arrays or tensors) must differ from it in every weight and buffer."""
    fresh = CNN.from_config(config, dtype=dtype, seed=seed).state_dict()
    for k, v in state.items():
        assert not np.array_equal(np.asarray(v), fresh[k]), f"{k} still has its initial value"


def torch_logits(model: TorchCNN, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_state_dict_keys_order_and_shapes_equal_the_numpy_models():
    np_sd = CNN().state_dict()
    t_sd = TorchCNN().state_dict()
    assert list(t_sd) == list(np_sd)
    for key, value in np_sd.items():
        assert tuple(t_sd[key].shape) == value.shape, key
    assert "classifier.5.bias" in t_sd and "features.1.running_mean" in t_sd


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constructor_takes_the_numpy_models_arguments_and_dtype(dtype):
    kwargs = dict(SMALL, use_batchnorm=False, kernel_size=5, dropout_rate=0.1, dense_dropout=0.2)
    t, n = TorchCNN(**kwargs, dtype=dtype, seed=3), CNN(**kwargs, dtype=dtype, seed=3)
    assert t.config == n.config
    assert t.dtype == (torch.float32 if dtype == np.float32 else torch.float64)
    assert list(t.state_dict()) == list(n.state_dict())  # no batch norm: conv and dense layers get biases


def test_initialisation_scheme_is_the_numpy_layers_he_normal_with_zero_bias_and_unit_batchnorm():
    t = TorchCNN(conv_channels=((64,), (64,)), dense_units=(256,), dtype=np.float64, seed=0)
    n = CNN(conv_channels=((64,), (64,)), dense_units=(256,), dtype=np.float64, seed=0)
    for key in ("features.5.weight", "classifier.1.weight"):  # 64*64*9 and 256*3136 weights
        tw, nw = t.state_dict()[key].numpy(), n.state_dict()[key]
        fan_in = nw[0].size
        for w in (tw, nw):
            assert abs(w.mean()) < 0.02 * np.sqrt(2 / fan_in)
            assert w.std() == pytest.approx(np.sqrt(2 / fan_in), rel=0.02)
        assert not np.allclose(tw, nw)  # same distribution, not the same draws
    sd = t.state_dict()
    assert torch.all(sd["features.1.weight"] == 1) and torch.all(sd["features.1.bias"] == 0)
    assert torch.all(sd["features.1.running_var"] == 1) and torch.all(sd["classifier.5.bias"] == 0)


def test_the_model_seed_travels_with_the_weights_and_is_the_trainers_default_fit_seed(tmp_path):
    numpy_model = CNN(**SMALL, seed=8)
    assert to_torch(numpy_model).seed == 8
    assert TorchTrainer(to_torch(numpy_model), device="cpu", threads=1).seed == 8  # as CNN.fit(seed=None)
    assert TorchCNN.load(to_torch(numpy_model).save(tmp_path / "m.pt")).seed == 8


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = TorchCNN(**SMALL, seed=1), TorchCNN(**SMALL, seed=1), TorchCNN(**SMALL, seed=2)
    assert torch.equal(a.features[0].weight, b.features[0].weight)
    assert not torch.equal(a.features[0].weight, c.features[0].weight)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logits_agree_after_to_torch_with_nontrivial_batchnorm_statistics(dtype):
    numpy_model = with_running_statistics(CNN(**SMALL, dtype=dtype, seed=4))
    assert np.abs(numpy_model.state_dict()["features.1.running_mean"]).max() > 0.1
    torch_model = to_torch(numpy_model)
    assert not torch_model.training and torch_model.dtype == getattr(torch, np.dtype(dtype).name)
    x, _ = data(16, dtype=dtype)
    np.testing.assert_allclose(torch_logits(torch_model, x), numpy_model.forward(x), rtol=0, atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_to_numpy_of_to_torch_restores_every_array_exactly(dtype):
    numpy_model = moved(with_running_statistics(CNN(**SMALL, dtype=dtype, seed=5)))
    assert_differs_everywhere_from_a_fresh_model(numpy_model.state_dict(), numpy_model.config, dtype, 5)
    back = to_numpy(to_torch(numpy_model))
    assert back.dtype == np.dtype(dtype) and back.config == numpy_model.config and back.seed == 5
    for key, value in numpy_model.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[key], value, err_msg=key)
        assert back.state_dict()[key].dtype == value.dtype
    x, _ = data(8, dtype=dtype)
    np.testing.assert_array_equal(back.forward(x), numpy_model.forward(x))


def test_a_model_trained_in_torch_is_evaluated_in_numpy_and_the_other_way_round(tmp_path):
    X, y = data(64)
    trainer = TorchTrainer(TorchCNN(**SMALL, dtype=np.float64, seed=6), device="cpu", threads=1)
    trainer.fit(X, y, epochs=1, batch_size=16, learning_rate=0.01, verbose=0)
    trained = {k: v.numpy() for k, v in trainer.model.state_dict().items()}
    assert_differs_everywhere_from_a_fresh_model(trained, trainer.model.config, np.float64, 6)
    trainer.save(tmp_path / "model.pt")
    in_numpy = to_numpy(TorchCNN.load(tmp_path / "model.pt"))
    for k, v in trained.items():
        np.testing.assert_array_equal(in_numpy.state_dict()[k], v, err_msg=k)
    t_eval, n_eval = trainer.evaluate(X, y), in_numpy.evaluate(X, y)
    assert n_eval["accuracy"] == t_eval["accuracy"]
    assert n_eval["loss"] == pytest.approx(t_eval["loss"], rel=1e-12)

    numpy_model = CNN(**SMALL, dtype=np.float64, seed=7)
    numpy_model.fit(X, y, epochs=1, batch_size=16, learning_rate=0.01, verbose=0)
    assert_differs_everywhere_from_a_fresh_model(numpy_model.state_dict(), numpy_model.config, np.float64, 7)
    numpy_model.save(tmp_path / "model.npz")
    in_torch = TorchTrainer(to_torch(CNN.load(tmp_path / "model.npz")), device="cpu", threads=1)
    for k, v in numpy_model.state_dict().items():
        np.testing.assert_array_equal(in_torch.model.state_dict()[k].numpy(), v, err_msg=k)
    t_eval, n_eval = in_torch.evaluate(X, y), numpy_model.evaluate(X, y)
    assert t_eval["accuracy"] == n_eval["accuracy"]
    assert t_eval["loss"] == pytest.approx(n_eval["loss"], rel=1e-12)


def test_training_trajectories_are_equal_step_by_step_in_float64():
    """Same initial weights, same batches, SGD with momentum and weight decay: every step's loss agrees
    within 1e-7 (in practice ~1e-15) and so do the final weights and BatchNorm statistics."""
    X, y = data(48, seed=8)
    numpy_model = CNN(**SMALL, **NO_DROPOUT, dtype=np.float64, seed=9)
    torch_model = to_torch(numpy_model).train()
    numpy_model.train()
    ce = CrossEntropyLoss()
    settings = dict(momentum=0.9, weight_decay=1e-3)
    np_opt = make_optimizer("sgd", numpy_model.parameters(), lr=0.05, **settings)
    t_opt = make_torch_optimizer("sgd", torch_model.parameters(), 0.05, **settings)

    np_losses, t_losses = [], []
    for epoch in (1, 2):
        for idx in batch_order(len(X), 16, epoch, seed=0):
            np_losses.append(ce.forward(numpy_model.forward(X[idx]), y[idx]))
            numpy_model.backward(ce.backward())
            np_opt.step()

            loss = torch.nn.functional.cross_entropy(
                torch_model(torch.from_numpy(X[idx])), torch.from_numpy(y[idx])
            )
            t_opt.zero_grad()
            loss.backward()
            t_opt.step()
            t_losses.append(loss.item())

    assert len(np_losses) == 6
    np.testing.assert_allclose(np_losses, t_losses, rtol=0, atol=1e-7)
    assert np_losses[-1] < np_losses[0]  # it trained: the comparison is not of two frozen models
    t_sd = torch_model.state_dict()
    for key, value in numpy_model.state_dict().items():
        np.testing.assert_allclose(t_sd[key].numpy(), value, rtol=0, atol=1e-10, err_msg=key)


@pytest.mark.parametrize(
    ("optimizer", "optimizer_kwargs", "scheduler", "scheduler_kwargs"),
    [
        (
            "sgd",
            {"momentum": 0.9, "nesterov": True},
            "step",
            {"step_size": 1, "gamma": 0.5, "warmup_epochs": 1},
        ),
        ("adamw", {"weight_decay": 0.01}, "plateau", {"factor": 0.5, "patience": 0}),
    ],
)
def test_both_trainers_fit_to_the_same_history_in_float64(
    optimizer, optimizer_kwargs, scheduler, scheduler_kwargs
):
    """``CNN.fit`` and ``TorchTrainer.fit`` with one configuration: shuffled batches, optimizer, scheduler
    and validation give the same history and the same final weights."""
    X, y = data(40, seed=10)
    Xv, yv = data(12, seed=11)
    numpy_model = CNN(**SMALL, **NO_DROPOUT, dtype=np.float64, seed=12)
    trainer = TorchTrainer(to_torch(numpy_model), device="cpu", threads=1)
    fit = dict(
        epochs=3, batch_size=16, learning_rate=0.02, optimizer=optimizer, optimizer_kwargs=optimizer_kwargs,
        scheduler=scheduler, scheduler_kwargs=scheduler_kwargs, validation_data=(Xv, yv), seed=3, verbose=0,
    )  # fmt: skip
    h_np, h_t = numpy_model.fit(X, y, **fit), trainer.fit(X, y, **fit)
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(h_t[key], h_np[key], rtol=1e-10, err_msg=key)
    for key in ("accuracy", "val_accuracy", "lr"):
        assert h_t[key] == pytest.approx(h_np[key], rel=1e-12), key
    t_sd = trainer.model.state_dict()
    for key, value in numpy_model.state_dict().items():
        np.testing.assert_allclose(t_sd[key].numpy(), value, rtol=0, atol=1e-9, err_msg=key)
