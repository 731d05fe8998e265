"""Resumable training of the NumPy CNN: an interrupted run, resumed, equals an uninterrupted one exactly.

Everything runs in float64 on a tiny network (with batch norm and both dropout kinds, so batch-norm
statistics, dropout RNG streams, Adam moments and the scheduler position all have to be restored).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cnn import CNN, TrainingInterrupted
from cnn.checkpoint import decode_json, read_npz
from cnn.errors import CheckpointError

TINY = dict(
    input_shape=(1, 8, 8), num_classes=3, conv_channels=((4,), (6,)), dense_units=(8,), dtype=np.float64
)
FIT = dict(
    epochs=3,
    batch_size=8,  # 5 batches per epoch
    learning_rate=1e-2,
    optimizer="adam",
    scheduler="step",
    scheduler_kwargs={"step_size": 1, "gamma": 0.5},
    seed=0,
    verbose=0,
)
DATA_SEED = 0


def tiny_data(seed: int = DATA_SEED):
    rng = np.random.default_rng(seed)
    X, y = rng.standard_normal((50, 1, 8, 8)), rng.integers(0, 3, 50)
    return X[:40], y[:40], (X[40:], y[40:])


@pytest.fixture(scope="module")
def reference():
    """The uninterrupted run (no checkpoint_path: writing checkpoints must not change the trajectory)."""
    X, y, val = tiny_data()
    model = CNN(**TINY, seed=0)
    history = model.fit(X, y, validation_data=val, **FIT)
    return model.state_dict(), history


def assert_same_run(model: CNN, history: dict, reference) -> None:
    ref_state, ref_history = reference
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, ref_state[key], err_msg=key)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert history[key] == ref_history[key], key  # exactly, not approximately
    assert len(history["epoch_time"]) == FIT["epochs"]


class KilledAt(CNN):
    """Sends ``signum`` to its own process during the ``kill_at``-th training forward pass."""

    def __init__(self, kill_at: int, signum: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.kill_at, self.signum, self.calls = kill_at, signum, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.kill_at:
                os.kill(os.getpid(), self.signum)
        return super().forward(x)


class CrashAfterEpoch:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if epoch == self.epoch:
            raise RuntimeError("simulated crash")


def resume(path: Path, **overrides):
    """Continue from ``path`` in a fresh model with *another* seed: everything must come from the file."""
    X, y, val = tiny_data()
    model = CNN(**TINY, seed=123)
    history = model.fit(X, y, validation_data=val, checkpoint_path=path, resume=True, **{**FIT, **overrides})
    return model, history


# ---------------------------------------------------------------------------------------- equality
def test_resume_after_a_crash_at_an_epoch_end_equals_the_uninterrupted_run(tmp_path, reference) -> None:
    X, y, val = tiny_data()
    path = tmp_path / "ck.npz"
    with pytest.raises(RuntimeError, match="simulated crash"):
        CNN(**TINY, seed=0).fit(
            X, y, validation_data=val, checkpoint_path=path, callbacks=[CrashAfterEpoch(1)], **FIT
        )
    state = decode_json(read_npz(path), "__resume__", path)
    assert (state["epoch"], state["batch"]) == (1, 0)
    assert_same_run(*resume(path), reference)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_epoch_saves_after_the_batch_and_resume_is_exact(tmp_path, reference, signum) -> None:
    X, y, val = tiny_data()
    path = tmp_path / "ck.npz"
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    model = KilledAt(kill_at=7, signum=signum, **TINY, seed=0)  # epoch 2, batch 2 of 5
    with pytest.raises(TrainingInterrupted) as info:
        model.fit(X, y, validation_data=val, checkpoint_path=path, **FIT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    exc = info.value
    assert (exc.epoch, exc.batch, exc.checkpoint_path) == (2, 2, path)
    assert exc.signal_name == signal.Signals(signum).name
    assert f"at epoch 2, batch 2/5; resume checkpoint written to {path}" in str(exc)
    assert "resume=True" in str(exc)
    assert model.calls == 7  # the batch in flight was finished, no further batch was started
    state = decode_json(read_npz(path), "__resume__", path)
    assert (state["epoch"], state["batch"]) == (1, 2) and state["partial"]["seen"] == 16
    assert_same_run(*resume(path), reference)


def test_a_signal_in_the_last_batch_finishes_the_epoch_first(tmp_path, reference) -> None:
    X, y, val = tiny_data()
    path = tmp_path / "ck.npz"
    with pytest.raises(TrainingInterrupted) as info:
        KilledAt(kill_at=5, signum=signal.SIGINT, **TINY, seed=0).fit(
            X, y, validation_data=val, checkpoint_path=path, **FIT
        )
    assert (info.value.epoch, info.value.batch) == (1, 5)
    state = decode_json(read_npz(path), "__resume__", path)
    assert (state["epoch"], state["batch"]) == (1, 0) and len(state["history"]["loss"]) == 1
    assert_same_run(*resume(path), reference)


def test_a_killed_training_process_resumes_to_the_same_result(tmp_path, reference, repo_root) -> None:
    """A real second process, killed with SIGTERM from outside while it trains."""
    path, ready = tmp_path / "ck.npz", tmp_path / "epoch1-done"
    script = textwrap.dedent(
        f"""
        import signal, sys
        import numpy as np
        from tests.test_resume_numpy import FIT, TINY, tiny_data
        from cnn import CNN, TrainingInterrupted

        class WaitForKill:  # after epoch 1: tell the parent, then wait for its signal
            def on_epoch_end(self, epoch, logs):
                if epoch == 1:
                    open({str(ready)!r}, "w").close()
                    signal.pause()

        X, y, val = tiny_data()
        try:
            CNN(**TINY, seed=0).fit(X, y, validation_data=val, checkpoint_path={str(path)!r},
                                    callbacks=[WaitForKill()], **FIT)
        except TrainingInterrupted as exc:
            print(exc, file=sys.stderr)
            sys.exit(130)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    child = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):  # up to 60 s for the child to start and train one epoch
            if ready.exists() or child.poll() is not None:
                break
            try:
                child.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass
        assert ready.exists(), child.stderr.read() if child.poll() is not None else "child too slow"
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, err
    assert "interrupted by SIGTERM at epoch 1, batch 5/5" in err and str(path) in err
    assert_same_run(*resume(path), reference)


