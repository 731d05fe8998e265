"""The framework-agnostic training utilities of cnn.training (shared by the NumPy and torch trainers)."""

from __future__ import annotations

import json
import math
import os
import signal
import zipfile

import numpy as np
import pytest

from cnn.errors import CheckpointError, TrainingDivergedError
from cnn.optimizers import SGD
from cnn.schedulers import ReduceLROnPlateau, StepLR
from cnn.training import (
    HISTORY_KEYS,
    CallbackList,
    FitOptions,
    History,
    InterruptGuard,
    ProgressBar,
    TrainingInterrupted,
    batch_order,
    check_finite_loss,
    check_format,
    count_batches,
    decode_json,
    encode_json,
    format_members,
    pack_state,
    read_npz,
    rng_state,
    run_training,
    set_rng_state,
    step_scheduler,
    unpack_state,
    write_npz_atomic,
)


# ---------------------------------------------------------------------------------------- batch order
def test_batch_order_covers_every_sample_once_with_the_remainder_last() -> None:
    batches = batch_order(103, 32, epoch=1, seed=0)
    assert [len(b) for b in batches] == [32, 32, 32, 7]
    assert all(b.dtype == np.int64 for b in batches)
    assert sorted(np.concatenate(batches).tolist()) == list(range(103))


def test_batch_order_is_a_pure_function_of_seed_and_epoch() -> None:
    a = np.concatenate(batch_order(50, 8, epoch=3, seed=7))
    b = np.concatenate(batch_order(50, 8, epoch=3, seed=7))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, np.concatenate(batch_order(50, 8, epoch=4, seed=7)))
    assert not np.array_equal(a, np.concatenate(batch_order(50, 8, epoch=3, seed=8)))
    # The documented recipe, so another framework can reproduce it without this module.
    np.testing.assert_array_equal(a, np.random.default_rng([7, 3]).permutation(50))


