"""The torch trainer: it learns, it is deterministic, it speaks the NumPy trainer's config vocabulary, and
its checkpoints load only what they should."""

from __future__ import annotations

import io
import math
import re
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cnn.errors import CheckpointError, ConfigError, DataError, TrainingDivergedError  # noqa: E402
from cnn.torch_model import TorchCNN  # noqa: E402
from cnn.torch_train import (  # noqa: E402
    TorchTrainer,
    make_torch_optimizer,
    make_torch_scheduler,
    resolve_device,
)

TINY = dict(input_shape=(1, 12, 12), conv_channels=((4,), (8,)), dense_units=(16,), num_classes=4)


def bars(n: int, seed: int = 0, noise: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """A small learnable set: class k is a bright horizontal bar in row band k of a 12x12 image."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    X = noise * rng.standard_normal((n, 1, 12, 12))
    for i, k in enumerate(y):
        X[i, 0, 3 * k : 3 * k + 2, :] += 1.5
    return X.astype(np.float32), y


def trainer(dtype=np.float32, seed: int = 0, **kw) -> TorchTrainer:
    return TorchTrainer(TorchCNN(**TINY, dtype=dtype, seed=seed), device="cpu", threads=1, **kw)


def test_trainer_learns_a_small_data_set():
    X, y = bars(240)
    Xv, yv = bars(80, seed=1)
    tr = trainer()
    before = tr.evaluate(Xv, yv)
    hist = tr.fit(X, y, epochs=4, batch_size=16, learning_rate=3e-3, validation_data=(Xv, yv), verbose=0)
    assert hist["loss"][-1] < hist["loss"][0]
    assert hist["val_accuracy"][-1] >= 0.95
    assert tr.evaluate(Xv, yv)["loss"] < before["loss"] / 2


def test_history_has_the_numpy_trainers_keys_and_records_the_lr_of_each_epoch():
    X, y = bars(64)
    hist = trainer().fit(
        X, y, epochs=3, batch_size=16, learning_rate=0.1, optimizer="sgd",
        scheduler="step", scheduler_kwargs={"step_size": 1, "gamma": 0.5}, verbose=0,
    )  # fmt: skip
    assert list(hist) == ["loss", "accuracy", "val_loss", "val_accuracy", "lr", "epoch_time"]
    assert hist["lr"] == pytest.approx([0.1, 0.05, 0.025])
    assert hist["val_loss"] == [None, None, None]
    assert all(t > 0 for t in hist["epoch_time"])


def test_same_config_and_seed_give_the_same_numbers_run_after_run():
    X, y = bars(96)
    runs = []
    for _ in range(2):
        tr = TorchTrainer(
            TorchCNN(**TINY, dropout_rate=0.3, dense_dropout=0.5, seed=5), device="cpu", threads=1
        )
        hist = tr.fit(X, y, epochs=2, batch_size=16, seed=7, verbose=0)
        runs.append((hist, {k: v.clone() for k, v in tr.model.state_dict().items()}))
    (h1, s1), (h2, s2) = runs
    assert h1["loss"] == h2["loss"] and h1["accuracy"] == h2["accuracy"]
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_a_different_seed_gives_a_different_batch_order_and_result():
    X, y = bars(96)
    h1 = trainer().fit(X, y, epochs=1, batch_size=16, seed=1, verbose=0)
    h2 = trainer().fit(X, y, epochs=1, batch_size=16, seed=2, verbose=0)
    assert h1["loss"] != h2["loss"]


def test_callbacks_receive_epoch_logs_with_throughput_and_the_final_history():
    X, y = bars(48)
    seen = []

    class Recorder:
        def on_epoch_end(self, epoch, logs):
            seen.append((epoch, logs))

        def on_train_end(self, history):
            seen.append(("end", history.epochs))

    trainer().fit(X, y, epochs=2, batch_size=16, callbacks=[Recorder()], verbose=0)
    assert [e for e, _ in seen] == [1, 2, "end"]
    assert seen[0][1]["samples_per_sec"] > 0 and "loss" in seen[0][1]


# ------------------------------------------------------------------------------ optimizers, schedulers
@pytest.mark.parametrize(
    ("name", "kwargs", "cls", "expected"),
    [
        ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}, torch.optim.SGD,
         {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-4, "dampening": 0}),
        ("adam", {"betas": [0.8, 0.99], "eps": 1e-7}, torch.optim.Adam,
         {"betas": (0.8, 0.99), "eps": 1e-7, "weight_decay": 0.0}),
        ("adamw", {}, torch.optim.AdamW, {"weight_decay": 0.0}),  # the config's default, not torch's 1e-2
    ],
)  # fmt: skip
def test_optimizer_names_build_the_torch_optimizer_with_the_config_settings(name, kwargs, cls, expected):
    opt = make_torch_optimizer(name, TorchCNN(**TINY).parameters(), 0.01, **kwargs)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.01
    for key, value in expected.items():
        assert group[key] == value


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [("rmsprop", {}, "optimizer.name"), ("sgd", {"momentum": -1}, "momentum"), ("adam", {"lr": 0}, "lr")],
)
def test_invalid_optimizer_configs_are_rejected_with_the_numpy_factorys_message(name, kwargs, match):
    lr = kwargs.pop("lr", 0.01)
    with pytest.raises(ConfigError, match=match):
        make_torch_optimizer(name, TorchCNN(**TINY).parameters(), lr, **kwargs)


SCHEDULES = [
    ("step", {"step_size": 2, "gamma": 0.5}),
    ("exponential", {"gamma": 0.9}),
    ("cosine", {"T_max": 5, "eta_min": 0.001}),
    ("plateau", {"factor": 0.5, "patience": 1}),
    ("none", {"warmup_epochs": 3}),
    ("step", {"step_size": 2, "gamma": 0.5, "warmup_epochs": 2}),
    ("cosine", {"T_max": 4, "warmup_epochs": 3}),
    ("plateau", {"factor": 0.5, "patience": 0, "warmup_epochs": 2}),
]


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)` before:UserWarning")
@pytest.mark.parametrize(("name", "kwargs"), SCHEDULES)
def test_torch_schedulers_produce_the_numpy_schedulers_learning_rates(name, kwargs):
    from cnn.optimizers import SGD
    from cnn.schedulers import make_scheduler
    from cnn.training import step_scheduler

    np_opt = SGD([(np.zeros(1), np.zeros(1))], lr=0.1)
    np_sched = make_scheduler(name, np_opt, **kwargs)
    t_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    t_sched = make_torch_scheduler(name, t_opt, **kwargs)
    metrics = [1.0, 0.9, 0.95, 0.97, 0.99, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]  # plateaus after epochs 2 and 6
    np_lrs, t_lrs = [], []
    for metric in metrics:
        np_lrs.append(np_opt.lr)
        t_lrs.append(t_opt.param_groups[0]["lr"])
        logs = {"loss": metric, "val_loss": metric}
        step_scheduler(np_sched, logs)
        step_scheduler(t_sched, logs)
    assert t_lrs == pytest.approx(np_lrs, rel=1e-12, abs=0)
    assert len(set(t_lrs)) > 1  # the schedule actually moved


def test_unknown_scheduler_and_missing_keys_raise_config_errors():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ConfigError, match="unknown scheduler 'linear'"):
        make_torch_scheduler("linear", opt)
    with pytest.raises(ConfigError, match="step_size is required"):
        make_torch_scheduler("step", opt)


# -------------------------------------------------------------------------- inference and bad input
def test_predict_predict_proba_score_and_evaluate_agree():
    X, y = bars(50)
    tr = trainer()
    tr.fit(X, y, epochs=1, batch_size=10, verbose=0)
    proba = tr.predict_proba(X, batch_size=16)
    assert proba.shape == (50, 4) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    pred = tr.predict(X, batch_size=7)
    assert pred.dtype == np.int64
    np.testing.assert_array_equal(pred, proba.argmax(axis=1))
    result = tr.evaluate(X, y, batch_size=13)
    assert result["accuracy"] == tr.score(X, y) == pytest.approx(np.mean(pred == y))
    expected_loss = -np.mean(np.log(proba[np.arange(50), y].astype(np.float64)))
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-4)
    assert tr.model.training  # predict/evaluate restore the mode they found


def test_predict_accepts_a_single_image():
    X, _ = bars(3)
    assert trainer().predict(X[0]).shape == (1,)


def test_bad_training_data_raises_data_errors_naming_the_argument():
    X, y = bars(20)
    tr = trainer()
    with pytest.raises(DataError, match=r"X must have shape \(N, 1, 12, 12\)"):
        tr.fit(X[:, :, :10], y, epochs=1, verbose=0)
    with pytest.raises(DataError, match="y holds label 7"):
        tr.fit(X, np.full(20, 7), epochs=1, verbose=0)
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        tr.fit(X, y, epochs=0, verbose=0)


def test_a_one_sample_last_batch_is_folded_into_the_previous_one_and_batch_size_1_refused():
    X, y = bars(33)
    hist = trainer().fit(X, y, epochs=1, batch_size=16, verbose=0)  # batches of 16 and 17
    assert np.isfinite(hist["loss"][0])
    with pytest.raises(ConfigError, match="batch_size=1"):
        trainer().fit(X, y, epochs=1, batch_size=1, verbose=0)


def test_nan_loss_stops_training_naming_epoch_batch_and_learning_rate():
    X, y = bars(64)
    X[40] = np.nan  # in batch 3 of 4 without shuffling
    expected = "loss is nan at epoch 1, batch 3/4; try a lower learning rate (now 0.01)"
    tr = trainer()
    with pytest.raises(TrainingDivergedError, match=re.escape(expected)):
        tr.fit(X, y, epochs=2, batch_size=16, learning_rate=0.01, shuffle=False, verbose=0)
    # The diverged batch made no update: the weights are those after the two batches before it.
    two_batches = trainer()
    two_batches.fit(X[:32], y[:32], epochs=1, batch_size=16, learning_rate=0.01, shuffle=False, verbose=0)
    after = dict(two_batches.model.named_parameters())
    for k, v in tr.model.named_parameters():
        assert torch.equal(v, after[k]), k


# ------------------------------------------------------------------------------------ device options
def test_device_auto_resolves_to_an_available_device_and_bad_names_are_config_errors():
    dev = resolve_device("auto")
    assert dev.type == (
        "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    )
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_threads_option_sets_torchs_cpu_threads():
    before = torch.get_num_threads()
    try:
        trainer()
        assert torch.get_num_threads() == 1
        with pytest.raises(ConfigError, match=r"train\.threads"):
            TorchTrainer(TorchCNN(**TINY), device="cpu", threads=0)
    finally:
        torch.set_num_threads(before)


def test_channels_last_computes_the_same_function():
    X, y = bars(32)
    a, b = trainer(np.float64, channels_last=False), trainer(np.float64, channels_last=True)
    assert a.model.features[0].weight.is_contiguous()
    assert b.model.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(a.predict_logits(X), b.predict_logits(X), rtol=0, atol=1e-12)
    ha = a.fit(X, y, epochs=1, batch_size=8, verbose=0)
    hb = b.fit(X, y, epochs=1, batch_size=8, verbose=0)
    assert ha["loss"] == pytest.approx(hb["loss"], rel=1e-10)


def test_channels_last_is_the_cpu_default():
    assert trainer().channels_last and not trainer(channels_last=False).channels_last


def test_amp_is_ignored_with_a_warning_off_cuda():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr = trainer(amp=True)
    assert not tr.amp
    assert any("CUDA only" in str(w.message) for w in caught)


# -------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_keeps_architecture_dtype_weights_and_statistics(tmp_path):
    X, y = bars(32)
    tr = trainer(np.float64)
    tr.fit(X, y, epochs=1, batch_size=8, verbose=0)
    fresh = TorchCNN(**TINY, dtype=np.float64, seed=0).state_dict()  # what a load ignoring the file gives
    for k, v in tr.model.state_dict().items():  # training moved every weight and running statistic
        assert not torch.equal(v, fresh[k]), f"{k} still has its initial value"
    path = tr.save(tmp_path / "sub" / "model.pt")
    assert path.exists() and not path.with_name("model.pt.tmp").exists()
    back = TorchTrainer.load(path, device="cpu", threads=1)
    assert back.model.config == tr.model.config and back.dtype == torch.float64
    for k, v in tr.model.state_dict().items():
        assert torch.equal(v, back.model.state_dict()[k]), k
    np.testing.assert_array_equal(back.predict_logits(X), tr.predict_logits(X))


def test_checkpoint_holds_the_format_tag_and_the_architecture_config(tmp_path):
    path = TorchCNN(**TINY).save(tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "cnn.TorchCNN/1"
    assert raw["arch"]["conv_channels"] == [[4], [8]] and raw["dtype"] == "float32"


def _write(path, obj) -> None:
    torch.save(obj, path)


class NotAllowed:  # a class that weights_only=True refuses to unpickle
    pass


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"state_dict": {}}, "not a TorchCNN checkpoint"),
        ([1, 2, 3], "not a TorchCNN checkpoint .* found a list"),
        ({"format": "cnn.TorchCNN/1", "arch": {}, "dtype": "float16", "state_dict": {}}, "dtype must be"),
        ({"format": "cnn.TorchCNN/1", "arch": {"kernel_size": 2}, "dtype": "float32", "state_dict": {}},
         "invalid architecture"),
        ({"format": "cnn.TorchCNN/1", "arch": dict(TINY), "dtype": "float32", "state_dict": {}},
         "missing key 'features.0.weight'"),
    ],
)  # fmt: skip
def test_foreign_checkpoints_raise_a_checkpoint_error_naming_the_problem(tmp_path, content, match):
    path = tmp_path / "x.pt"
    _write(path, content)
    with pytest.raises(CheckpointError, match=match):
        TorchCNN.load(path)


def test_a_checkpoint_of_another_architecture_names_the_first_mismatched_key_and_both_shapes(tmp_path):
    path = TorchCNN(**{**TINY, "conv_channels": ((6,), (8,))}).save(tmp_path / "other.pt")
    with pytest.raises(CheckpointError) as err:
        TorchCNN(**TINY).load_weights(path)
    msg = str(err.value)
    assert "other.pt" in msg and "'features.0.weight'" in msg
    assert "(4, 1, 3, 3)" in msg and "(6, 1, 3, 3)" in msg


def test_pickled_code_is_refused_not_executed(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "cnn.TorchCNN/1", "payload": NotAllowed()}, path)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        TorchCNN.load(path)


def test_missing_truncated_and_random_files_raise_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        TorchCNN.load(tmp_path / "absent.pt")
    good = TorchCNN(**TINY).save(tmp_path / "good.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match=r"trunc\.pt: not a readable PyTorch checkpoint"):
        TorchCNN.load(tmp_path / "trunc.pt")
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match=r"noise\.pt"):
        TorchCNN.load(tmp_path / "noise.pt")


def test_fuzzed_checkpoints_load_or_raise_checkpoint_error_and_nothing_else(tmp_path):
    buf = io.BytesIO()
    torch.save(TorchCNN(**TINY).checkpoint_dict(), buf)
    good = buf.getvalue()
    rng = np.random.default_rng(0)
    path = tmp_path / "fuzz.pt"
    for _ in range(60):
        data = bytearray(good)
        for pos in rng.integers(0, len(data), size=rng.integers(1, 8)):
            data[pos] = rng.integers(0, 256)
        if rng.random() < 0.3:
            data = data[: rng.integers(1, len(data))]
        path.write_bytes(bytes(data))
        try:
            model = TorchCNN.load(path)
        except CheckpointError:
            continue
        assert isinstance(model, TorchCNN)  # a flipped byte in tensor data may still load


def test_loss_of_a_saved_model_is_finite(tmp_path):
    X, y = bars(16)
    tr = trainer()
    tr.save(tmp_path / "m.pt")
    assert math.isfinite(TorchTrainer.load(tmp_path / "m.pt", device="cpu", threads=1).evaluate(X, y)["loss"])
