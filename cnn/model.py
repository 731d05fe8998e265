"""The network: :class:`Sequential` containers and the :class:`CNN` classifier with ``fit`` / ``predict``.

``CNN`` builds its layers from :func:`cnn.architecture.build_spec` into two :class:`Sequential` named
``features`` and ``classifier``, exactly as the PyTorch twin (:mod:`cnn.torch_model`) does, so both have
the same ``state_dict`` keys (``features.0.weight``, ``features.1.running_mean``, ``classifier.5.bias``,
...) and weights move between them unchanged.

Training (:meth:`CNN.fit`) uses the framework-agnostic pieces of :mod:`cnn.training`: the seeded batch
order, the NaN/inf guard, the progress bar, callbacks, and resumable checkpoints written atomically at
the end of every epoch (and mid-epoch on SIGINT/SIGTERM).

Checkpoints (:meth:`CNN.save`, :meth:`CNN.load`) are one uncompressed ``.npz`` read without pickle::

    __format__   "cnn-checkpoint" (JSON)        __version__  1 (JSON)
    __config__   ArchConfig.to_dict() (JSON)    __dtype__    "float32" | "float64" (JSON)
    __seed__     the model seed (JSON)          <state_dict key>  one array per parameter / buffer

A resume checkpoint is the same file plus ``__resume__`` (JSON: epoch, batch, history, RNG states,
optimizer/scheduler state with their arrays under ``optimizer/<i>`` and ``scheduler/<i>``), so
``CNN.load`` also reads the model out of a resume checkpoint.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from cnn import kernels
from cnn.activations import ReLU
from cnn.architecture import ArchConfig, LayerSpec, build_spec
from cnn.errors import CheckpointError, ConfigError, DataError
from cnn.layers import (
    BatchNorm1D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Dropout2D,
    Flatten,
    Layer,
    MaxPool2D,
)
from cnn.losses import CrossEntropyLoss
from cnn.training import (
    FitOptions,
    History,
    build_scheduler,
    check_fit_arguments,
    check_format,
    check_labelled_data,
    check_run_key,
    decode_json,
    encode_json,
    format_members,
    pack_state,
    read_npz,
    rng_state,
    run_training,
    set_rng_state,
    unpack_state,
    write_npz_atomic,
)

__all__ = ["CNN", "Sequential"]

#: Default batch size of ``predict`` / ``predict_proba`` / ``score`` / ``evaluate``: large enough to keep
#: the GEMMs efficient, small enough that the im2col columns of a batch stay ~100 MB (seed network).
EVAL_BATCH_SIZE = 128

_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _fuses_relu(layer: Layer, following: Layer | None) -> bool:
    """Whether ``layer`` and the ``following`` one run fused: a batch norm and exactly a ReLU."""
    return isinstance(layer, (BatchNorm1D, BatchNorm2D)) and type(following) is ReLU


def _fuses_dropout(layer: Layer, following: Layer | None, x: np.ndarray) -> bool:
    """Whether ``layer`` and the ``following`` one run fused: a max-pool and exactly a ``Dropout2D`` on a
    floating-point input (the mask's dtype is then the pooled output's)."""
    return type(layer) is MaxPool2D and type(following) is Dropout2D and getattr(x, "dtype", None) in _FLOATS


class Sequential(Layer):
    """Layers applied one after another; itself a :class:`~cnn.layers.Layer`.

    ``forward`` runs ``layers[0] .. layers[-1]``; ``backward`` runs them in reverse. Parameter, gradient
    and buffer names are ``"<index>.<name>"`` (``"0.weight"``, ``"1.running_mean"``), as in
    ``torch.nn.Sequential``; the dicts are built on each access from the layers' own dicts, so they always
    hold the layers' live arrays.
    """

    def __init__(self, layers: Iterable[Layer]) -> None:
        self.layers: list[Layer] = list(layers)
        self.training = True
        self._ran: list[Layer] | None = None  # the (possibly fused) layers of the last forward

    # The Layer attributes, as live views of the children (no setters: assign to a child's dict instead).
    @property
    def params(self) -> dict[str, np.ndarray]:  # type: ignore[override]
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params.items()}

    @property
    def grads(self) -> dict[str, np.ndarray]:  # type: ignore[override]
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.grads.items()}

    @property
    def buffers(self) -> dict[str, np.ndarray]:  # type: ignore[override]
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.buffers.items()}

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> Layer:
        return self.layers[i]

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def forward(self, x: np.ndarray) -> np.ndarray:
        # A batch norm followed by a ReLU runs as one fused layer (BatchNorm.forward_relu: one pass over
        # the data instead of two), and so does a max-pool followed by a Dropout2D
        # (MaxPool2D.forward_dropout); the second layer stays in the list, so names and state_dict keys
        # are unchanged. The layers that ran are recorded for backward.
        ran: list[Layer] = []
        i, layers = 0, self.layers
        while i < len(layers):
            layer = layers[i]
            following = layers[i + 1] if i + 1 < len(layers) else None
            if _fuses_relu(layer, following):
                x = layer.forward_relu(x)  # type: ignore[attr-defined]
                i += 2
            elif _fuses_dropout(layer, following, x):
                x = layer.forward_dropout(x, following)  # type: ignore[attr-defined]
                i += 2
            else:
                x = layer.forward(x)
                i += 1
            ran.append(layer)
        self._ran = ran
        return x

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        for layer in reversed(self.layers if self._ran is None else self._ran):
            grad_out = layer.backward(grad_out)
        return grad_out

    def train(self, mode: bool = True) -> Sequential:
        self.training = mode
        for layer in self.layers:
            layer.train(mode)
        return self

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        for layer in self.layers:
            input_shape = layer.output_shape(input_shape)
        return tuple(input_shape)

    def state_items(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """``(name, array)`` for every parameter then buffer of each layer, in layer order (torch order)."""
        for i, layer in enumerate(self.layers):
            for k, v in layer.params.items():
                yield f"{prefix}{i}.{k}", v
            for k, v in layer.buffers.items():
                yield f"{prefix}{i}.{k}", v

    def extra_repr(self) -> str:
        return "\n" + "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers)) + "\n"


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


def _weight_shape(spec: LayerSpec) -> tuple[int, ...] | None:
    """The ``weight`` shape of a conv/dense spec (torch layout), else None. Used to check a checkpoint's
    config against its arrays *before* allocating a network (a corrupt config must not allocate GBs)."""
    kw = spec.kwargs
    if spec.kind == "conv2d":
        k = kw["kernel_size"]
        return (kw["out_channels"], kw["in_channels"], k, k)
    if spec.kind == "dense":
        return (kw["out_features"], kw["in_features"])
    return None


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
            input_shape=tuple(input_shape),
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

        def forward(xb: np.ndarray, yb: np.ndarray) -> tuple[float, int]:
            logits = self.forward(xb)
            batch_loss = loss_fn.forward(logits, yb)
            # Counted before backward: layers may reuse their buffers from here on.
            return batch_loss, int(np.count_nonzero(logits.argmax(axis=1) == yb))

        def step() -> None:
            self.backward(loss_fn.backward(), input_grad=False)
            opt.step()

        with kernels.blas_held():  # BLAS at one thread per pool worker for the whole loop
            return run_training(
                FitOptions(epochs, batch_size, shuffle, seed, verbose, callbacks, checkpoint_path, resume),
                model=self,
                # A slice gives views (no copy), an index array a gathered copy.
                get_batch=lambda rows: (X[rows], y[rows]),
                forward=forward,
                step=step,
                optimizer=opt,
                get_lr=lambda: float(opt.lr),
                scheduler=sched,
                y=y,
                message_file=sys.stderr,
                validation_data=validation_data,
                evaluate=self.evaluate,
                save_checkpoint=self._save_training,
                restore_checkpoint=self._restore_training,
            )

    def _check_data(
        self, X: ArrayLike, y: ArrayLike, xname: str, yname: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """``X`` as a C-contiguous array of the model dtype ``(N, *input_shape)``, ``y`` as int64 ``(N,)``."""
        cfg = self.config
        return check_labelled_data(X, y, cfg.input_shape, cfg.num_classes, self.dtype, xname, yname)

    # ------------------------------------------------------------------------------ resume checkpoints
    def _dropout_layers(self) -> Iterator[tuple[str, Layer]]:
        return ((name, layer) for name, layer in self.named_layers() if hasattr(layer, "rng"))

    def _save_training(
        self,
        path: Path,
        opt: Any,
        sched: Any,
        run_key: dict[str, Any],
        history: History,
        epoch: int,
        batch: int,
        partial: dict[str, float] | None,
    ) -> None:
        """Write the resume checkpoint: ``epoch`` epochs completed plus ``batch`` batches of the next."""
        opt_tree, opt_arrays = pack_state(opt.state_dict(), "optimizer/")
        sched_tree, sched_arrays = pack_state(None if sched is None else sched.state_dict(), "scheduler/")
        resume = {
            "epoch": epoch,
            "batch": batch,
            "partial": partial,
            "history": dict(history),
            "rng": {name: rng_state(layer.rng) for name, layer in self._dropout_layers()},
            "optimizer": opt_tree,
            "scheduler": sched_tree,
            "run": run_key,
        }
        members = self._checkpoint_members()
        members["__resume__"] = encode_json(resume)
        members.update(opt_arrays)
        members.update(sched_arrays)
        write_npz_atomic(path, members)

    def _restore_training(
        self, path: Path, opt: Any, sched: Any, run_key: dict[str, Any]
    ) -> tuple[int, int, dict[str, float] | None, History]:
        """Load a resume checkpoint into the model, ``opt`` and ``sched``; return where to continue."""
        members = read_npz(path)
        check_format(members, path)
        config, dtype, _ = self._read_header(members, path)
        if config != self.config or dtype != self.dtype:
            raise CheckpointError(
                f"{path}: checkpoint is of another model ({config}, {dtype}); this model is "
                f"({self.config}, {self.dtype})"
            )
        if "__resume__" not in members:
            raise CheckpointError(
                f"{path}: not a resume checkpoint (missing key '__resume__'): a model saved by CNN.save "
                f"holds weights only; train it further with fit() without resume"
            )
        state = decode_json(members, "__resume__", path)
        try:
            check_run_key(state["run"], run_key, path)
            epoch, batch, partial = int(state["epoch"]), int(state["batch"]), state["partial"]
            history = History(state["history"])
            if any(len(history[k]) != epoch for k in history) or (batch > 0) != (partial is not None):
                raise CheckpointError(f"{path}: resume state is inconsistent (epoch {epoch}, batch {batch})")
            if partial is not None:
                partial = {k: partial[k] for k in ("loss_sum", "correct", "seen", "elapsed")}
            rngs = dict(self._dropout_layers())
            if set(state["rng"]) != set(rngs):
                raise CheckpointError(
                    f"{path}: RNG states for {sorted(state['rng'])}, expected {sorted(rngs)}"
                )
            opt_state = unpack_state(state["optimizer"], members, path)
            sched_state = None if sched is None else unpack_state(state["scheduler"], members, path)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(f"{path}: malformed resume state ({type(exc).__name__}: {exc})") from None

        # Load everything or nothing: the model is restored if the optimizer or scheduler refuses its state.
        backup = self.state_dict(), {name: rng_state(layer.rng) for name, layer in rngs.items()}
        try:
            self.load_state_dict(self._model_state(members), source=str(path))
            for name, st in state["rng"].items():
                set_rng_state(rngs[name].rng, st, what=f"{path}: RNG of {name}")
            opt.load_state_dict(opt_state)
            if sched is not None:
                sched.load_state_dict(sched_state)
        except (CheckpointError, KeyError, TypeError, ValueError) as exc:
            self.load_state_dict(backup[0])
            for name, st in backup[1].items():
                set_rng_state(rngs[name].rng, st)
            msg = str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}"
            raise CheckpointError(msg) from None
        return epoch + 1, batch, partial, history

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
                    logits = self.forward(X[sl])
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
        shape = self.config.input_shape
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
    def _checkpoint_members(self) -> dict[str, np.ndarray]:
        members = format_members()
        members["__config__"] = encode_json(self.config.to_dict())
        members["__dtype__"] = encode_json(self.dtype.name)
        members["__seed__"] = encode_json(self.seed)
        members.update(self.state_dict())
        return members

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write weights, buffers, architecture config, dtype and seed to one ``.npz``, atomically.

        Returns:
            The path written.
        """
        return write_npz_atomic(path, self._checkpoint_members())

    @staticmethod
    def _read_header(members: Mapping[str, np.ndarray], path: Path | str) -> tuple[ArchConfig, np.dtype, int]:
        raw = decode_json(members, "__config__", path)
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path}: '__config__' must be a JSON object, found {type(raw).__name__}")
        unknown = sorted(set(raw) - set(ArchConfig.__dataclass_fields__))
        if unknown:
            raise CheckpointError(f"{path}: '__config__' has unknown key '{unknown[0]}'")
        try:
            config = ArchConfig(**raw)
        except (ConfigError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: '__config__' is not a valid architecture ({exc})") from None
        dtype_name = decode_json(members, "__dtype__", path)
        if dtype_name not in ("float16", "float32", "float64"):
            raise CheckpointError(f"{path}: '__dtype__' must be float32 or float64, found {dtype_name!r}")
        seed = decode_json(members, "__seed__", path) if "__seed__" in members else 0
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise CheckpointError(f"{path}: '__seed__' must be a non-negative int, found {seed!r}")
        return config, np.dtype(dtype_name), seed

    @staticmethod
    def _model_state(members: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v for k, v in members.items() if not k.startswith("__") and "/" not in k}

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CNN:
        """The model saved at ``path`` by :meth:`save` (or found in a resume checkpoint), in eval mode.

        Raises:
            CheckpointError: (a ``ValueError``) for a missing, foreign, corrupt or truncated file, or arrays
                that do not fit the stored architecture; the message names the file and the problem, e.g.
                ``models/x.npz: not a cnn checkpoint (missing key '__config__')``.
        """
        path = Path(path)
        members = read_npz(path)
        check_format(members, path)
        config, dtype, seed = cls._read_header(members, path)
        state = cls._model_state(members)
        # Check conv/dense weights against the config before allocating anything.
        for part, specs in build_spec(config).items():
            for i, spec in enumerate(specs):
                want = _weight_shape(spec)
                key = f"{part}.{i}.weight"
                if want is not None and key in state and state[key].shape != want:
                    raise CheckpointError(
                        f"{path}: shape mismatch for '{key}': config says {want}, "
                        f"checkpoint has {state[key].shape}"
                    )
        model = cls.from_config(config, dtype=dtype, seed=seed)
        model.load_state_dict(state, source=str(path))
        return model.eval()
