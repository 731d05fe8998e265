"""The :class:`CNN` classifier with ``fit`` / ``predict``; its :class:`Sequential` is :mod:`cnn.sequential`'s.

``CNN`` builds its layers from :func:`cnn.architecture.build_spec` into two :class:`Sequential` named
``features`` and ``classifier``, exactly as the PyTorch twin (:mod:`cnn.torch_model`) does, so both have
the same ``state_dict`` keys (``features.0.weight``, ``features.1.running_mean``, ``classifier.5.bias``,
...) and weights move between them unchanged.

Training (:meth:`CNN.fit`) runs the shared loop of :mod:`cnn.training` (:func:`~cnn.training.run_training`
on a :class:`_NumpyFit`): the seeded batch order, the NaN/inf guard, the progress bar, callbacks, and
resumable checkpoints written atomically at the end of every epoch (and mid-epoch on SIGINT/SIGTERM).

Checkpoints (:meth:`CNN.save`, :meth:`CNN.load`, the resume checkpoint of ``fit``) are one uncompressed
``.npz`` read without pickle; :mod:`cnn.checkpoint` describes the layout, writes and reads it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from cnn import checkpoint, kernels
from cnn.activations import ReLU
from cnn.architecture import ArchConfig, LayerSpec, build_spec
from cnn.errors import CheckpointError, ConfigError, DataError
from cnn.layers import BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Dropout2D, Flatten, Layer, MaxPool2D
from cnn.losses import CrossEntropyLoss
from cnn.sequential import Sequential
from cnn.training import (
    FitOptions,
    History,
    build_scheduler,
    check_fit_arguments,
    check_labelled_data,
    run_training,
)

__all__ = ["CNN", "Sequential"]

#: Default batch size of ``predict`` / ``predict_proba`` / ``score`` / ``evaluate``: large enough to keep
#: the GEMMs efficient, small enough that the im2col columns of a batch stay ~100 MB (seed network).
EVAL_BATCH_SIZE = 128


def _make_layer(spec: LayerSpec, dtype: np.dtype, init_rng: np.random.Generator, dropout_seed: Any) -> Layer:
    """The NumPy layer for one :class:`LayerSpec` (the torch twin maps the same kinds to ``torch.nn``)."""
    kw = spec.kwargs
    if spec.kind == "conv2d":
        return Conv2D(**kw, dtype=dtype, rng=init_rng)
    if spec.kind == "dense":
        return Dense(**kw, dtype=dtype, rng=init_rng)
    if spec.kind == "batchnorm2d":
        return BatchNorm2D(**kw, dtype=dtype)
    if spec.kind == "batchnorm1d":
        return BatchNorm1D(**kw, dtype=dtype)
    if spec.kind == "relu":
        return ReLU()
    if spec.kind == "maxpool2d":
        return MaxPool2D(**kw)
    if spec.kind == "dropout2d":
        return Dropout2D(**kw, rng=np.random.default_rng(dropout_seed))
    if spec.kind == "dropout":
        return Dropout(**kw, rng=np.random.default_rng(dropout_seed))
    if spec.kind == "flatten":
        return Flatten()
    raise ConfigError(f"unknown layer kind {spec.kind!r} in the architecture spec")


class CNN:
    """Convolutional classifier; by default the seed network (see :mod:`cnn.architecture`)::

        features:   [Conv2D(32, 3x3, pad 1) -> BatchNorm2D -> ReLU] x2 -> MaxPool2D(2) -> Dropout2D(0.25)
                    [Conv2D(64, 3x3, pad 1) -> BatchNorm2D -> ReLU] x2 -> MaxPool2D(2) -> Dropout2D(0.25)
        classifier: Flatten -> Dense(128) -> BatchNorm1D -> ReLU -> Dropout(0.5) -> Dense(10)

    Args:
        input_shape: ``(C, H, W)`` of one image.
        num_classes: number of classes (logits per sample).
        use_batchnorm: batch norm after every conv/dense layer but the last (those then have no bias).
        dropout_rate: Dropout2D rate after each conv block.
        conv_channels: output channels of each conv layer, grouped in blocks (a max-pool ends a block).
        kernel_size: odd conv kernel size (``same`` padding).
        dense_units: widths of the hidden dense layers.
        dense_dropout: dropout rate after each hidden dense layer.
        dtype: float dtype of parameters and activations (float32 for speed, float64 for checks).
        seed: weights are He-normal draws from a generator seeded with ``seed``; each dropout layer has
            its own generator spawned from the same seed. Same seed, same network, same masks.

    Shapes: ``forward(x)`` maps ``x`` ``(N, *input_shape)`` to logits ``(N, num_classes)``.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        use_batchnorm: bool = True,
        dropout_rate: float = 0.25,
        conv_channels: Sequence[Sequence[int]] = ((32, 32), (64, 64)),
        kernel_size: int = 3,
        dense_units: Sequence[int] = (128,),
        dense_dropout: float = 0.5,
        dtype: DTypeLike = np.float32,
        seed: int = 0,
    ) -> None:
        self.config = ArchConfig(
            input_shape=tuple(input_shape),  # type: ignore[arg-type]  # ArchConfig checks it is (C, H, W)
            num_classes=num_classes,
            use_batchnorm=use_batchnorm,
            dropout_rate=dropout_rate,
            conv_channels=tuple(tuple(b) for b in conv_channels),
            kernel_size=kernel_size,
            dense_units=tuple(dense_units),
            dense_dropout=dense_dropout,
        )
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise ConfigError(f"CNN dtype must be a float type (float32, float64), got {self.dtype}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"CNN seed must be a non-negative int, got {seed!r}")
        self.seed = int(seed)
        # Two independent streams from one seed: weight init, and one generator per dropout layer.
        init_ss, dropout_ss = np.random.SeedSequence(self.seed).spawn(2)
        init_rng = np.random.default_rng(init_ss)
        spec = build_spec(self.config)
        n_dropout = sum(s.kind in ("dropout", "dropout2d") for part in spec.values() for s in part)
        dropout_seeds = iter(dropout_ss.spawn(n_dropout))

        def build(specs: list[LayerSpec]) -> Sequential:
            return Sequential(
                _make_layer(
                    s,
                    self.dtype,
                    init_rng,
                    next(dropout_seeds) if s.kind in ("dropout", "dropout2d") else None,
                )
                for s in specs
            )

        self.features = build(spec["features"])
        self.classifier = build(spec["classifier"])
        self.training = True

    @classmethod
    def from_config(
        cls, arch: ArchConfig | Mapping[str, Any], dtype: DTypeLike = np.float32, seed: int = 0
    ) -> CNN:
        """A CNN from an :class:`ArchConfig` or its dict (e.g. the ``model`` config; a ``name`` key is
        ignored). Unknown keys raise :class:`ConfigError` naming them."""
        d = arch.to_dict() if isinstance(arch, ArchConfig) else dict(arch)
        d.pop("name", None)
        unknown = sorted(set(d) - set(ArchConfig.__dataclass_fields__))
        if unknown:
            raise ConfigError(
                f"unknown model config key {unknown[0]!r}; allowed: {sorted(ArchConfig.__dataclass_fields__)}"
            )
        return cls(**d, dtype=dtype, seed=seed)

    # ------------------------------------------------------------------------------------ layer protocol
    def named_layers(self) -> Iterator[tuple[str, Layer]]:
        """``("features.0", Conv2D(...)), ...`` in forward order."""
        for part_name, part in (("features", self.features), ("classifier", self.classifier)):
            for i, layer in enumerate(part):
                yield f"{part_name}.{i}", layer

    def forward(self, x: ArrayLike) -> np.ndarray:
        """Logits ``(N, num_classes)`` of ``x`` ``(N, C, H, W)`` (cast to the model dtype)."""
        return self.classifier.forward(self.features.forward(np.asarray(x, dtype=self.dtype)))

    def __call__(self, x: ArrayLike) -> np.ndarray:
        return self.forward(x)

    def backward(self, dlogits: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Backpropagate ``dL/dlogits`` ``(N, num_classes)``: fills every layer's ``grads`` in place and
        returns ``dL/dx`` ``(N, C, H, W)``. Must follow the ``forward`` of the same batch.

        ``input_grad=False`` (what ``fit`` uses) skips the first convolution's input gradient, which
        training never needs, and returns None."""
        first = self.features.layers[0]
        if isinstance(first, Conv2D):
            first.needs_input_grad = input_grad
        dx = self.features.backward(self.classifier.backward(dlogits))
        return dx if input_grad else None

    def train(self, mode: bool = True) -> CNN:
        """Training mode (dropout on, batch statistics) or, with ``mode=False``, eval mode."""
        self.training = mode
        self.features.train(mode)
        self.classifier.train(mode)
        return self

    def eval(self) -> CNN:
        """Eval mode: dropout is the identity, batch norm uses its running statistics."""
        return self.train(False)

    def parameters(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The ``(param, grad)`` pairs of every layer, in state_dict order, for an optimizer."""
        return [(layer.params[k], layer.grads[k]) for _, layer in self.named_layers() for k in layer.params]

    def num_parameters(self) -> int:
        """Number of trainable scalars."""
        return sum(p.size for p, _ in self.parameters())

    def state_dict(self) -> dict[str, np.ndarray]:
        """A snapshot (copies) of every parameter and buffer under torch-style keys, in torch order:
        ``features.0.weight``, ``features.1.weight``, ``features.1.bias``, ``features.1.running_mean``,
        ``features.1.running_var``, ``features.1.num_batches_tracked``, ..., ``classifier.5.bias``."""
        return {k: v.copy() for k, v in self._live_state()}

    def _live_state(self) -> Iterator[tuple[str, np.ndarray]]:
        yield from self.features.state_items("features.")
        yield from self.classifier.state_items("classifier.")

    def load_state_dict(self, state: Mapping[str, ArrayLike], source: str = "state_dict") -> None:
        """Copy ``state`` into the model's arrays (cast to their dtypes), strictly.

        Every key must exist with the same shape; BatchNorm's ``num_batches_tracked`` may be missing
        (checkpoints converted from elsewhere may lack it). Nothing is modified unless everything fits.

        Raises:
            CheckpointError: naming ``source``, the first missing / unexpected / mismatched key, and both
                shapes, e.g. ``x.npz: shape mismatch for 'features.0.weight': model has (32, 1, 3, 3),
                checkpoint has (16, 1, 3, 3)``.
        """
        own = dict(self._live_state())
        missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
        if missing:
            raise CheckpointError(f"{source}: missing key '{missing[0]}' ({len(missing)} missing in all)")
        unexpected = [k for k in state if k not in own]
        if unexpected:
            raise CheckpointError(
                f"{source}: unexpected key '{unexpected[0]}' ({len(unexpected)} unexpected in all; "
                f"is this a checkpoint of another architecture?)"
            )
        arrays = {}
        for key, value in state.items():
            arr = np.asarray(value)
            if arr.shape != own[key].shape:
                raise CheckpointError(
                    f"{source}: shape mismatch for '{key}': model has {own[key].shape}, "
                    f"checkpoint has {arr.shape}"
                )
            if arr.dtype.kind not in "fiu" or (own[key].dtype.kind == "f" and arr.dtype.kind != "f"):
                raise CheckpointError(f"{source}: '{key}' has dtype {arr.dtype}, expected {own[key].dtype}")
            arrays[key] = arr
        for key, arr in arrays.items():
            own[key][...] = arr

    # --------------------------------------------------------------------------------------- training
    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        epochs: int,
        batch_size: int = 32,
        learning_rate: float = 1e-3,
        optimizer: str | Any = "adam",
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
        loss: Any | None = None,
    ) -> History:
        """Train with mini-batch gradient descent; return the per-epoch :class:`~cnn.training.History`.

        Each batch: ``logits = forward(x)``, ``loss = CE(logits, y)``, ``backward(dloss/dlogits)``,
        ``optimizer.step()``. After each epoch: validation (eval mode), one scheduler step (plateau
        schedulers monitor ``val_loss``, or the training loss without validation data), the resume
        checkpoint, the callbacks.

        Args:
            X: images ``(N, *input_shape)``, any real dtype (cast once to the model dtype).
            y: integer labels ``(N,)`` in ``[0, num_classes)``.
            epochs: total number of epochs (a resumed run continues up to this number).
            batch_size: samples per step; the last batch of an epoch holds the remainder.
            learning_rate: initial learning rate (ignored when ``optimizer`` is an optimizer object).
            optimizer: ``'adam'``, ``'sgd'``, ``'adamw'`` (built by :func:`cnn.optimizers.make_optimizer`
                with ``optimizer_kwargs``: momentum, nesterov, weight_decay, betas, eps), or an optimizer
                built on ``self.parameters()``.
            scheduler: None/``'none'``, a name for :func:`cnn.schedulers.make_scheduler` (with
                ``scheduler_kwargs``), a callable ``optimizer -> scheduler``, or a scheduler object.
            validation_data: ``(X_val, y_val)`` evaluated after each epoch.
            shuffle: reshuffle every epoch with :func:`cnn.training.batch_order` (seeded by ``seed`` and
                the epoch number); without it batches are contiguous views of ``X`` (no copies).
            callbacks: objects with optional ``on_epoch_end(epoch, logs)`` / ``on_train_end(history)``.
            verbose: 0 silent, 1 a tqdm bar per epoch (running loss/accuracy), 2 one line per epoch.
            seed: seed of the batch order; defaults to the model seed.
            checkpoint_path: ``.npz`` resume checkpoint written atomically after every epoch (and on
                SIGINT/SIGTERM, after the current batch).
            resume: continue from ``checkpoint_path`` if it exists (else start afresh). Model, optimizer,
                scheduler, dropout RNGs, history and position are restored, so the result equals an
                uninterrupted run's.
            loss: the loss object (default ``CrossEntropyLoss()``).

        Returns:
            History ``{loss, accuracy, val_loss, val_accuracy, lr, epoch_time}``: per-epoch lists; loss and
            accuracy are means over the epoch's training batches (in training mode, as torch loops report).

        Raises:
            DataError: ``X``/``y`` do not fit the model. ConfigError: bad arguments.
            TrainingDivergedError: a NaN/inf loss (no checkpoint is written for the diverged state).
            TrainingInterrupted: SIGINT/SIGTERM; the checkpoint was written first (when a path was given).
            CheckpointError: ``resume`` with a checkpoint that is corrupt or from another run set-up.
        """
        from cnn.optimizers import make_optimizer
        from cnn.schedulers import make_scheduler

        epochs, batch_size, verbose = check_fit_arguments(epochs, batch_size, verbose)
        X, y = self._check_data(X, y, "X", "y")
        if validation_data is not None:
            validation_data = self._check_data(*validation_data, "validation X", "validation y")
        seed = self.seed if seed is None else int(seed)
        loss_fn = CrossEntropyLoss() if loss is None else loss
        if isinstance(optimizer, str):
            opt = make_optimizer(
                optimizer, self.parameters(), lr=learning_rate, **dict(optimizer_kwargs or {})
            )
        else:
            opt = optimizer
        sched = build_scheduler(scheduler, opt, make_scheduler, scheduler_kwargs)

        target = _NumpyFit(self, X, y, opt, sched, loss_fn)
        options = FitOptions(epochs, batch_size, shuffle, seed, verbose, callbacks, checkpoint_path, resume)
        with kernels.blas_held():  # BLAS at one thread per pool worker for the whole loop
            return run_training(options, target, y, validation_data, message_file=sys.stderr)

    def _check_data(
        self, X: ArrayLike, y: ArrayLike, xname: str, yname: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """``X`` as a C-contiguous array of the model dtype ``(N, *input_shape)``, ``y`` as int64 ``(N,)``."""
        cfg = self.config
        return check_labelled_data(X, y, cfg.input_shape, cfg.num_classes, self.dtype, xname, yname)

    # --------------------------------------------------------------------------------------- inference
    def _batched_logits(self, X: ArrayLike, batch_size: int) -> Iterator[tuple[slice, np.ndarray]]:
        """Eval-mode logits of ``X`` one batch at a time; the previous mode is restored afterwards."""
        X = np.asarray(X)
        if X.ndim == len(self.config.input_shape):
            X = X[None]
        if X.shape[1:] != self.config.input_shape:
            raise DataError(
                f"X must have shape (N, {', '.join(map(str, self.config.input_shape))}), got {X.shape}"
            )
        was_training = self.training
        self.eval()
        try:
            for start in range(0, len(X), batch_size):
                sl = slice(start, start + batch_size)
                with kernels.blas_held():
                    x = np.asarray(X[sl], dtype=self.dtype)
                    logits = self.classifier.forward_inference(self.features.forward_inference(x))
                yield sl, logits
        finally:
            self.train(was_training)

    def predict_proba(self, X: ArrayLike, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
        """Class probabilities ``softmax(logits)`` ``(N, num_classes)`` in the model dtype (eval mode)."""
        X = np.asarray(X)
        out = np.empty((len(X) if X.ndim == 4 else 1, self.config.num_classes), dtype=self.dtype)
        for sl, logits in self._batched_logits(X, batch_size):
            z = logits - logits.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            out[sl] = z / z.sum(axis=1, keepdims=True)
        return out

    def predict(self, X: ArrayLike, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
        """Predicted class ids ``(N,)`` int64: the argmax of the logits (eval mode)."""
        X = np.asarray(X)
        out = np.empty(len(X) if X.ndim == 4 else 1, dtype=np.int64)
        for sl, logits in self._batched_logits(X, batch_size):
            out[sl] = logits.argmax(axis=1)
        return out

    def evaluate(self, X: ArrayLike, y: ArrayLike, batch_size: int = EVAL_BATCH_SIZE) -> dict[str, float]:
        """``{"loss": mean cross-entropy, "accuracy": fraction correct}`` over ``X``, ``y`` (eval mode)."""
        X, y = self._check_data(X, y, "X", "y")
        ce = CrossEntropyLoss()
        loss_sum, correct = 0.0, 0
        for sl, logits in self._batched_logits(X, batch_size):
            yb = y[sl]
            loss_sum += ce.forward(logits, yb) * len(yb)
            correct += int(np.count_nonzero(logits.argmax(axis=1) == yb))
        return {"loss": loss_sum / len(y), "accuracy": correct / len(y)}

    def score(self, X: ArrayLike, y: ArrayLike, batch_size: int = EVAL_BATCH_SIZE) -> float:
        """Accuracy on ``X``, ``y``: the fraction of samples whose predicted class equals the label."""
        return self.evaluate(X, y, batch_size)["accuracy"]

    def get_feature_maps(self, x: ArrayLike) -> list[dict[str, Any]]:
        """The activation of every conv layer (after its batch norm and ReLU), in eval mode.

        Args:
            x: one image ``(C, H, W)`` or a batch ``(N, C, H, W)``.

        Returns:
            ``[{"layer": "block1.conv1", "module": "features.2", "feature_map": array}, ...]``, one entry
            per conv layer in order; each map is ``(C_out, H', W')`` for a single image, ``(N, C_out, H',
            W')`` for a batch. ``[0]["feature_map"]`` is the first conv layer's output.
        """
        x = np.asarray(x, dtype=self.dtype)
        single = x.ndim == len(self.config.input_shape)
        if single:
            x = x[None]
        if x.shape[1:] != self.config.input_shape:
            raise DataError(
                f"x must have shape {self.config.input_shape} or (N, *{self.config.input_shape}), "
                f"got {x.shape}"
            )
        maps = []
        block, conv, pending = 1, 0, False
        was_training = self.training
        self.eval()
        try:
            for i, layer in enumerate(self.features):
                x = layer.forward(x)
                if isinstance(layer, Conv2D):
                    conv, pending = conv + 1, True
                elif isinstance(layer, ReLU) and pending:
                    maps.append(
                        {
                            "layer": f"block{block}.conv{conv}",
                            "module": f"features.{i}",
                            "feature_map": x[0] if single else x,
                        }
                    )
                    pending = False
                elif isinstance(layer, MaxPool2D):
                    block, conv = block + 1, 0
        finally:
            self.train(was_training)
        return maps

    # ------------------------------------------------------------------------------------------ summary
    def summary(self, print_fn: Callable[[str], Any] | None = print) -> str:
        """A table of every layer's output shape and parameter count, with totals; printed and returned.

        Args:
            print_fn: called with the table (``print`` by default); None only returns it.
        """
        rows = [("Layer (type)", "Output shape", "Param #")]
        shape: tuple[int, ...] = self.config.input_shape
        rows.append(("input", str((None, *shape)), ""))
        for name, layer in self.named_layers():
            shape = layer.output_shape(shape)
            count = sum(p.size for p in layer.params.values())
            rows.append((f"{name} {type(layer).__name__}", str((None, *shape)), f"{count:,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]

        def fmt(r: tuple[str, str, str]) -> str:
            return f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}"

        total = self.num_parameters()
        buffers = sum(v.size for _, layer in self.named_layers() for v in layer.buffers.values())
        rule = "=" * (sum(widths) + 4)
        text = "\n".join(
            [
                fmt(rows[0]),
                rule,
                *map(fmt, rows[1:]),
                rule,
                f"Total params: {total:,}",
                f"Trainable params: {total:,}",
                f"Non-trainable buffers: {buffers:,} (BatchNorm running statistics and batch counts)",
                f"dtype: {self.dtype.name}; parameter memory: {total * self.dtype.itemsize / 2**20:.2f} MiB",
            ]
        )
        if print_fn is not None:
            print_fn(text)
        return text

    def __repr__(self) -> str:
        return f"CNN(features={self.features!r}, classifier={self.classifier!r})"

    # ---------------------------------------------------------------------------------- save and load
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write weights, buffers, architecture config, dtype and seed to one ``.npz``, atomically.

        Returns:
            The path written.
        """
        return checkpoint.write_npz_atomic(path, checkpoint.model_members(self))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CNN:
        """The model saved at ``path`` by :meth:`save` (or found in a resume checkpoint), in eval mode.

        Raises:
            CheckpointError: (a ``ValueError``) for a missing, foreign, corrupt or truncated file, or arrays
                that do not fit the stored architecture; the message names the file and the problem, e.g.
                ``models/x.npz: not a cnn checkpoint (missing key '__config__')``.
        """
        path = Path(path)
        config, dtype, seed, state = checkpoint.read_model(path)  # weight shapes checked before allocating
        model = cls.from_config(config, dtype=dtype, seed=seed)
        model.load_state_dict(state, source=str(path))
        return model.eval()


class _NumpyFit:
    """One ``CNN.fit`` call as the shared loop drives it (a :class:`cnn.training.TrainingTarget`)."""

    def __init__(self, model: CNN, X: np.ndarray, y: np.ndarray, opt: Any, sched: Any, loss_fn: Any) -> None:
        self.model, self.X, self.y = model, X, y
        self.optimizer, self.scheduler, self.loss_fn = opt, sched, loss_fn

    @property
    def lr(self) -> float:
        return float(self.optimizer.lr)

    def train_batch(self, rows: slice | np.ndarray) -> tuple[float, int]:
        xb, yb = self.X[rows], self.y[rows]  # a slice gives views (no copy), an index array a gathered copy
        logits = self.model.forward(xb)
        batch_loss = self.loss_fn.forward(logits, yb)
        # Counted before backward: layers may reuse their buffers from here on.
        correct = int(np.count_nonzero(logits.argmax(axis=1) == yb))
        if np.isfinite(batch_loss):  # a NaN/inf loss: no update (the loop raises TrainingDivergedError)
            self.model.backward(self.loss_fn.backward(), input_grad=False)
            self.optimizer.step()
        return batch_loss, correct

    def evaluate(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        return self.model.evaluate(X, y)

    def save_training(
        self,
        path: Path,
        run_key: dict[str, Any],
        history: History,
        epoch: int,
        batch: int,
        partial: dict[str, float] | None,
    ) -> None:
        checkpoint.save_resume(
            self.model, path, self.optimizer, self.scheduler, run_key, history, epoch, batch, partial
        )

    def restore_training(
        self, path: Path, run_key: dict[str, Any]
    ) -> tuple[int, int, dict[str, float] | None, History]:
        return checkpoint.restore_resume(self.model, path, self.optimizer, self.scheduler, run_key)