def test_batch_order_without_shuffle_is_in_order() -> None:
    batches = batch_order(10, 4, epoch=5, seed=1, shuffle=False)
    assert [b.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


@pytest.mark.parametrize(
    ("n", "bs", "sizes"), [(33, 32, [33]), (65, 32, [32, 33]), (1, 32, [1]), (2, 1, [1, 1])]
)
def test_batch_order_folds_a_trailing_one_sample_batch_into_the_previous_one(
    n: int, bs: int, sizes: list[int]
) -> None:
    # Batch norm cannot normalise a one-sample batch in training (torch.nn.BatchNorm1d refuses it).
    batches = batch_order(n, bs, epoch=1, seed=0)
    assert [len(b) for b in batches] == sizes == [len(b) for b in batch_order(n, bs, 1, 0, shuffle=False)]
    assert count_batches(n, bs) == len(sizes)
    assert sorted(np.concatenate(batches).tolist()) == list(range(n))


@pytest.mark.parametrize("n", range(1, 70))
def test_count_batches_matches_batch_order(n: int) -> None:
    for bs in (1, 2, 5, 32):
        assert count_batches(n, bs) == len(batch_order(n, bs, epoch=1, seed=0))


@pytest.mark.parametrize(("n", "bs"), [(0, 4), (5, 0)])
def test_batch_order_rejects_empty_data_and_batches(n: int, bs: int) -> None:
    with pytest.raises(ValueError, match="batch_order needs"):
        batch_order(n, bs, epoch=1, seed=0)


# -------------------------------------------------------------------------------- history, callbacks
def _epoch(loss: float, val: float | None = None) -> dict[str, float | None]:
    return {
        "loss": loss,
        "accuracy": 0.5,
        "val_loss": val,
        "val_accuracy": None if val is None else 0.4,
        "lr": 0.1,
        "epoch_time": 1.0,
    }


def test_history_keeps_equal_length_lists_and_dvc_records_without_nones() -> None:
    h = History()
    assert list(h) == list(HISTORY_KEYS) and h.epochs == 0
    h.append(**_epoch(2.0))
    h.append(**_epoch(1.0, val=1.5))
    assert h["val_loss"] == [None, 1.5] and h.epochs == 2
    assert h.last() == {"loss": 1.0, "accuracy": 0.5, "val_loss": 1.5, "val_accuracy": 0.4, "lr": 0.1,
                        "epoch_time": 1.0}  # fmt: skip
    records = h.to_records()
    assert records[0] == {"epoch": 1, "loss": 2.0, "accuracy": 0.5, "lr": 0.1, "epoch_time": 1.0}
    assert records[1]["epoch"] == 2 and records[1]["val_accuracy"] == 0.4
    json.dumps(records, allow_nan=False)  # plain JSON for DVC plots
    assert History(json.loads(json.dumps(h))) == h


def test_history_append_requires_every_key() -> None:
    with pytest.raises(ValueError, match="epoch_time"):
        History().append(loss=1.0, accuracy=0.5, val_loss=None, val_accuracy=None, lr=0.1)


def test_callback_list_calls_the_hooks_each_callback_defines() -> None:
    calls: list[tuple] = []

    class EpochOnly:
        def on_epoch_end(self, epoch: int, logs: dict) -> None:
            logs["mutated"] = True  # must not leak into the next callback's logs
            calls.append(("epoch", epoch, dict(logs)))

    class EndOnly:
        def on_train_end(self, history: History) -> None:
            calls.append(("end", history.epochs))

    cbs = CallbackList([EpochOnly(), EndOnly(), object(), EpochOnly()])
    cbs.on_epoch_end(1, {"loss": 1.0})
    cbs.on_train_end(History())
    assert calls == [
        ("epoch", 1, {"loss": 1.0, "mutated": True}),
        ("epoch", 1, {"loss": 1.0, "mutated": True}),
        ("end", 0),
    ]


# ----------------------------------------------------------------------------------- NaN / inf guard
@pytest.mark.parametrize(("loss", "word"), [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")])
def test_non_finite_loss_names_epoch_batch_and_learning_rate(loss: float, word: str) -> None:
    with pytest.raises(TrainingDivergedError) as info:
        check_finite_loss(loss, epoch=3, batch=17, num_batches=157, lr=0.1)
    assert str(info.value) == f"loss is {word} at epoch 3, batch 17/157; try a lower learning rate (now 0.1)"
    assert isinstance(info.value, ValueError)


def test_finite_loss_passes_the_guard() -> None:
    check_finite_loss(1e30, epoch=1, batch=1, num_batches=1, lr=1e-3)


# ---------------------------------------------------------------------------------------- schedulers
def _sgd(lr: float = 1.0) -> SGD:
    return SGD([(np.zeros(2), np.zeros(2))], lr=lr)


def test_step_scheduler_steps_epoch_schedulers_without_a_metric() -> None:
    opt = _sgd()
    sched = StepLR(opt, step_size=1, gamma=0.5)
    step_scheduler(sched, {"loss": 1.0, "val_loss": 2.0})
    assert opt.lr == 0.5
    step_scheduler(None, {"loss": 1.0})  # no scheduler: nothing to do


@pytest.mark.parametrize("monitored", ["val_loss", "loss"])
def test_step_scheduler_feeds_plateau_val_loss_else_training_loss(monitored: str) -> None:
    opt = _sgd()
    sched = ReduceLROnPlateau(opt, factor=0.5, patience=0)
    logs = {"loss": 1.0, "val_loss": 1.0} if monitored == "val_loss" else {"loss": 1.0, "val_loss": None}
    step_scheduler(sched, logs)  # first value: the best so far
    # The monitored metric gets worse, the other one improves: the rate drops only if the right one is read.
    logs = {"loss": 0.1, "val_loss": 5.0} if monitored == "val_loss" else {"loss": 5.0, "val_loss": None}
    step_scheduler(sched, logs)
    assert opt.lr == 0.5


def test_classes_named_reduce_lr_on_plateau_get_the_metric() -> None:
    seen = []

    class ReduceLROnPlateau:  # e.g. torch.optim.lr_scheduler's, which has no needs_metric
        def step(self, metric: float) -> None:
            seen.append(metric)

    step_scheduler(ReduceLROnPlateau(), {"loss": 3.0, "val_loss": None})
    assert seen == [3.0]


# ------------------------------------------------------------------------------------- interruption
def test_first_signal_sets_a_flag_second_raises_and_handlers_are_restored() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with InterruptGuard() as guard:
        assert not guard.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.requested and guard.signal_name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
            os.kill(os.getpid(), signal.SIGINT)
    assert {s: signal.getsignal(s) for s in before} == before


def test_interrupted_message_says_where_the_checkpoint_is_and_how_to_resume(tmp_path) -> None:
    with InterruptGuard() as guard:
        os.kill(os.getpid(), signal.SIGINT)
    exc = guard.interrupted(tmp_path / "ck.npz", epoch=2, batch=5, num_batches=9)
    assert isinstance(exc, TrainingInterrupted) and isinstance(exc, KeyboardInterrupt)
    assert (exc.signal_name, exc.epoch, exc.batch, exc.checkpoint_path) == (
        "SIGINT",
        2,
        5,
        tmp_path / "ck.npz",
    )
    msg = str(exc)
    assert "interrupted by SIGINT at epoch 2, batch 5/9" in msg
    assert f"checkpoint_path='{tmp_path / 'ck.npz'}', resume=True" in msg and "train.resume=true" in msg
    assert "nothing saved" in str(guard.interrupted(None, 1, 1, 9))


# -------------------------------------------------------------------------------------- progress bar
def test_progress_bar_verbosity_levels(capsys: pytest.CaptureFixture[str]) -> None:
    logs = {"loss": 0.5, "accuracy": 0.75, "val_loss": None, "lr": 1e-3, "epoch_time": 2.0}
    bar = ProgressBar(3, epoch=1, epochs=2, verbose=0)
    bar.update(0.5, 0.75)
    bar.close(logs)
    assert capsys.readouterr() == ("", "")

    bar = ProgressBar(3, epoch=1, epochs=2, verbose=2)
    bar.update(0.5, 0.75)
    bar.close(logs)
    assert capsys.readouterr().err == "epoch 1/2: loss=0.5000  accuracy=0.7500  lr=0.001  (2.0s)\n"

    bar = ProgressBar(2, epoch=2, epochs=2, verbose=1, refresh_s=0.0)
    bar.update(0.7, 0.5)
    bar.update(0.6, 0.5)
    assert bar._bar.postfix == "loss=0.6000 acc=0.5000"  # running figures (drawn at tqdm's own pace)
    bar.close(logs)
    err = capsys.readouterr().err
    assert "epoch 2/2: 100%" in err and "2/2 [" in err and "loss=0.5000  accuracy=0.7500  lr=0.001" in err


# ---------------------------------------------------------------------------------- checkpoint files
def test_write_npz_atomic_round_trips_and_leaves_no_temporary(tmp_path) -> None:
    path = tmp_path / "sub" / "ck.npz"
    members = {**format_members(), "w": np.arange(6.0).reshape(2, 3), "n": np.array(3, dtype=np.int64)}
    assert write_npz_atomic(path, members) == path
    back = read_npz(path)
    assert set(back) == set(members)
    np.testing.assert_array_equal(back["w"], members["w"])
    assert check_format(back, path) == 1
    assert os.listdir(path.parent) == ["ck.npz"]


@pytest.mark.parametrize("failure", ["during the write", "at the rename", "on Ctrl-C"])
def test_a_failed_write_keeps_the_previous_file_and_removes_the_temporary(
    tmp_path, monkeypatch, failure
) -> None:
    path = tmp_path / "ck.npz"
    write_npz_atomic(path, {"a": np.ones(3)})
    before = path.read_bytes()
    real_savez = np.savez

    def half_written(f, **arrays):
        real_savez(f, **arrays)
        f.truncate(100)  # the disk filled up half-way
        raise OSError(28, "No space left on device")

    def interrupted(f, **arrays):
        f.write(b"PK partial")
        raise KeyboardInterrupt

    def failed_rename(src, dst):
        raise PermissionError(13, "Permission denied")

    if failure == "during the write":
        monkeypatch.setattr(np, "savez", half_written)
    elif failure == "on Ctrl-C":
        monkeypatch.setattr(np, "savez", interrupted)
    else:
        monkeypatch.setattr(os, "replace", failed_rename)
    with pytest.raises((OSError, KeyboardInterrupt)):
        write_npz_atomic(path, {"a": np.zeros(3), "b": np.arange(1000)})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ck.npz"]


def test_write_refuses_object_arrays_and_other_suffixes(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="would need pickle"):
        write_npz_atomic(tmp_path / "x.npz", {"o": np.array([{}], dtype=object)})
    with pytest.raises(CheckpointError, match=r"must end in \.npz"):
        write_npz_atomic(tmp_path / "x.pt", {"a": np.ones(1)})


def test_read_npz_refuses_pickled_members_without_unpickling_them(tmp_path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([Payload()], dtype=object))
    with pytest.raises(CheckpointError, match="object array"):
        read_npz(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "no such checkpoint file"),
        (b"", "not a readable .npz"),
        (b"hello, this is text\n", "not a readable .npz"),
    ],
)
def test_read_npz_names_the_file_for_missing_and_non_zip_files(tmp_path, content, match) -> None:
    path = tmp_path / "bad.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as info:
        read_npz(path)
    assert str(path) in str(info.value)


def test_read_npz_detects_a_member_whose_header_does_not_match_its_size(tmp_path) -> None:
    path = tmp_path / "lying.npz"
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1000, 1000)))
    with zipfile.ZipFile(path, "w") as zf, zf.open("w.npy", "w") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 64)  # claims 8 MB, holds 64 bytes
    with pytest.raises(CheckpointError, match=r"member 'w.npy'.*\(1000, 1000\)"):
        read_npz(path)


