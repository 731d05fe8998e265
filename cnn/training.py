"""Framework-agnostic training utilities shared by the NumPy ``CNN.fit`` and the PyTorch trainer.

Both trainers use the same pieces so that, given one seed, they see the same batches in the same order,
record the same history, stop on the same faults and resume the same way:

* :func:`batch_order` -- the seeded mini-batch schedule of one epoch (a function of ``(seed, epoch)`` only,
  so a resumed run needs no shuffling state);
* :class:`History` -- the per-epoch record ``{loss, accuracy, val_loss, val_accuracy, lr, epoch_time}``;
* :class:`CallbackList` -- dispatch of ``on_epoch_end(epoch, logs)`` / ``on_train_end(history)``;
* :func:`check_finite_loss` -- the NaN/inf guard (:class:`~cnn.errors.TrainingDivergedError`);
* :class:`InterruptGuard` and :class:`TrainingInterrupted` -- SIGINT/SIGTERM finish the current batch,
  the trainer writes its resume checkpoint, then raises;
* :class:`ProgressBar` -- a tqdm bar with the running loss and accuracy (or nothing, ``verbose=0``);
* :func:`step_scheduler` -- one scheduler step per epoch, plateau schedulers on a metric;
* :func:`run_training` -- the epoch/batch loop itself (resume, interrupts, validation, checkpoints,
  callbacks), driving a :class:`TrainingTarget`: the small interface each trainer implements (train on
  a batch, the learning rate, evaluate, write and read its resume checkpoint).

Checkpoint files (the pickle-free ``.npz`` container) live in :mod:`cnn.checkpoint`. Nothing here imports
a deep-learning framework.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from cnn.errors import CheckpointError, ConfigError, DataError, TrainingDivergedError

__all__ = [
    "HISTORY_KEYS",
    "CallbackList",
    "FitOptions",
    "History",
    "InterruptGuard",
    "ProgressBar",
    "TrainingInterrupted",
    "TrainingTarget",
    "batch_order",
    "build_scheduler",
    "check_finite_loss",
    "check_fit_arguments",
    "run_training",
    "scheduler_wants_metric",
    "step_scheduler",
]
#: The keys of a training history, in order.
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "epoch_time")


# --------------------------------------------------------------------------------------------------------
# Interruption
# --------------------------------------------------------------------------------------------------------
class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after the current batch; a resume checkpoint was written.

    A ``KeyboardInterrupt`` subclass, so code that does not know it still treats it as Ctrl-C (the
    command-line stages exit 130). ``str(exc)`` says where the checkpoint is and how to resume.

    Attributes:
        signal_name: ``"SIGINT"`` or ``"SIGTERM"``.
        checkpoint_path: the resume checkpoint written before raising, or None when none was asked for.
        epoch: the 1-based epoch that was running.
        batch: batches of that epoch completed (and saved) before stopping.
    """

    def __init__(
        self, message: str, *, signal_name: str, checkpoint_path: Path | None, epoch: int, batch: int
    ) -> None:
        super().__init__(message)
        self.signal_name = signal_name
        self.checkpoint_path = checkpoint_path
        self.epoch = epoch
        self.batch = batch

    def __str__(self) -> str:
        return str(self.args[0])


