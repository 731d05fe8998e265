"""Training and inference for the PyTorch twin, with the vocabulary and behaviour of ``CNN.fit``.

:class:`TorchTrainer` wraps a :class:`~cnn.torch_model.TorchCNN` and offers the NumPy model's methods:
``fit`` (same arguments, same :class:`~cnn.training.History`), ``predict``, ``predict_proba``, ``score``,
``evaluate``, ``save`` / ``load``. Both trainers use the framework-agnostic pieces of
:mod:`cnn.training` -- the seeded batch order, the NaN/inf guard, the SIGINT/SIGTERM guard, the progress
bar, callbacks and the end-of-epoch scheduler step -- so with the same weights, seed and settings they
see the same batches in the same order and, in float64 with dropout off, follow the same trajectory
(``tests/test_torch_twin.py``).

Optimizers and schedulers are named as in the config (``optimizer: adam|sgd|adamw``, ``scheduler:
none|step|exponential|cosine|plateau`` + ``warmup_epochs``). The arguments are first validated by the
NumPy factories (:func:`cnn.optimizers.make_optimizer`, :func:`cnn.schedulers.make_scheduler`), so both
frameworks accept and reject exactly the same configs with the same messages; the validated settings
then build the ``torch.optim`` / ``torch.optim.lr_scheduler`` objects of the table in
:mod:`cnn.schedulers`.

Execution options (the ``train`` config group): ``device`` (``auto`` = cuda -> mps -> cpu),
``threads`` (CPU threads, default all cores), ``deterministic`` (default on), ``channels_last`` (default:
on for the CPU, where it is faster), ``compile`` (``torch.compile``), ``amp`` (bf16 autocast, CUDA only).
The training data is moved to the device once per ``fit`` when it fits in the device's free memory
(always on the CPU, where the tensor shares the NumPy array's memory), else each batch is copied from
pinned host memory.

Resume: ``fit(..., checkpoint_path="x.pt", resume=True)``. The ``.pt`` resume checkpoint (written
atomically after every epoch, and after the current batch on SIGINT/SIGTERM) holds the model, optimizer
and scheduler states, the torch RNG states, the history and the position (epoch, batch, the epoch's
partial sums), so a resumed run ends with the numbers of an uninterrupted one. It is read back with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike

from cnn.errors import ConfigError, DataError
from cnn.torch_model import (  # the device settings and resume checkpoints live beside the model
    RESUME_FORMAT,
    TorchCNN,
    configure_torch,
    default_threads,
    numpy_dtype,
    resolve_device,
    restore_resume,
    save_resume,
)
from cnn.training import (
    FitOptions,
    History,
    build_scheduler,
    check_fit_arguments,
    check_labelled_data,
    run_training,
)

__all__ = [
    "EVAL_BATCH_SIZE",
    "RESUME_FORMAT",
    "TorchTrainer",
    "WarmupThenPlateau",
    "configure_torch",
    "default_threads",
    "make_torch_optimizer",
    "make_torch_scheduler",
    "resolve_device",
]

#: Default batch size of predict / evaluate: inference keeps no activations for backward, so large
#: batches are cheap; 512 keeps the seed network's peak activation memory near 100 MB in float32.
EVAL_BATCH_SIZE = 512


# --------------------------------------------------------------------------- optimizers and schedulers
def make_torch_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], lr: float, **kwargs: Any
) -> torch.optim.Optimizer:
    """The ``torch.optim`` twin of :func:`cnn.optimizers.make_optimizer` (same names, kwargs, defaults).

    ``sgd`` -> ``SGD(lr, momentum, dampening=0, nesterov, weight_decay)``; ``adam`` -> ``Adam(lr, betas,
    eps, weight_decay)``; ``adamw`` -> ``AdamW(lr, betas, eps, weight_decay)`` (``weight_decay`` defaults
    to the config's 0.0, not torch's 1e-2). Validation is the NumPy factory's, so an invalid config raises
    the same :class:`ConfigError` in both frameworks.
    """
    from cnn.optimizers import SGD, Adam, make_optimizer

    ref = make_optimizer(name, [(np.zeros(1), np.zeros(1))], lr=lr, **kwargs)  # validates, fills defaults
    params = list(params)
    if isinstance(ref, SGD):
        return torch.optim.SGD(
            params, lr=float(lr), momentum=ref.momentum, nesterov=ref.nesterov, weight_decay=ref.weight_decay
        )
    assert isinstance(ref, Adam)  # AdamW is an Adam
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(params, lr=float(lr), betas=ref.betas, eps=ref.eps, weight_decay=ref.weight_decay)


class WarmupThenPlateau:
    """Linear warm-up for ``w`` epochs, then ``ReduceLROnPlateau`` (torch has no class for this chain:
    ``SequentialLR`` refuses a plateau scheduler). At the end of epoch ``e`` (0-based):
    ``warmup.step() if e < w else plateau.step(metric)``, as :class:`cnn.schedulers.LinearWarmup` does."""

    needs_metric = True  # cnn.training.step_scheduler passes the monitored metric

    def __init__(
        self,
        warmup: torch.optim.lr_scheduler.LinearLR,
        plateau: torch.optim.lr_scheduler.ReduceLROnPlateau,
        warmup_epochs: int,
    ) -> None:
        self.warmup, self.plateau, self.warmup_epochs = warmup, plateau, int(warmup_epochs)
        self.last_epoch = 0

    def step(self, metric: float) -> None:
        if self.last_epoch < self.warmup_epochs:
            self.warmup.step()
        else:
            self.plateau.step(metric)
        self.last_epoch += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_epoch": self.last_epoch,
            "warmup": self.warmup.state_dict(),
            "plateau": self.plateau.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.warmup.load_state_dict(dict(state["warmup"]))
        self.plateau.load_state_dict(dict(state["plateau"]))
        self.last_epoch = int(state["last_epoch"])


def make_torch_scheduler(name: str | None, optimizer: torch.optim.Optimizer, **kwargs: Any) -> Any:
    """The ``torch.optim.lr_scheduler`` twin of :func:`cnn.schedulers.make_scheduler` (see the table in
    :mod:`cnn.schedulers`); ``None`` for ``none`` without warm-up. Validated by the NumPy factory."""
    from cnn import schedulers as S
    from cnn.optimizers import SGD

    if name is None:
        return None
    lr = optimizer.param_groups[0]["lr"]
    ref = S.make_scheduler(name, SGD([(np.zeros(1), np.zeros(1))], lr=lr), **kwargs)
    lrs = torch.optim.lr_scheduler
    warm_epochs = 0
    main_ref: Any = ref
    if isinstance(ref, S.LinearWarmup):
        warm_epochs, main_ref = ref.warmup_epochs, ref.after
    main: Any = None
    if isinstance(main_ref, S.StepLR):
        main = lrs.StepLR(optimizer, step_size=main_ref.step_size, gamma=main_ref.gamma)
    elif isinstance(main_ref, S.ExponentialLR):
        main = lrs.ExponentialLR(optimizer, gamma=main_ref.gamma)
    elif isinstance(main_ref, S.CosineAnnealingLR):
        main = lrs.CosineAnnealingLR(optimizer, T_max=main_ref.T_max, eta_min=main_ref.eta_min)
    elif isinstance(main_ref, S.ReduceLROnPlateau):
        main = lrs.ReduceLROnPlateau(
            optimizer,
            mode=main_ref.mode,  # type: ignore[arg-type]  # checked by cnn.schedulers: 'min' or 'max'
            factor=main_ref.factor,
            patience=main_ref.patience,
            threshold=main_ref.threshold,
            threshold_mode=main_ref.threshold_mode,  # type: ignore[arg-type]  # 'rel' or 'abs'
            cooldown=main_ref.cooldown,
            min_lr=main_ref.min_lr,
            eps=main_ref.eps,
        )
    elif main_ref is not None:  # pragma: no cover - make_scheduler returns only the classes above
        raise ConfigError(f"scheduler {name!r}: no torch twin for {type(main_ref).__name__}")
    if warm_epochs == 0:
        return main
    warm = lrs.LinearLR(
        optimizer, start_factor=1.0 / (warm_epochs + 1), end_factor=1.0, total_iters=warm_epochs
    )
    if main is None:
        return warm
    if isinstance(main, lrs.ReduceLROnPlateau):
        return WarmupThenPlateau(warm, main, warm_epochs)
    return lrs.SequentialLR(optimizer, [warm, main], milestones=[warm_epochs])


# ------------------------------------------------------------------------------------------- trainer
class TorchTrainer:
    """Fit / predict / evaluate a :class:`TorchCNN` with the vocabulary of the NumPy ``CNN``.

    Args:
        model: the network (moved to ``device``; its dtype is the training dtype).
        device: ``"auto"`` (cuda -> mps -> cpu), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
        threads: CPU threads for torch (None = all cores); applied at construction (process-wide).
        deterministic: seed torch from the fit seed, ``torch.use_deterministic_algorithms(True)``,
            deterministic cuDNN; same config and seed -> same numbers, run after run (process-wide).
        channels_last: NHWC memory format for the convolutions; None (default) = on for the CPU, where it
            measured 1.3-1.8x faster for this network (``benchmarks/inference.py``, training likewise), off
            for GPUs, where the float32 NCHW kernels are the well-trodden path.
        compile: run the forward pass through ``torch.compile`` (first batches pay the compile time).
        amp: bf16 autocast for forward passes on CUDA; ignored with a warning elsewhere.
        seed: default seed of ``fit`` (batch order, dropout masks); None = the model's seed, as ``CNN.fit``.
    """

    def __init__(
        self,
        model: TorchCNN,
        device: str | torch.device = "auto",
        threads: int | None = None,
        deterministic: bool = True,
        channels_last: bool | None = None,
        compile: bool = False,
        amp: bool = False,
        seed: int | None = None,
    ) -> None:
        if not isinstance(model, TorchCNN):
            raise TypeError(f"TorchTrainer needs a TorchCNN, got {type(model).__name__}")
        seed = model.seed if seed is None else seed
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ConfigError(f"train.seed must be a non-negative int, got {seed!r}")
        self.device = resolve_device(device)
        self.threads = threads
        self.deterministic = bool(deterministic)
        configure_torch(threads, self.deterministic)
        self.channels_last = self.device.type == "cpu" if channels_last is None else bool(channels_last)
        self.amp = bool(amp)
        if self.amp and self.device.type != "cuda":
            warnings.warn(
                f"train.amp (bf16 autocast) applies to CUDA only; ignored on {self.device}", stacklevel=2
            )
            self.amp = False
        self.seed = int(seed)
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        # torch's stub of Module.to lacks memory_format, which Module.to accepts.
        self.model = model.to(self.device, memory_format=self.memory_format)  # type: ignore[call-overload]
        self.compile = bool(compile)
        self._forward: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(self.model) if self.compile else self.model
        )

    @classmethod
    def from_config(
        cls, arch: Mapping[str, Any], dtype: Any = np.float32, seed: int = 0, **options: Any
    ) -> TorchTrainer:
        """A trainer for a fresh ``TorchCNN.from_config(arch, dtype, seed)``; ``options`` are the
        constructor's (device, threads, deterministic, channels_last, compile, amp)."""
        return cls(TorchCNN.from_config(arch, dtype=dtype, seed=seed), **options)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    # ------------------------------------------------------------------------------------------ data
    def _check_data(
        self, X: ArrayLike, y: ArrayLike, xname: str, yname: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """``X`` as a C-contiguous array of the model dtype ``(N, *input_shape)``, ``y`` int64 ``(N,)``."""
        cfg = self.model.config
        dtype = numpy_dtype(self.dtype)
        return check_labelled_data(X, y, cfg.input_shape, cfg.num_classes, dtype, xname, yname)

    def _fits_on_device(self, nbytes: int) -> bool:
        """Whether a tensor of ``nbytes`` can live on the device with room to spare for training."""
        if self.device.type == "cpu":
            return True
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return nbytes < 0.5 * free
        return nbytes < 2**30  # mps: no free-memory query; 1 GiB is safe on any Apple GPU

    def _stage(self, array: np.ndarray) -> torch.Tensor:
        """``array`` as a tensor on the device if it fits (zero-copy on the CPU), else in pinned host
        memory from which each batch is copied asynchronously."""
        t = torch.from_numpy(array)
        if self._fits_on_device(array.nbytes):
            return t.to(self.device)
        return t.pin_memory() if self.device.type == "cuda" else t

    def _to_device(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.device != self.device:
            batch = batch.to(self.device, non_blocking=True)
        if batch.ndim == 4 and self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def _autocast(self) -> Any:
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()

    # ------------------------------------------------------------------------------------- training
    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        epochs: int,
        batch_size: int = 32,
        learning_rate: float = 1e-3,
        optimizer: str | torch.optim.Optimizer = "adam",
        optimizer_kwargs: Mapping[str, Any] | None = None,
        scheduler: str | Callable[[Any], Any] | Any | None = None,
        scheduler_kwargs: Mapping[str, Any] | None = None,
        validation_data: tuple[ArrayLike, ArrayLike] | None = None,
        shuffle: bool = True,
        callbacks: Iterable[object] | None = None,
        verbose: int = 1,
        seed: int | None = None,
        checkpoint_path: str | os.PathLike[str] | None = None,
        resume: bool = False,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> History:
        """Train; return the per-epoch :class:`~cnn.training.History` (same contract as ``CNN.fit``).

        Each batch: ``logits = model(x)``, ``loss = cross_entropy(logits, y)`` (mean), ``loss.backward()``,
        ``optimizer.step()``. After each epoch: validation (eval mode), one scheduler step (plateau
        schedulers monitor ``val_loss``, else the training loss), the resume checkpoint, the callbacks.

        Args:
            X: images ``(N, *input_shape)``, cast once to the model dtype. y: int labels ``(N,)``.
            epochs: total epochs (a resumed run continues up to this number).
            batch_size: samples per step; the last batch of an epoch holds the remainder.
            learning_rate: initial rate (ignored when ``optimizer`` is a ``torch.optim.Optimizer``).
            optimizer: ``'adam'``, ``'sgd'``, ``'adamw'`` with ``optimizer_kwargs`` (momentum, nesterov,
                weight_decay, betas, eps), or a ``torch.optim.Optimizer`` on ``self.model.parameters()``.
            scheduler: None/``'none'``, a name with ``scheduler_kwargs`` (step_size, gamma, T_max,
                eta_min, factor, patience, mode, warmup_epochs), a callable ``optimizer -> scheduler``,
                or a scheduler object.
            validation_data: ``(X_val, y_val)`` evaluated after each epoch.
            shuffle: reshuffle each epoch with :func:`cnn.training.batch_order` (seed, epoch).
            callbacks: objects with optional ``on_epoch_end(epoch, logs)`` / ``on_train_end(history)``;
                ``logs`` adds ``samples_per_sec`` (training pass only) to the epoch's history values.
            verbose: 0 silent, 1 a tqdm bar per epoch, 2 one line per epoch.
            seed: batch order and (deterministic mode) ``torch.manual_seed``; default ``self.seed``.
            checkpoint_path: ``.pt`` resume checkpoint written atomically after every epoch and on
                SIGINT/SIGTERM (after the current batch).
            resume: continue from ``checkpoint_path`` if it exists (else start afresh).
            loss: ``loss(logits, y) -> scalar tensor``; default ``F.cross_entropy``.

        Returns:
            History ``{loss, accuracy, val_loss, val_accuracy, lr, epoch_time}``: per-epoch lists; loss
            and accuracy are means over the epoch's training batches (training mode).

        Raises:
            DataError, ConfigError: bad data or arguments. TrainingDivergedError: NaN/inf loss.
            TrainingInterrupted: SIGINT/SIGTERM, after writing the checkpoint (when a path was given).
            CheckpointError: ``resume`` from a corrupt checkpoint or one of another run set-up.
        """
        epochs, batch_size, verbose = check_fit_arguments(epochs, batch_size, verbose)
        X, y = self._check_data(X, y, "X", "y")
        if validation_data is not None:
            validation_data = self._check_data(*validation_data, "validation X", "validation y")
        n = len(y)
        seed = self.seed if seed is None else int(seed)
        loss_fn = F.cross_entropy if loss is None else loss
        model = self.model
        if self.deterministic:
            torch.manual_seed(seed)  # dropout masks; a resumed run restores the saved RNG state instead

        if isinstance(optimizer, str):
            opt = make_torch_optimizer(
                optimizer, model.parameters(), learning_rate, **dict(optimizer_kwargs or {})
            )
        else:
            opt = optimizer
        # A name: 'none' with warmup_epochs > 0 is a warm-up alone.
        sched = build_scheduler(scheduler, opt, make_torch_scheduler, scheduler_kwargs)
        if self.model.config.use_batchnorm and self.model.config.dense_units and 1 in (batch_size, n):
            # BatchNorm1d has no variance to normalise by in a one-sample batch (torch refuses it);
            # batch_order already folds a trailing one-sample batch into the one before it.
            raise ConfigError(
                f"fit: a batch would hold 1 sample (N={n}, batch_size={batch_size}), which BatchNorm1d "
                f"cannot normalise; use batch_size >= 2"
            )

        target = _TorchFit(self, self._stage(X), self._stage(y), opt, sched, loss_fn)
        options = FitOptions(epochs, batch_size, shuffle, seed, verbose, callbacks, checkpoint_path, resume)
        return run_training(options, target, y, validation_data)

    # ------------------------------------------------------------------------------------- inference
    @torch.no_grad()
    def _batched_logits(self, X: ArrayLike, batch_size: int) -> Iterator[tuple[slice, torch.Tensor]]:
        """Eval-mode logits of ``X`` one batch at a time (on the device); the mode is restored after."""
        X = np.asarray(X)
        shape = self.model.config.input_shape
        if X.ndim == len(shape):
            X = X[None]
        if X.ndim != 4 or X.shape[1:] != shape:
            raise DataError(f"X must have shape (N, {', '.join(map(str, shape))}), got {X.shape}")
        X_dev = self._stage(np.ascontiguousarray(X, dtype=numpy_dtype(self.dtype)))
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(X), batch_size):
                sl = slice(start, start + batch_size)
                with self._autocast():
                    logits = self._forward(self._to_device(X_dev[sl]))
                yield sl, logits.to(self.dtype)
        finally:
            self.model.train(was_training)

    def predict_logits(self, X: ArrayLike, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
        """Logits ``(N, num_classes)`` in the model dtype (eval mode), as a NumPy array."""
        parts = [logits.cpu().numpy() for _, logits in self._batched_logits(X, batch_size)]
        return np.concatenate(parts) if parts else np.empty((0, self.model.config.num_classes))

    def predict_proba(self, X: ArrayLike, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
        """Class probabilities ``softmax(logits)`` ``(N, num_classes)`` in the model dtype (eval mode)."""
        parts = [torch.softmax(z, dim=1).cpu().numpy() for _, z in self._batched_logits(X, batch_size)]
        return np.concatenate(parts)

    def predict(self, X: ArrayLike, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
        """Predicted class ids ``(N,)`` int64: the argmax of the logits (eval mode)."""
        parts = [z.argmax(dim=1).cpu().numpy() for _, z in self._batched_logits(X, batch_size)]
        return np.concatenate(parts).astype(np.int64, copy=False)

    def evaluate(self, X: ArrayLike, y: ArrayLike, batch_size: int = EVAL_BATCH_SIZE) -> dict[str, float]:
        """``{"loss": mean cross-entropy, "accuracy": fraction correct}`` over ``X``, ``y`` (eval mode)."""
        X, y = self._check_data(X, y, "X", "y")
        y_t = torch.from_numpy(y).to(self.device)
        loss_sum, correct = 0.0, 0
        for sl, logits in self._batched_logits(X, batch_size):
            yb = y_t[sl]
            loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(dim=1) == yb).sum())
        return {"loss": loss_sum / len(y), "accuracy": correct / len(y)}

    def score(self, X: ArrayLike, y: ArrayLike, batch_size: int = EVAL_BATCH_SIZE) -> float:
        """Accuracy on ``X``, ``y``: the fraction of samples whose predicted class equals the label."""
        return self.evaluate(X, y, batch_size)["accuracy"]

    # ---------------------------------------------------------------------------------- save / load
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model's ``.pt`` checkpoint (see :meth:`TorchCNN.save`)."""
        return self.model.save(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], **options: Any) -> TorchTrainer:
        """A trainer around the model saved at ``path`` (a model or resume checkpoint), in eval mode;
        ``options`` are the constructor's (device, threads, ...)."""
        return cls(TorchCNN.load(path).eval(), **options)


class _TorchFit:
    """One ``TorchTrainer.fit`` call as the shared loop drives it (a :class:`cnn.training.TrainingTarget`);
    ``X_dev`` / ``y_dev`` are the staged training set (:meth:`TorchTrainer._stage`)."""

    def __init__(
        self,
        trainer: TorchTrainer,
        X_dev: torch.Tensor,
        y_dev: torch.Tensor,
        opt: torch.optim.Optimizer,
        sched: Any,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> None:
        self.trainer, self.model, self.X_dev, self.y_dev = trainer, trainer.model, X_dev, y_dev
        self.optimizer, self.scheduler, self.loss_fn = opt, sched, loss_fn

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def train_batch(self, rows: slice | np.ndarray) -> tuple[float, int]:
        tr = self.trainer
        idx = torch.from_numpy(rows).to(self.X_dev.device) if isinstance(rows, np.ndarray) else rows
        xb, yb = tr._to_device(self.X_dev[idx]), tr._to_device(self.y_dev[idx])
        with tr._autocast():
            logits = tr._forward(xb)
            loss_t = self.loss_fn(logits, yb)
        batch_loss, correct = float(loss_t.detach()), int((logits.argmax(dim=1) == yb).sum())
        if math.isfinite(batch_loss):  # a NaN/inf loss: no update (the loop raises TrainingDivergedError)
            self.optimizer.zero_grad(set_to_none=True)
            loss_t.backward()
            self.optimizer.step()
        return batch_loss, correct

    def evaluate(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        return self.trainer.evaluate(X, y)

    def save_training(
        self,
        path: Path,
        run_key: dict[str, Any],
        history: History,
        epoch: int,
        batch: int,
        partial: dict[str, float] | None,
    ) -> None:
        save_resume(
            self.model,
            path,
            self.optimizer,
            self.scheduler,
            run_key,
            history,
            epoch,
            batch,
            partial,
            self.trainer.device,
        )

    def restore_training(
        self, path: Path, run_key: dict[str, Any]
    ) -> tuple[int, int, dict[str, float] | None, History]:
        return restore_resume(self.model, path, self.optimizer, self.scheduler, run_key, self.trainer.device)