def test_read_npz_refuses_members_that_would_decompress_to_gigabytes(tmp_path) -> None:
    path = tmp_path / "bomb.npz"
    big = np.zeros(50_000_000, dtype=np.uint8)  # 50 MB of zeros deflate to ~50 kB
    np.savez_compressed(path, x=big)
    assert path.stat().st_size < 200_000
    with pytest.raises(CheckpointError, match="zip bomb"):
        read_npz(path)
    np.savez_compressed(path, w=np.random.default_rng(0).standard_normal((300, 300)))
    assert read_npz(path)["w"].shape == (300, 300)  # ordinary compressed checkpoints load


def test_json_members_decode_or_name_the_key(tmp_path) -> None:
    members = {"j": encode_json({"a": [1, 2.5, None], "b": math.inf}), "s": np.arange(3), "t": np.array("{")}
    assert decode_json(members, "j", "f.npz") == {"a": [1, 2.5, None], "b": math.inf}
    with pytest.raises(CheckpointError, match=r"f.npz: not a cnn checkpoint \(missing key 'k'\)"):
        decode_json(members, "k", "f.npz")
    with pytest.raises(CheckpointError, match="'s' must be a JSON string"):
        decode_json(members, "s", "f.npz")
    with pytest.raises(CheckpointError, match="'t' is not valid JSON"):
        decode_json(members, "t", "f.npz")


