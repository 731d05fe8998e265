"""Interrupted torch training resumes to the numbers of an uninterrupted run (float64, dropout on, so the
RNG state is part of what must be restored), and bad resume checkpoints fail clearly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cnn.errors import CheckpointError, TrainingDivergedError  # noqa: E402
from cnn.torch_model import TorchCNN  # noqa: E402
from cnn.torch_train import TorchTrainer  # noqa: E402
from cnn.training import TrainingInterrupted  # noqa: E402

ARCH = dict(input_shape=(1, 10, 10), conv_channels=((4,), (6,)), dense_units=(12,), num_classes=3)
FIT = dict(
    epochs=3, batch_size=16, learning_rate=0.01, optimizer="adam", scheduler="step",
    scheduler_kwargs={"step_size": 1, "gamma": 0.7}, seed=4, verbose=0,
)  # fmt: skip


def data() -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((48, 1, 10, 10)), rng.integers(0, 3, 48)  # 3 batches per epoch
    return X, y, (rng.standard_normal((10, 1, 10, 10)), rng.integers(0, 3, 10))


def make_trainer(seed: int = 1) -> TorchTrainer:
    model = TorchCNN(**ARCH, dropout_rate=0.3, dense_dropout=0.5, dtype=np.float64, seed=seed)
    return TorchTrainer(model, device="cpu", threads=1)


@pytest.fixture(scope="module")
def reference():
    """The uninterrupted run: history and final state."""
    X, y, val = data()
    tr = make_trainer()
    hist = tr.fit(X, y, validation_data=val, **FIT)
    return hist, tr.model.state_dict()


def assert_same_run(trainer: TorchTrainer, hist, reference) -> None:
    ref_hist, ref_state = reference
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert hist[key] == ref_hist[key], key
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, ref_state[key]), key


class SignalAtCall:
    """A loss that sends ``signum`` to this process during its ``at``-th call (a deterministic stand-in
    for Ctrl-C arriving while a batch is being computed)."""

    def __init__(self, at: int, signum: int = signal.SIGINT) -> None:
        self.at, self.signum, self.calls = at, signum, 0

    def __call__(self, logits, y):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), self.signum)
        return torch.nn.functional.cross_entropy(logits, y)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_epoch_finishes_the_batch_saves_and_resume_equals_the_uninterrupted_run(
    tmp_path, reference, signum
):
    X, y, val = data()
    path = tmp_path / "resume.pt"
    with pytest.raises(TrainingInterrupted) as err:
        make_trainer().fit(
            X, y, validation_data=val, checkpoint_path=path, loss=SignalAtCall(5, signum), **FIT
        )
    assert (err.value.epoch, err.value.batch) == (2, 2)  # the 5th batch is epoch 2, batch 2 of 3
    assert err.value.signal_name == signal.Signals(signum).name
    assert "resume" in str(err.value) and path.exists()
    assert not path.with_name("resume.pt.tmp").exists()

    resumed = make_trainer(seed=99)  # other initial weights: everything must come from the checkpoint
    hist = resumed.fit(X, y, validation_data=val, checkpoint_path=path, resume=True, **FIT)
    assert_same_run(resumed, hist, reference)


def test_a_signal_at_the_end_of_an_epoch_resumes_at_the_next_epoch(tmp_path, reference):
    X, y, val = data()
    path = tmp_path / "resume.pt"

    class SigintAfterFirstEpoch:
        def on_epoch_end(self, epoch, logs):
            if epoch == 1:
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted) as err:
        make_trainer().fit(
            X, y, validation_data=val, checkpoint_path=path, callbacks=[SigintAfterFirstEpoch()], **FIT
        )
    assert (err.value.epoch, err.value.batch) == (1, 3)
    resumed = make_trainer(seed=7)
    hist = resumed.fit(X, y, validation_data=val, checkpoint_path=path, resume=True, **FIT)
    assert_same_run(resumed, hist, reference)


def test_resume_without_a_checkpoint_file_starts_from_epoch_one(tmp_path, reference):
    X, y, val = data()
    tr = make_trainer()
    hist = tr.fit(X, y, validation_data=val, checkpoint_path=tmp_path / "none.pt", resume=True, **FIT)
    assert_same_run(tr, hist, reference)
    assert (tmp_path / "none.pt").exists()  # written after every epoch


def test_resume_with_other_settings_or_a_foreign_file_raises_checkpoint_error(tmp_path):
    X, y, _ = data()
    path = tmp_path / "resume.pt"
    make_trainer().fit(X, y, checkpoint_path=path, **{**FIT, "epochs": 1})
    with pytest.raises(CheckpointError, match="batch_size=16, this fit has batch_size=8"):
        make_trainer().fit(X, y, checkpoint_path=path, resume=True, **{**FIT, "batch_size": 8})
    with pytest.raises(CheckpointError, match="another model"):
        other = TorchTrainer(
            TorchCNN(**{**ARCH, "dense_units": (8,)}, dtype=np.float64), device="cpu", threads=1
        )
        other.fit(X, y, checkpoint_path=path, resume=True, **FIT)

    model_only = TorchCNN(**ARCH, dtype=np.float64).save(tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="not a resume checkpoint"):
        make_trainer().fit(X, y, checkpoint_path=model_only, resume=True, **FIT)

    (tmp_path / "torn.pt").write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"torn\.pt: not a readable PyTorch checkpoint"):
        make_trainer().fit(X, y, checkpoint_path=tmp_path / "torn.pt", resume=True, **FIT)


def test_a_resume_checkpoint_also_loads_as_a_model(tmp_path):
    X, y, _ = data()
    tr = make_trainer()
    tr.fit(X, y, checkpoint_path=tmp_path / "resume.pt", **{**FIT, "epochs": 1})
    loaded = TorchCNN.load(tmp_path / "resume.pt")
    for key, value in tr.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_divergence_leaves_the_last_good_checkpoint_intact(tmp_path):
    X, y, _ = data()
    path = tmp_path / "resume.pt"
    tr = make_trainer()
    tr.fit(X, y, checkpoint_path=path, shuffle=False, **{**FIT, "epochs": 1})
    before = path.read_bytes()
    X_bad = X.copy()
    X_bad[20] = np.inf
    with pytest.raises(TrainingDivergedError, match="epoch 2, batch 2/3"):
        make_trainer().fit(X_bad, y, checkpoint_path=path, resume=True, shuffle=False, **FIT)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["resume.pt"]


CHILD = textwrap.dedent(
    """
    import sys, time
    from tests.test_resume_torch import FIT, data, make_trainer

    class Slow:  # gives the parent time to send its signal while the run is still going
        def on_epoch_end(self, epoch, logs):
            time.sleep(1.0)

    X, y, val = data()
    make_trainer().fit(X, y, validation_data=val, checkpoint_path={path!r}, callbacks=[Slow()], **FIT)
    """
)


def test_a_killed_training_process_resumes_to_the_uninterrupted_result(tmp_path, reference, repo_root):
    """The real thing: another process is sent SIGTERM while training, exits non-zero with the message,
    and this process resumes from its checkpoint to the numbers of the uninterrupted run."""
    path = tmp_path / "resume.pt"
    script = CHILD.format(path=str(path))
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=repo_root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not path.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode != 0
    assert "interrupted by SIGTERM" in stderr and "resume checkpoint written to" in stderr

    X, y, val = data()
    resumed = make_trainer(seed=3)
    hist = resumed.fit(X, y, validation_data=val, checkpoint_path=path, resume=True, **FIT)
    assert_same_run(resumed, hist, reference)