class InterruptGuard:
    """Context manager that turns SIGINT/SIGTERM into a flag the training loop polls between batches.

    Inside ``with InterruptGuard() as guard:`` the first signal only sets ``guard.signal_name``; the loop
    finishes its batch, writes its checkpoint and calls :meth:`interrupted` to build the exception. A
    second signal raises ``KeyboardInterrupt`` at once (the user insists; checkpoint writes are atomic, so
    nothing half-written is left). The previous handlers are restored on exit. Outside the main thread
    (where Python cannot install handlers) the guard is inert and signals behave as usual.
    """

    def __init__(self, signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self._signals = tuple(signals)
        self._previous: dict[int, Any] = {}
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        """True once a signal arrived; the loop should stop after the current batch."""
        return self.signal_name is not None

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping at once")
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> InterruptGuard:
        self.signal_name = None
        if threading.current_thread() is threading.main_thread():
            for s in self._signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def interrupted(
        self, checkpoint_path: str | os.PathLike[str] | None, epoch: int, batch: int, num_batches: int
    ) -> TrainingInterrupted:
        """The exception to raise after the checkpoint (if any) was written at ``epoch``/``batch``."""
        name = self.signal_name or "SIGINT"
        where = f"epoch {epoch}, batch {batch}/{num_batches}"
        if checkpoint_path is None:
            msg = f"training interrupted by {name} at {where}; no checkpoint_path was given, nothing saved"
            path = None
        else:
            path = Path(checkpoint_path)
            msg = (
                f"training interrupted by {name} at {where}; resume checkpoint written to {path}. "
                f"Resume with fit(..., checkpoint_path='{path}', resume=True) "
                f"(pipeline: train.resume=true)"
            )
        return TrainingInterrupted(msg, signal_name=name, checkpoint_path=path, epoch=epoch, batch=batch)


# --------------------------------------------------------------------------------------------------------
# Batches, history, callbacks, guards
# --------------------------------------------------------------------------------------------------------


def check_labelled_data(
    X: Any, y: Any, input_shape: Sequence[int], num_classes: int, dtype: Any, xname: str, yname: str
) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels for training or evaluation, checked against the model, for both frameworks.

    Returns ``X`` as a C-contiguous ``dtype`` array ``(N, *input_shape)`` and ``y`` as int64 ``(N,)``
    (integral float labels are accepted). Raises :class:`~cnn.errors.DataError` naming ``xname`` /
    ``yname`` with what was expected and what was found: wrong shapes, no samples, non-integer labels,
    labels outside ``[0, num_classes)``.
    """
    X = np.ascontiguousarray(X, dtype=dtype)
    y = np.asarray(y)
    shape = tuple(input_shape)
    if X.ndim != 4 or X.shape[1:] != shape:
        raise DataError(f"{xname} must have shape (N, {', '.join(map(str, shape))}), got {X.shape}")
    if y.ndim != 1 or len(y) != len(X):
        raise DataError(f"{yname} must have shape ({len(X)},) to match {xname}, got {y.shape}")
    if len(y) == 0:
        raise DataError(f"{xname} is empty")
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.array_equal(y, np.round(y)):
            y = y.astype(np.int64)
        else:
            raise DataError(f"{yname} must hold integer class ids, got dtype {y.dtype}")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise DataError(f"{yname} holds label {bad}, outside [0, {num_classes})")
    return X, y.astype(np.int64, copy=False)


def check_run_key(saved: Mapping[str, Any], current: Mapping[str, Any], path: Path | str) -> None:
    """Refuse to resume a run set up differently: the first setting in ``current`` (``n``, ``batch_size``,
    ``seed``, ``shuffle``, ``labels_crc32``, optimizer and scheduler names) that differs from ``saved``
    raises :class:`~cnn.errors.CheckpointError` naming it and both values."""
    for k, v in current.items():
        if saved.get(k) != v:
            what = "the training labels" if k == "labels_crc32" else k
            raise CheckpointError(
                f"{path}: checkpoint was written with {k}={saved.get(k)!r}, this fit has "
                f"{k}={v!r}; resume only with the same data and settings ({what} differ)"
            )


def count_batches(n: int, batch_size: int) -> int:
    """How many mini-batches :func:`batch_order` makes of ``n`` samples."""
    full, rest = divmod(n, batch_size)
    return full + (rest > 1 or (rest == 1 and full == 0))


def batch_order(n: int, batch_size: int, epoch: int, seed: int, shuffle: bool = True) -> list[np.ndarray]:
    """The mini-batches of one epoch as int64 index arrays into the ``n`` training samples.

    With ``shuffle`` the order is a permutation drawn from ``np.random.default_rng([seed, epoch])``: a
    pure function of ``(seed, epoch)``, the same in every framework and in a resumed run. Without it the
    batches are ``0..n`` in order. The last batch holds the remainder (it is not dropped), except that a
    trailing batch of a single sample is merged into the one before it: batch norm cannot estimate a
    variance from one sample (``torch.nn.BatchNorm1d`` refuses such a batch in training), so with
    ``n % batch_size == 1`` the last batch holds ``batch_size + 1`` samples.

    Args:
        n: number of samples (>= 1).
        batch_size: samples per batch (>= 1).
        epoch: 1-based epoch number.
        seed: the run's seed (a non-negative int).
        shuffle: shuffle the samples for this epoch.

    Returns:
        :func:`count_batches` int64 arrays whose concatenation is a permutation of ``range(n)``.
    """
    if n < 1 or batch_size < 1:
        raise ValueError(f"batch_order needs n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    if shuffle:
        idx = np.random.default_rng([int(seed), int(epoch)]).permutation(n).astype(np.int64, copy=False)
    else:
        idx = np.arange(n, dtype=np.int64)
    batches = [idx[i : i + batch_size] for i in range(0, n, batch_size)]
    if batch_size > 1 and len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2] = idx[-(batch_size + 1) :]
        del batches[-1]
    return batches


class History(dict):
    """Per-epoch training record: a ``dict`` of equally long lists under :data:`HISTORY_KEYS`.

    ``val_loss`` / ``val_accuracy`` hold ``None`` for epochs without validation data; ``lr`` is the
    learning rate used during the epoch (before the scheduler stepped); ``epoch_time`` is the wall time of
    the epoch in seconds, validation included.
    """

    def __init__(self, data: Mapping[str, Iterable[Any]] | None = None) -> None:
        super().__init__({k: [] for k in HISTORY_KEYS})
        if data is not None:
            for k in HISTORY_KEYS:
                self[k] = list(data.get(k, []))

    @property
    def epochs(self) -> int:
        """Number of recorded epochs."""
        return len(self["loss"])

    def append(self, **values: Any) -> None:
        """Record one epoch; every key of :data:`HISTORY_KEYS` must be given (values may be None)."""
        missing = set(HISTORY_KEYS) - values.keys()
        if missing:
            raise ValueError(f"History.append is missing {sorted(missing)}")
        for k in HISTORY_KEYS:
            v = values[k]
            self[k].append(None if v is None else float(v))

    def last(self) -> dict[str, float]:
        """The latest epoch's values, without the ``None`` ones."""
        return {k: self[k][-1] for k in HISTORY_KEYS if self[k] and self[k][-1] is not None}

    def to_records(self) -> list[dict[str, float]]:
        """``[{"epoch": 1, "loss": ..., ...}, ...]`` (``None`` values left out): the DVC plots format."""
        rows = []
        for i in range(self.epochs):
            row: dict[str, float] = {"epoch": i + 1}
            row.update({k: self[k][i] for k in HISTORY_KEYS if i < len(self[k]) and self[k][i] is not None})
            rows.append(row)
        return rows


class CallbackList:
    """Calls the optional hooks ``on_epoch_end(epoch, logs)`` and ``on_train_end(history)`` of each callback.

    A callback is any object; hooks it does not define are skipped. ``epoch`` is 1-based; ``logs`` holds
    that epoch's history values that are not ``None`` plus ``samples_per_sec`` (training samples per second
    of the training pass, validation excluded).
    """

    def __init__(self, callbacks: Iterable[object] | None = None) -> None:
        self.callbacks = list(callbacks or [])

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        for cb in self.callbacks:
            hook = getattr(cb, "on_epoch_end", None)
            if hook is not None:
                hook(epoch, dict(logs))

    def on_train_end(self, history: History) -> None:
        for cb in self.callbacks:
            hook = getattr(cb, "on_train_end", None)
            if hook is not None:
                hook(history)


def check_finite_loss(loss: float, epoch: int, batch: int, num_batches: int, lr: float) -> None:
    """Raise :class:`~cnn.errors.TrainingDivergedError` if ``loss`` is NaN or infinite.

    ``batch`` is 1-based. The message reads ``loss is nan at epoch 3, batch 17/157; try a lower learning
    rate (now 0.1)``.
    """
    if not math.isfinite(loss):
        raise TrainingDivergedError(
            f"loss is {loss} at epoch {epoch}, batch {batch}/{num_batches}; "
            f"try a lower learning rate (now {lr:g})"
        )


def scheduler_wants_metric(scheduler: object) -> bool:
    """True for plateau-style schedulers whose ``step`` takes the monitored metric.

    A scheduler may say so with a ``needs_metric`` attribute (every :mod:`cnn.schedulers` class has one);
    otherwise any class named ``ReduceLROnPlateau`` (e.g. ``torch.optim.lr_scheduler``'s) does.
    """
    flag = getattr(scheduler, "needs_metric", None)
    if flag is not None:
        return bool(flag)
    return any(cls.__name__ == "ReduceLROnPlateau" for cls in type(scheduler).__mro__)


def step_scheduler(scheduler: object | None, logs: Mapping[str, Any]) -> None:
    """One end-of-epoch scheduler step; plateau schedulers monitor ``val_loss``, else the training loss."""
    if scheduler is None:
        return
    if scheduler_wants_metric(scheduler):
        metric = logs.get("val_loss")
        scheduler.step(logs["loss"] if metric is None else metric)  # type: ignore[attr-defined]
    else:
        scheduler.step()  # type: ignore[attr-defined]


class ProgressBar:
    """A tqdm bar over one epoch's batches showing the running loss and accuracy; silent if ``verbose=0``.

    ``verbose=1``: one bar per epoch (left on screen, with the epoch's validation figures at the end);
    ``verbose=2``: one summary line per epoch, no bar. Output goes to stderr. The postfix is refreshed at
    most every ``refresh_s`` seconds, so the per-batch cost is a counter increment and a clock read.
    """

    def __init__(
        self,
        total: int,
        epoch: int,
        epochs: int,
        verbose: int = 1,
        initial: int = 0,
        refresh_s: float = 0.2,
    ) -> None:
        self.verbose = verbose
        self.desc = f"epoch {epoch}/{epochs}"
        self._bar = None
        self._next_refresh = 0.0
        self._refresh_s = refresh_s
        if verbose == 1:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total, initial=initial, desc=self.desc, unit="batch", leave=True, file=sys.stderr
            )

    def update(self, loss: float, accuracy: float) -> None:
        """One batch done; ``loss`` and ``accuracy`` are the running means over the epoch so far."""
        bar = self._bar
        if bar is None:
            return
        bar.update(1)
        now = time.monotonic()
        if now >= self._next_refresh:
            self._next_refresh = now + self._refresh_s
            bar.set_postfix_str(f"loss={loss:.4f} acc={accuracy:.4f}", refresh=False)

    def close(self, logs: Mapping[str, Any]) -> None:
        """End of the epoch: show the epoch's figures (``loss``, ``accuracy``, ``val_*``, ``lr``)."""
        text = "  ".join(
            f"{k}={logs[k]:.4g}" if k == "lr" else f"{k}={logs[k]:.4f}"
            for k in ("loss", "accuracy", "val_loss", "val_accuracy", "lr")
            if logs.get(k) is not None
        )
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=True)
            self._bar.close()
        elif self.verbose >= 2:
            print(f"{self.desc}: {text}  ({logs.get('epoch_time', 0.0):.1f}s)", file=sys.stderr, flush=True)

    def abandon(self) -> None:
        """Close the bar without a summary (the epoch ended in an error or an interrupt)."""
        if self._bar is not None:
            self._bar.close()