def test_check_format_rejects_other_formats_and_future_versions() -> None:
    with pytest.raises(CheckpointError, match="__format__ is 'keras'"):
        check_format({"__format__": encode_json("keras"), "__version__": encode_json(1)}, "f.npz")
    with pytest.raises(CheckpointError, match="version 99 is not supported"):
        check_format({**format_members(), "__version__": encode_json(99)}, "f.npz")


def test_pack_state_round_trips_nested_state_through_an_npz(tmp_path) -> None:
    state = {
        "lr": np.float32(0.5),
        "step": np.int64(7),
        "betas": (0.9, 0.999),
        "state": {0: {"exp_avg": np.arange(4.0)}, 1: {"exp_avg": np.ones((2, 2), np.float32)}},
        "groups": [{"params": [0, 1], "nesterov": False, "name": None}],
        "__array__": "a key that looks like a tag",
    }
    tree, arrays = pack_state(state, "optimizer/")
    assert set(arrays) == {"optimizer/0", "optimizer/1"}
    state["state"][0]["exp_avg"][0] = 99.0  # packing copied the arrays
    path = write_npz_atomic(tmp_path / "s.npz", {"tree": encode_json(tree), **arrays})
    members = read_npz(path)
    back = unpack_state(decode_json(members, "tree", path), members, path)
    assert back["lr"] == 0.5 and type(back["lr"]) is float and back["step"] == 7
    assert back["betas"] == (0.9, 0.999)
    np.testing.assert_array_equal(back["state"][0]["exp_avg"], np.arange(4.0))
    assert back["state"][1]["exp_avg"].dtype == np.float32
    assert back["groups"] == [{"params": [0, 1], "nesterov": False, "name": None}]
    assert back["__array__"] == "a key that looks like a tag"
    with pytest.raises(CheckpointError, match="'optimizer/0', which is missing"):
        unpack_state(tree, {}, path)
    with pytest.raises(TypeError, match="cannot store a set"):
        pack_state({"s": {1, 2}}, "p/")


def test_rng_state_round_trips_through_json_and_rejects_garbage() -> None:
    gen = np.random.default_rng(123)
    gen.random(5)
    saved = json.loads(json.dumps(rng_state(gen)))
    expected = gen.random(4)
    other = np.random.default_rng(0)
    set_rng_state(other, saved)
    np.testing.assert_array_equal(other.random(4), expected)
    with pytest.raises(CheckpointError, match="cannot restore dropout rng"):
        set_rng_state(other, {"bit_generator": "MT19937", "state": {}}, what="dropout rng")