# -------------------------------------------------------------------------------------- edge cases
def test_resume_without_a_checkpoint_starts_afresh(tmp_path, reference) -> None:
    X, y, val = tiny_data()
    model = CNN(**TINY, seed=0)
    history = model.fit(X, y, validation_data=val, checkpoint_path=tmp_path / "new.npz", resume=True, **FIT)
    assert_same_run(model, history, reference)
    assert (tmp_path / "new.npz").exists()


def test_resuming_a_finished_run_trains_no_more_and_more_epochs_extend_it(tmp_path, reference) -> None:
    X, y, val = tiny_data()
    path = tmp_path / "ck.npz"
    CNN(**TINY, seed=0).fit(X, y, validation_data=val, checkpoint_path=path, **FIT)
    calls = []

    class Count:
        def on_epoch_end(self, epoch, logs):
            calls.append(epoch)

    assert_same_run(*resume(path, callbacks=[Count()]), reference)
    assert calls == []
    model, history = resume(path, epochs=4, callbacks=[Count()])
    assert calls == [4] and len(history["loss"]) == 4
    longer = CNN(**TINY, seed=0)
    longer_history = longer.fit(X, y, validation_data=val, **{**FIT, "epochs": 4})
    assert history["loss"] == longer_history["loss"] and history["lr"] == [1e-2, 5e-3, 2.5e-3, 1.25e-3]
    for key, value in longer.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[key], value)


def test_the_resume_checkpoint_is_also_a_loadable_model(tmp_path) -> None:
    X, y, val = tiny_data()
    path = tmp_path / "ck.npz"
    model = CNN(**TINY, seed=0)
    model.fit(X, y, checkpoint_path=path, **{**FIT, "epochs": 1})
    np.testing.assert_array_equal(CNN.load(path).predict_proba(val[0]), model.predict_proba(val[0]))
    with np.load(path, allow_pickle=False) as f:  # plain arrays and JSON only
        assert json.loads(str(f["__resume__"]))["history"]["lr"] == [1e-2]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"batch_size": 4}, "written with batch_size=8, this fit has batch_size=4"),
        ({"seed": 1}, "written with seed=0, this fit has seed=1"),
        ({"optimizer": "sgd"}, "written with optimizer='Adam', this fit has optimizer='SGD'"),
        ({"shuffle": False}, "written with shuffle=True"),
    ],
)
def test_resuming_with_other_settings_is_refused(tmp_path, overrides, match) -> None:
    X, y, _ = tiny_data()
    path = tmp_path / "ck.npz"
    CNN(**TINY, seed=0).fit(X, y, checkpoint_path=path, **{**FIT, "epochs": 1})
    with pytest.raises(CheckpointError, match=match):
        resume(path, **overrides)


def test_resuming_with_other_labels_or_another_model_is_refused(tmp_path) -> None:
    X, y, _ = tiny_data()
    path = tmp_path / "ck.npz"
    CNN(**TINY, seed=0).fit(X, y, checkpoint_path=path, **{**FIT, "epochs": 1})
    with pytest.raises(CheckpointError, match="the training labels differ"):
        CNN(**TINY).fit(X, (y + 1) % 3, checkpoint_path=path, resume=True, **FIT)
    with pytest.raises(CheckpointError, match="checkpoint is of another model"):
        CNN(**{**TINY, "dense_units": (9,)}).fit(X, y, checkpoint_path=path, resume=True, **FIT)


def test_a_corrupt_resume_checkpoint_raises_a_clear_error(tmp_path) -> None:
    X, y, _ = tiny_data()
    path = tmp_path / "ck.npz"
    CNN(**TINY, seed=0).fit(X, y, checkpoint_path=path, **{**FIT, "epochs": 1})
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"ck\.npz: not a readable \.npz checkpoint"):
        resume(path)
    CNN(**TINY).save(path)  # a model checkpoint is not a resume checkpoint
    with pytest.raises(CheckpointError, match="missing key '__resume__'"):
        resume(path)


def test_a_refused_optimizer_state_leaves_the_model_untouched(tmp_path) -> None:
    X, y, _ = tiny_data()
    path = tmp_path / "ck.npz"
    CNN(**TINY, seed=0).fit(X, y, checkpoint_path=path, **{**FIT, "epochs": 1})
    model = CNN(**TINY, seed=5)
    before = model.state_dict()
    with pytest.raises(CheckpointError, match=r"ck\.npz: .*beta2"):
        model.fit(
            X, y, checkpoint_path=path, resume=True, **{**FIT, "optimizer_kwargs": {"betas": (0.9, 0.99)}}
        )
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
