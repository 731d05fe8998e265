"""The framework-agnostic training utilities of cnn.training (shared by the NumPy and torch trainers)."""

from __future__ import annotations

import json
import math
import os
import signal

import numpy as np
import pytest

from cnn.errors import TrainingDivergedError
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
    count_batches,
    run_training,
    step_scheduler,
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


# -------------------------------------------------------------------------------------- the training loop
class RecordingTarget:
    """A stand-in :class:`~cnn.training.TrainingTarget` for :func:`run_training`: a "model" whose loss on
    a batch is the mean of its labels, recording every call in ``events`` so the loop's order of
    operations can be read off. Like the real trainers it steps only on a finite loss."""

    def __init__(self, losses: dict[int, float] | None = None) -> None:
        self.model = self  # the loop switches the mode through target.model
        self.training = False
        self.events: list[tuple] = []
        self.lr = 0.5
        self.losses = losses or {}
        self.batches = 0
        self.optimizer = object()
        outer = self

        class Scheduler:
            def step(self) -> None:
                outer.events.append(("scheduler",))

        self.scheduler = Scheduler()

    def train(self, mode: bool = True) -> None:
        self.training = mode

    def train_batch(self, rows):
        yb = np.arange(100)[rows]
        self.batches += 1
        self.events.append(("forward", yb.tolist()))
        loss = self.losses.get(self.batches, float(np.mean(yb)))
        if math.isfinite(loss):
            self.events.append(("step",))
        return loss, len(yb) // 2

    def evaluate(self, X, y):
        self.training = False
        self.events.append(("evaluate",))
        return {"loss": 9.0, "accuracy": 0.25}

    def save_training(self, path, run_key, history, epoch, batch, partial) -> None:
        self.events.append(("save", epoch, batch, history.epochs))

    def restore_training(self, path, run_key):
        raise AssertionError("not resuming")

    def run(self, epochs: int, n: int = 10):
        class Callback:
            def on_epoch_end(inner, epoch, logs) -> None:
                self.events.append(("on_epoch_end", epoch, sorted(logs)))

            def on_train_end(inner, history) -> None:
                self.events.append(("on_train_end", history.epochs))

        # Contiguous batches of 4 over 10 samples; the checkpoint hooks only record (no file is written).
        options = FitOptions(epochs, 4, False, 0, 0, [Callback()], "run.npz", False)
        return run_training(options, self, np.arange(n), validation_data=(None, None))


def test_run_training_steps_every_batch_then_validates_schedules_checkpoints_and_calls_back() -> None:
    trainer = RecordingTarget()
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
    trainer = RecordingTarget(losses={5: float("nan")})
    with pytest.raises(TrainingDivergedError, match=r"loss is nan at epoch 2, batch 2/3; .*\(now 0.5\)"):
        trainer.run(epochs=3)
    assert trainer.events[-2:] == [("step",), ("forward", [4, 5, 6, 7])]  # no step after the NaN
    assert [e for e in trainer.events if e[0] == "save"] == [("save", 1, 0, 1)]
    assert trainer.training is False


def test_run_training_without_shuffling_folds_a_trailing_single_sample_into_the_last_batch() -> None:
    trainer = RecordingTarget()
    history = trainer.run(epochs=1, n=9)  # batches of 4: the ninth sample joins the second batch
    assert [e for e in trainer.events if e[0] == "forward"] == [
        ("forward", [0, 1, 2, 3]),
        ("forward", [4, 5, 6, 7, 8]),
    ]
    assert history["loss"] == [(1.5 * 4 + 6.0 * 5) / 9]  # every sample counted once