# -------------------------------------------------------------------------------------- the training loop
class RecordingTrainer:
    """A stand-in framework for :func:`run_training`: a "model" whose loss on a batch is the mean of its
    labels, recording every hook call in ``events`` so the loop's order of operations can be read off."""

    def __init__(self, losses: dict[int, float] | None = None) -> None:
        self.training = False
        self.events: list[tuple] = []
        self.lr = 0.5
        self.losses = losses or {}
        self.batches = 0

    def train(self, mode: bool = True) -> None:
        self.training = mode

    def get_batch(self, rows):
        return np.arange(10)[rows], np.arange(10)[rows]

    def forward(self, xb, yb):
        self.batches += 1
        self.events.append(("forward", yb.tolist()))
        return self.losses.get(self.batches, float(np.mean(yb))), len(yb) // 2

    def step(self) -> None:
        self.events.append(("step",))

    def evaluate(self, X, y):
        self.training = False
        self.events.append(("evaluate",))
        return {"loss": 9.0, "accuracy": 0.25}

    def save(self, path, opt, sched, run_key, history, epoch, batch, partial) -> None:
        self.events.append(("save", epoch, batch, history.epochs))

    def restore(self, path, opt, sched, run_key):
        raise AssertionError("not resuming")

    def run(self, epochs: int):
        class Scheduler:
            def step(inner) -> None:
                self.events.append(("scheduler",))

        class Callback:
            def on_epoch_end(inner, epoch, logs) -> None:
                self.events.append(("on_epoch_end", epoch, sorted(logs)))

            def on_train_end(inner, history) -> None:
                self.events.append(("on_train_end", history.epochs))

        # Contiguous batches of 4 over 10 samples; the checkpoint hooks only record (no file is written).
        options = FitOptions(epochs, 4, False, 0, 0, [Callback()], "run.npz", False)
        return run_training(
            options,
            model=self,
            get_batch=self.get_batch,
            forward=self.forward,
            step=self.step,
            optimizer=object(),
            get_lr=lambda: self.lr,
            scheduler=Scheduler(),
            y=np.arange(10),
            validation_data=(None, None),
            evaluate=self.evaluate,
            save_checkpoint=self.save,
            restore_checkpoint=self.restore,
        )


def test_run_training_steps_every_batch_then_validates_schedules_checkpoints_and_calls_back() -> None:
    trainer = RecordingTrainer()
    history = trainer.run(epochs=2)
    logs = ["accuracy", "epoch_time", "loss", "lr", "samples_per_sec", "val_accuracy", "val_loss"]
    epoch = [
        ("forward", [0, 1, 2, 3]),
        ("step",),
        ("forward", [4, 5, 6, 7]),
        ("step",),
        ("forward", [8, 9]),
        ("step",),
        ("evaluate",),
    ]
    assert trainer.events == [
        *epoch,
        ("scheduler",),
        ("save", 1, 0, 1),
        ("on_epoch_end", 1, logs),
        *epoch,
        ("scheduler",),
        ("save", 2, 0, 2),
        ("on_epoch_end", 2, logs),
        ("on_train_end", 2),
    ]
    # Means weighted by batch size: (1.5 * 4 + 5.5 * 4 + 8.5 * 2) / 10 and (2 + 2 + 1) / 10.
    assert history["loss"] == [4.5, 4.5]
    assert history["accuracy"] == [0.5, 0.5]
    assert history["val_loss"] == [9.0, 9.0] and history["lr"] == [0.5, 0.5]
    assert trainer.training is False  # restored to the mode it had before training


def test_run_training_stops_on_a_nan_loss_before_stepping_and_writes_no_checkpoint() -> None:
    trainer = RecordingTrainer(losses={5: float("nan")})
    with pytest.raises(TrainingDivergedError, match=r"loss is nan at epoch 2, batch 2/3; .*\(now 0.5\)"):
        trainer.run(epochs=3)
    assert trainer.events[-2:] == [("step",), ("forward", [4, 5, 6, 7])]  # no step after the NaN
    assert [e for e in trainer.events if e[0] == "save"] == [("save", 1, 0, 1)]
    assert trainer.training is False