# --------------------------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------------------------
def check_fit_arguments(epochs: int, batch_size: int, verbose: int) -> tuple[int, int, int]:
    """``(epochs, batch_size, verbose)`` as ints, or a :class:`~cnn.errors.ConfigError` naming the bad one."""
    epochs, batch_size, verbose = int(epochs), int(batch_size), int(verbose)
    if epochs < 1:
        raise ConfigError(f"fit: epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise ConfigError(f"fit: batch_size must be >= 1, got {batch_size}")
    return epochs, batch_size, verbose


def build_scheduler(
    scheduler: str | Callable[[Any], Any] | Any | None,
    optimizer: Any,
    make_scheduler: Callable[..., Any],
    scheduler_kwargs: Mapping[str, Any] | None = None,
) -> Any:
    """The scheduler ``fit`` was asked for: None; ``make_scheduler(name, optimizer, **scheduler_kwargs)``
    for a name; ``scheduler(optimizer)`` for a factory (a callable without ``step``); else the object."""
    if scheduler is None:
        return None
    if isinstance(scheduler, str):
        return make_scheduler(scheduler, optimizer, **dict(scheduler_kwargs or {}))
    if callable(scheduler) and not hasattr(scheduler, "step"):
        return scheduler(optimizer)
    return scheduler


class FitOptions(NamedTuple):
    """The arguments of ``fit`` that the loop takes as they are (see ``CNN.fit`` for their meaning)."""

    epochs: int
    batch_size: int
    shuffle: bool
    seed: int
    verbose: int
    callbacks: Iterable[object] | None
    checkpoint_path: str | os.PathLike[str] | None
    resume: bool


class TrainingTarget(Protocol):
    """One ``fit`` call as :func:`run_training` drives it: a model with its optimizer, scheduler and data.

    ``CNN.fit`` and ``TorchTrainer.fit`` each build one; the loop owns everything else (batch order,
    history, guards, progress, callbacks, when to checkpoint).

    Attributes:
        model: the network; has ``training`` and ``train(mode)``.
        optimizer: the built optimizer (its class name enters the run key).
        scheduler: the built scheduler or None (stepped once per epoch by :func:`step_scheduler`).
    """

    model: Any
    optimizer: Any
    scheduler: Any

    @property
    def lr(self) -> float:
        """The optimizer's current learning rate."""
        ...

    def train_batch(self, rows: slice | np.ndarray) -> tuple[float, int]:
        """Train on the rows ``rows`` (a slice or an int64 index array) of the training set: forward,
        then -- only if the loss is finite, so the NaN/inf guard sees the state before any update --
        backward and one optimizer step. Returns ``(mean batch loss, number of correct predictions)``."""
        ...

    def evaluate(self, X: Any, y: Any) -> Mapping[str, float]:
        """``{'loss': ..., 'accuracy': ...}`` on validation data (may leave the model in eval mode)."""
        ...

    def save_training(
        self,
        path: Path,
        run_key: dict[str, Any],
        history: History,
        epoch: int,
        batch: int,
        partial: dict[str, float] | None,
    ) -> None:
        """Write the resume checkpoint: ``epoch`` epochs done plus ``batch`` batches of the next, whose
        running sums are ``partial`` (``loss_sum``, ``correct``, ``seen``, ``elapsed``)."""
        ...

    def restore_training(
        self, path: Path, run_key: dict[str, Any]
    ) -> tuple[int, int, dict[str, float] | None, History]:
        """Load a resume checkpoint (refusing another ``run_key``); return ``(start_epoch, start_batch,
        partial, history)``."""
        ...


def run_training(
    options: FitOptions,
    target: TrainingTarget,
    y: np.ndarray,
    validation_data: tuple[Any, Any] | None = None,
    message_file: Any = None,
) -> History:
    """The epoch/batch loop shared by ``CNN.fit`` and ``TorchTrainer.fit``; returns the :class:`History`.

    The ``target`` supplies the framework-specific pieces (:class:`TrainingTarget`); this function owns
    everything else, in this order:

    1. the run key (``n``, ``batch_size``, ``seed``, ``shuffle``, CRC-32 of ``y``, optimizer and scheduler
       class names), then with ``resume`` ``target.restore_training`` (or a "no checkpoint" note);
    2. ``model.train()``; per epoch: ``lr = target.lr``, the batch order (:func:`batch_order` if
       ``shuffle``, else contiguous slices), a :class:`ProgressBar`, then per batch
       ``batch_loss, correct = target.train_batch(rows)``, the NaN/inf guard (:func:`check_finite_loss`;
       the target did not step), the running sums; on SIGINT/SIGTERM mid-epoch,
       ``target.save_training(path, run_key, history, epoch - 1, batch, partial)`` with the partial sums,
       then :class:`TrainingInterrupted`;
    3. at the end of an epoch: ``target.evaluate(X_val, y_val)`` then ``model.train()``,
       ``History.append``, :func:`step_scheduler`, ``target.save_training(..., epoch, 0, None)``, the
       bar's summary, ``samples_per_sec`` (this process's share of the epoch), ``on_epoch_end``, and a
       pending interrupt;
    4. ``on_train_end(history)``; ``model.train(was_training)`` however the loop ends.

    Args:
        options: ``fit``'s pass-through arguments, already checked (``seed`` already defaulted).
        target: the model, optimizer, scheduler and training data of this fit.
        y: the training labels ``(N,)`` int64 (size of the set, and the run key's CRC).
        validation_data: ``(X_val, y_val)`` as ``target.evaluate`` takes them, or None.
        message_file: where the resume notes are printed (None: stdout).
    """
    epochs, batch_size, shuffle, seed, verbose, callbacks, checkpoint_path, resume = options
    n = len(y)
    num_batches = count_batches(n, batch_size)
    run_key = {
        "n": n,
        "batch_size": batch_size,
        "seed": seed,
        "shuffle": bool(shuffle),
        "labels_crc32": zlib.crc32(np.ascontiguousarray(y).tobytes()),
        "optimizer": type(target.optimizer).__name__,
        "scheduler": None if target.scheduler is None else type(target.scheduler).__name__,
    }
    history = History()
    start_epoch, start_batch, partial = 1, 0, None
    ckpt = None if checkpoint_path is None else Path(checkpoint_path)
    if resume:
        if ckpt is None:
            raise ConfigError("fit: resume=True needs a checkpoint_path")
        if ckpt.exists():
            start_epoch, start_batch, partial, history = target.restore_training(ckpt, run_key)
            if verbose:
                print(
                    f"resuming from {ckpt}: epoch {start_epoch}, batch {start_batch}/{num_batches}",
                    file=message_file,
                    flush=True,
                )
        elif verbose:
            print(f"no checkpoint at {ckpt}: starting from epoch 1", file=message_file, flush=True)

    cbs = CallbackList(callbacks)
    model = target.model
    was_training = model.training
    model.train()
    try:
        with InterruptGuard() as guard:
            for epoch in range(start_epoch, epochs + 1):
                lr = target.lr
                order = batch_order(n, batch_size, epoch, seed, shuffle) if shuffle else None
                bar = ProgressBar(num_batches, epoch, epochs, verbose, initial=start_batch)
                if partial:
                    loss_sum, correct, seen, elapsed = (
                        float(partial["loss_sum"]),
                        int(partial["correct"]),
                        int(partial["seen"]),
                        float(partial["elapsed"]),
                    )
                else:
                    loss_sum, correct, seen, elapsed = 0.0, 0, 0, 0.0
                t0 = time.perf_counter()
                for b in range(start_batch, num_batches):
                    rows: slice | np.ndarray
                    if order is None:  # contiguous; the last batch runs to the end, as in batch_order
                        rows = slice(b * batch_size, n if b + 1 == num_batches else (b + 1) * batch_size)
                    else:
                        rows = order[b]
                    batch_loss, batch_correct = target.train_batch(rows)
                    if not math.isfinite(batch_loss):
                        bar.abandon()
                        check_finite_loss(batch_loss, epoch, b + 1, num_batches, target.lr)
                    m = len(range(n)[rows]) if isinstance(rows, slice) else len(rows)
                    loss_sum += batch_loss * m
                    correct += batch_correct
                    seen += m
                    bar.update(loss_sum / seen, correct / seen)
                    if guard.requested and b + 1 < num_batches:
                        # Mid-epoch stop: everything needed to replay the rest of the epoch exactly.
                        elapsed += time.perf_counter() - t0
                        bar.abandon()
                        if ckpt is not None:
                            part = {
                                "loss_sum": loss_sum,
                                "correct": correct,
                                "seen": seen,
                                "elapsed": elapsed,
                            }
                            target.save_training(ckpt, run_key, history, epoch - 1, b + 1, part)
                        raise guard.interrupted(ckpt, epoch, b + 1, num_batches)
                t_trained = time.perf_counter()
                val_loss = val_acc = None
                if validation_data is not None:
                    val = target.evaluate(*validation_data)
                    val_loss, val_acc = val["loss"], val["accuracy"]
                    model.train()
                history.append(
                    loss=loss_sum / seen,
                    accuracy=correct / seen,
                    val_loss=val_loss,
                    val_accuracy=val_acc,
                    lr=lr,
                    epoch_time=elapsed + (time.perf_counter() - t0),
                )
                logs = history.last()
                step_scheduler(target.scheduler, logs)
                if ckpt is not None:
                    target.save_training(ckpt, run_key, history, epoch, 0, None)
                bar.close(logs)
                # Throughput of this process's share of the epoch (a resumed epoch counts its rest).
                seen_here = seen - (int(partial["seen"]) if partial else 0)
                logs["samples_per_sec"] = seen_here / max(t_trained - t0, 1e-9)
                cbs.on_epoch_end(epoch, logs)
                start_batch, partial = 0, None
                if guard.requested:
                    raise guard.interrupted(ckpt, epoch, num_batches, num_batches)
        cbs.on_train_end(history)
    finally:
        model.train(was_training)
    return history
