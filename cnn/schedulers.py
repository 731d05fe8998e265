"""Learning-rate schedulers that produce exactly ``torch.optim.lr_scheduler``'s sequences.

A scheduler sets ``optimizer.lr``. Call ``step()`` once at the end of every epoch (after the epoch's
optimizer steps); :class:`ReduceLROnPlateau` takes the monitored metric, ``step(metric)``. Every class
has ``needs_metric`` so a trainer can write ``sched.step(val_loss) if sched.needs_metric else sched.step()``.
The learning rate used during epoch ``e`` (0-based) is the one set after construction and ``e`` steps.

Each class repeats torch's recursive ("chainable") formula in the same floating-point order, so the
sequences are equal to the last bit, not only close (the tests step both side by side).

=================  ==========================================================================
this module        torch.optim.lr_scheduler
=================  ==========================================================================
StepLR             StepLR(opt, step_size, gamma=0.1)
ExponentialLR      ExponentialLR(opt, gamma)
CosineAnnealingLR  CosineAnnealingLR(opt, T_max, eta_min=0.0)
LinearLR           LinearLR(opt, start_factor=1/3, end_factor=1.0, total_iters=5)
SequentialLR       SequentialLR(opt, schedulers, milestones)
ReduceLROnPlateau  ReduceLROnPlateau(opt, mode, factor, patience, threshold, threshold_mode,
                   cooldown, min_lr, eps)
LinearWarmup       w = warmup_epochs, ``warm = LinearLR(opt, start_factor=1/(w+1), end_factor=1.0,
                   total_iters=w)``; with ``after=None``: ``warm`` alone (ramp, then constant); with
                   an epoch scheduler ``main``: ``SequentialLR(opt, [warm, main], milestones=[w])``;
                   with ``ReduceLROnPlateau`` (torch has no class, SequentialLR refuses it): at the end
                   of epoch e, ``warm.step() if e < w else plateau.step(metric)``
=================  ==========================================================================

The warm-up ramps the rate through ``lr·1/(w+1), lr·2/(w+1), ..., lr·w/(w+1)`` in epochs ``0..w-1``;
the main schedule starts at its own epoch 0 (full ``lr``) in epoch ``w``, so ``T_max``/``step_size``
count epochs after the warm-up.

:func:`make_scheduler` maps the config vocabulary (``scheduler: {name, step_size, gamma, T_max, eta_min,
factor, patience, mode, warmup_epochs}``) to these classes; the torch twin builds the torch column::

    name         warmup_epochs == 0                                  warmup_epochs = w > 0
    none         None                                                LinearLR(opt, 1/(w+1), 1.0, w)
    step         StepLR(opt, step_size, gamma)                       SequentialLR(opt, [LinearLR(opt,
    exponential  ExponentialLR(opt, gamma)                             1/(w+1), 1.0, w), <main>],
    cosine       CosineAnnealingLR(opt, T_max, eta_min)                milestones=[w])
    plateau      ReduceLROnPlateau(opt, mode=mode, factor=factor,    LinearLR(opt, 1/(w+1), 1.0, w)
                   patience=patience)  (other args: torch defaults)    for w epochs, then the plateau

Defaults where the config leaves a key null: gamma 0.1 (step; required for exponential), eta_min 0.0,
factor 0.1, patience 10, mode 'min'; step_size (step) and T_max (cosine) are required.

State: ``state_dict()`` is a flat dict of str -> int/float/bool/str (``best`` of the plateau may be
±inf: JSON writes it as ``Infinity``); a wrapper prefixes its parts' keys (``LinearWarmup``: ``warmup.``,
``after.``; ``SequentialLR``: ``0.``, ``1.``, ...).
``load_state_dict`` restores the position (``last_epoch``, ``base_lr``, the last rate, plateau counters)
and sets ``optimizer.lr`` to the restored rate; hyperparameters in the state must equal this scheduler's
(a changed config is a :class:`~cnn.errors.CheckpointError`, not a silent switch). Resume: build the
optimizer and scheduler from the config, then load both states (any order).
"""

from __future__ import annotations

import math
import numbers
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeGuard

from cnn.errors import CheckpointError, ConfigError
from cnn.optimizers import Optimizer

StateDict = dict[str, Any]


def _plain(value: Any) -> Any:
    """A Python scalar from a 0-d array (states come back from ``.npz`` files as 0-d arrays)."""
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value


class _Stateful:
    """Flat plain-data ``state_dict`` for the schedulers.

    ``_position``: attributes that change while training (restored on load, cast to their current
    type); ``_hyper``: settings that must be equal on load; ``_parts()``: sub-schedulers, stored under
    ``<prefix>.<key>``.
    """

    optimizer: Optimizer
    last_lr: float
    _position: tuple[str, ...] = ()
    _hyper: tuple[str, ...] = ()

    def _hyper_values(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._hyper}

    def _parts(self) -> dict[str, _Stateful]:
        return {}

    def state_dict(self) -> StateDict:
        """Flat dict of str -> int/float/str: kind, position, settings, and the parts' keys prefixed."""
        sd: StateDict = {"scheduler": type(self).__name__}
        sd.update({k: getattr(self, k) for k in self._position})
        sd.update(self._hyper_values())
        for prefix, part in self._parts().items():
            sd.update({f"{prefix}.{k}": v for k, v in part.state_dict().items()})
        return sd

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the position from :meth:`state_dict`'s output and set ``optimizer.lr`` to the last rate.

        Raises :class:`~cnn.errors.CheckpointError` (changing nothing) when the state is of another
        scheduler, lacks a key, or has other settings.
        """
        self._validate(state, "")
        self._assign(state)
        self.optimizer.lr = self.last_lr

    def _validate(self, state: Mapping[str, Any], where: str) -> None:
        name = type(self).__name__
        found = _plain(state.get("scheduler"))
        if found != name:
            raise CheckpointError(f"scheduler state{where} is for {found}, but this scheduler is {name}")
        for key in (*self._position, *self._hyper):
            if key not in state:
                raise CheckpointError(f"{name} state{where} has no key '{key}'")
        for key, mine in self._hyper_values().items():
            saved = _plain(state[key])
            if saved != mine:
                raise CheckpointError(
                    f"{name} state{where} '{key}' is {saved!r} in the checkpoint but {mine!r} here"
                )
        for prefix, part in self._parts().items():
            part._validate(_sub_state(state, prefix), f"{where} '{prefix}.'")

    def _assign(self, state: Mapping[str, Any]) -> None:
        for key in self._position:
            setattr(self, key, type(getattr(self, key))(_plain(state[key])))
        for prefix, part in self._parts().items():
            part._assign(_sub_state(state, prefix))

    def get_last_lr(self) -> float:
        """The rate set by the last step (torch returns a one-element list; this returns the float)."""
        return self.last_lr


def _sub_state(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}


class LRScheduler(_Stateful):
    """Base of the epoch schedulers (torch's ``LRScheduler``, one parameter group).

    ``base_lr`` is the optimizer's rate when the first scheduler was attached (torch's
    ``initial_lr``); construction performs the initial step (epoch 0), which may change ``opt.lr``.
    """

    needs_metric = False
    _position = ("last_epoch", "base_lr", "last_lr")

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__} needs a cnn.optimizers.Optimizer, got {type(optimizer)}")
        self.optimizer = optimizer
        if optimizer.initial_lr is None:
            optimizer.initial_lr = optimizer.lr
        self.base_lr: float = optimizer.initial_lr
        self.last_epoch = -1
        self.last_lr = optimizer.lr
        self._is_initial = False
        self._initial_step()

    def _initial_step(self) -> None:
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def step(self) -> None:
        """Advance one epoch and set ``optimizer.lr``."""
        self._update_lr(None)

    def _update_lr(self, epoch: int | None) -> None:
        if epoch is None:
            self.last_epoch += 1
            lr = self.get_lr()
        else:  # torch's step(epoch): jump to ``epoch`` through the closed form
            self.last_epoch = epoch
            lr = self._closed_form_lr()
        self.optimizer.lr = lr
        self.last_lr = self.optimizer.lr

    def get_lr(self) -> float:
        """The rate for ``last_epoch`` from the current rate (torch's recursive formula)."""
        raise NotImplementedError

    def _closed_form_lr(self) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._hyper)
        return f"{type(self).__name__}({hyper}, last_epoch={self.last_epoch})"


class StepLR(LRScheduler):
    """``lr = base_lr · gamma^(epoch // step_size)`` (torch.optim.lr_scheduler.StepLR)."""

    _hyper = ("step_size", "gamma")

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = int(step_size)
        self.gamma = float(gamma)
        if self.step_size < 1:
            raise ConfigError(f"scheduler.step_size must be >= 1, got {step_size}")
        super().__init__(optimizer)

    def get_lr(self) -> float:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self.optimizer.lr
        return self.optimizer.lr * self.gamma

    def _closed_form_lr(self) -> float:
        return self.base_lr * self.gamma ** (self.last_epoch // self.step_size)


class ExponentialLR(LRScheduler):
    """``lr = base_lr · gamma^epoch`` (torch.optim.lr_scheduler.ExponentialLR)."""

    _hyper = ("gamma",)

    def __init__(self, optimizer: Optimizer, gamma: float) -> None:
        self.gamma = float(gamma)
        super().__init__(optimizer)

    def get_lr(self) -> float:
        if self._is_initial:
            return self.optimizer.lr
        return self.optimizer.lr * self.gamma

    def _closed_form_lr(self) -> float:
        return self.base_lr * self.gamma**self.last_epoch


class CosineAnnealingLR(LRScheduler):
    """``lr = eta_min + (base_lr - eta_min) · (1 + cos(π · epoch / T_max)) / 2`` (torch's
    CosineAnnealingLR, no restarts: after ``T_max`` the rate climbs back, as torch's recursion does)."""

    _hyper = ("T_max", "eta_min")

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        self.T_max = int(T_max)
        self.eta_min = float(eta_min)
        if self.T_max < 1:
            raise ConfigError(f"scheduler.T_max must be >= 1, got {T_max}")
        super().__init__(optimizer)

    def get_lr(self) -> float:
        lr, base, eta, t_max, e = self.optimizer.lr, self.base_lr, self.eta_min, self.T_max, self.last_epoch
        if self._is_initial:
            return lr
        if (e - 1 - t_max) % (2 * t_max) == 0:
            return lr + (base - eta) * (1 - math.cos(math.pi / t_max)) / 2
        return (1 + math.cos(math.pi * e / t_max)) / (1 + math.cos(math.pi * (e - 1) / t_max)) * (
            lr - eta
        ) + eta

    def _closed_form_lr(self) -> float:
        return (
            self.eta_min
            + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
        )


class LinearLR(LRScheduler):
    """Factor moving linearly from ``start_factor`` to ``end_factor`` over ``total_iters`` epochs, then
    constant: ``lr = base_lr · (s + (e - s) · min(epoch, total_iters) / total_iters)`` (torch's LinearLR)."""

    _hyper = ("start_factor", "end_factor", "total_iters")

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
    ) -> None:
        self.start_factor = float(start_factor)
        self.end_factor = float(end_factor)
        self.total_iters = int(total_iters)
        if not 0.0 < self.start_factor <= 1.0:
            raise ConfigError(f"LinearLR start_factor must be in (0, 1], got {start_factor}")
        if not 0.0 <= self.end_factor <= 1.0:
            raise ConfigError(f"LinearLR end_factor must be in [0, 1], got {end_factor}")
        if self.total_iters < 1:
            raise ConfigError(f"LinearLR total_iters must be >= 1, got {total_iters}")
        super().__init__(optimizer)

    def get_lr(self) -> float:
        lr, s, e, n = self.optimizer.lr, self.start_factor, self.end_factor, self.total_iters
        if self.last_epoch == 0:
            return lr * s
        if self._is_initial or self.last_epoch > n:
            return lr
        return lr * (1.0 + (e - s) / (n * s + (self.last_epoch - 1) * (e - s)))

    def _closed_form_lr(self) -> float:
        s, e, n = self.start_factor, self.end_factor, self.total_iters
        return self.base_lr * (s + (e - s) * min(n, self.last_epoch) / n)


class SequentialLR(_Stateful):
    """Runs ``schedulers[i]`` from epoch ``milestones[i-1]`` on (torch.optim.lr_scheduler.SequentialLR).

    At a milestone the next scheduler restarts at its own epoch 0 (its closed form at 0, i.e. ``base_lr``
    for the classes here). Construction resets ``opt.lr`` to ``base_lr`` and re-runs the first scheduler's
    initial step, as torch does. ReduceLROnPlateau cannot be chained (use :class:`LinearWarmup`).
    """

    needs_metric = False
    _position = ("last_epoch", "last_lr")

    def __init__(
        self, optimizer: Optimizer, schedulers: Sequence[LRScheduler], milestones: Sequence[int]
    ) -> None:
        if not schedulers:
            raise ValueError("SequentialLR needs at least one scheduler")
        for i, s in enumerate(schedulers):
            if not isinstance(s, LRScheduler):
                raise ValueError(
                    f"SequentialLR: scheduler {i} is a {type(s).__name__}, not an epoch LRScheduler"
                )
            if s.optimizer is not optimizer:
                raise ValueError(
                    f"SequentialLR: scheduler {i} ({type(s).__name__}) belongs to another optimizer"
                )
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                f"SequentialLR needs one milestone fewer than schedulers: {len(schedulers)} schedulers, "
                f"{len(milestones)} milestones"
            )
        self.optimizer = optimizer
        self.schedulers = list(schedulers)
        self.milestones = [int(m) for m in milestones]
        self.last_epoch = 0
        assert optimizer.initial_lr is not None  # set by the schedulers' constructors
        optimizer.lr = optimizer.initial_lr
        for s in self.schedulers:  # "undo" the initial step each one performed
            s.last_epoch -= 1
        first = self.schedulers[bisect_right(self.milestones, 0)]
        first._initial_step()
        self.last_lr = first.last_lr

    def step(self) -> None:
        """Advance one epoch: the active scheduler steps, or restarts at 0 on its milestone."""
        self.last_epoch += 1
        idx = bisect_right(self.milestones, self.last_epoch)
        scheduler = self.schedulers[idx]
        if idx > 0 and self.milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self.last_lr = scheduler.last_lr

    def _hyper_values(self) -> dict[str, Any]:
        return {"milestones": ",".join(map(str, self.milestones))}

    def _parts(self) -> dict[str, _Stateful]:
        return {str(i): s for i, s in enumerate(self.schedulers)}


class ReduceLROnPlateau(_Stateful):
    """Multiply the rate by ``factor`` when the metric has not improved for more than ``patience`` epochs
    (torch.optim.lr_scheduler.ReduceLROnPlateau). ``step(metric)`` once per epoch.

    Improvement (mode 'min', threshold_mode 'rel'): ``metric < best · (1 - threshold)``; 'abs':
    ``metric < best - threshold``; mode 'max' mirrors it. After a reduction, ``cooldown`` epochs are not
    counted as bad. The rate never goes below ``min_lr``, and a reduction smaller than ``eps`` is skipped.
    Construction does not change ``opt.lr``.
    """

    needs_metric = True
    _position = ("last_epoch", "best", "num_bad_epochs", "cooldown_counter", "last_lr")
    _hyper = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr", "eps")

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"ReduceLROnPlateau needs a cnn.optimizers.Optimizer, got {type(optimizer)}")
        if mode not in ("min", "max"):
            raise ConfigError(f"scheduler.mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ConfigError(
                f"ReduceLROnPlateau threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}"
            )
        if not 0.0 < float(factor) < 1.0:
            raise ConfigError(f"scheduler.factor must be in (0, 1), got {factor}")
        if int(patience) < 0:
            raise ConfigError(f"scheduler.patience must be >= 0, got {patience}")
        self.optimizer = optimizer
        self.mode, self.threshold_mode = mode, threshold_mode
        self.factor, self.threshold = float(factor), float(threshold)
        self.patience, self.cooldown = int(patience), int(cooldown)
        self.min_lr, self.eps = float(min_lr), float(eps)
        self.last_epoch = 0
        self.last_lr = optimizer.lr
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def is_better(self, current: float, best: float) -> bool:
        if self.mode == "min" and self.threshold_mode == "rel":
            return current < best * (1.0 - self.threshold)
        if self.mode == "min":
            return current < best - self.threshold
        if self.threshold_mode == "rel":
            return current > best * (self.threshold + 1.0)
        return current > best + self.threshold

    def step(self, metric: float) -> None:
        """Record this epoch's ``metric`` (e.g. validation loss) and reduce ``opt.lr`` on a plateau."""
        current = float(metric)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in cooldown do not count
        if self.num_bad_epochs > self.patience:
            old_lr = self.optimizer.lr
            new_lr = max(old_lr * self.factor, self.min_lr)
            if old_lr - new_lr > self.eps:
                self.optimizer.lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self.last_lr = self.optimizer.lr

    def __repr__(self) -> str:
        return f"ReduceLROnPlateau(mode={self.mode!r}, factor={self.factor}, patience={self.patience})"


Scheduler = LRScheduler | SequentialLR | ReduceLROnPlateau


class LinearWarmup(_Stateful):
    """Linear warm-up over ``warmup_epochs`` epochs, then ``after`` (or a constant rate if None).

    Epochs ``0..w-1`` use ``lr · (e+1)/(w+1)`` (a :class:`LinearLR` with ``start_factor=1/(w+1)``,
    ``total_iters=w``); from epoch ``w`` on, ``after`` runs from its own epoch 0. For an epoch scheduler
    this is exactly ``SequentialLR([LinearLR(...), after], milestones=[w])``; for
    :class:`ReduceLROnPlateau` the metric passed during the warm-up is ignored and the plateau starts
    counting at epoch ``w``. ``step(metric)`` needs the metric only when ``after`` does.
    """

    _position = ("last_epoch", "last_lr")

    def __init__(self, optimizer: Optimizer, warmup_epochs: int, after: Scheduler | None = None) -> None:
        self.warmup_epochs = int(warmup_epochs)
        if self.warmup_epochs < 1:
            raise ConfigError(f"scheduler.warmup_epochs must be >= 1 for a warm-up, got {warmup_epochs}")
        self.optimizer = optimizer
        self.warmup = LinearLR(optimizer, 1.0 / (self.warmup_epochs + 1), 1.0, self.warmup_epochs)
        self.after = after
        self.needs_metric = bool(after is not None and after.needs_metric)
        if after is not None and not isinstance(after, (LRScheduler, ReduceLROnPlateau)):
            raise ValueError(
                f"LinearWarmup: 'after' must be an LRScheduler or ReduceLROnPlateau, got {after!r}"
            )
        self._seq: SequentialLR | None = None
        if isinstance(after, LRScheduler):
            self._seq = SequentialLR(optimizer, [self.warmup, after], [self.warmup_epochs])
        self.last_epoch = 0  # steps taken (epochs finished)
        self.last_lr = optimizer.lr

    def step(self, metric: float | None = None) -> None:
        """End of an epoch: advance the warm-up, or the scheduler after it (with ``metric`` for a plateau)."""
        if self._seq is not None:
            self._seq.step()
        elif isinstance(self.after, ReduceLROnPlateau) and self.last_epoch >= self.warmup_epochs:
            if metric is None:
                raise ValueError("LinearWarmup into ReduceLROnPlateau: step(metric) needs the metric")
            self.after.step(metric)
        else:
            self.warmup.step()
        self.last_epoch += 1
        self.last_lr = self.optimizer.lr

    def _hyper_values(self) -> dict[str, Any]:
        after = type(self.after).__name__ if self.after is not None else "none"
        return {"warmup_epochs": self.warmup_epochs, "after": after}

    def _parts(self) -> dict[str, _Stateful]:
        return {"warmup": self.warmup} if self.after is None else {"warmup": self.warmup, "after": self.after}

    def _assign(self, state: Mapping[str, Any]) -> None:
        super()._assign(state)
        if self._seq is not None:  # it counts the same epochs
            self._seq.last_epoch, self._seq.last_lr = self.last_epoch, self.last_lr


#: The config keys each scheduler reads (every one also reads ``warmup_epochs``), the keyword arguments of
#: :func:`make_scheduler`; the names are the registry of schedulers the config, the pipeline and the
#: torch twin (:func:`cnn.torch_train.make_torch_scheduler`, built from this factory's result) accept.
SCHEDULER_KEYS: dict[str, tuple[str, ...]] = {
    "none": (),
    "step": ("step_size", "gamma"),
    "exponential": ("gamma",),
    "cosine": ("T_max", "eta_min"),
    "plateau": ("mode", "factor", "patience"),
}
SCHEDULERS = tuple(SCHEDULER_KEYS)
#: The values the pipeline's config accepts for each scheduler hyper-parameter: (what is expected, test).
#: The config schema (cnn.pipeline.config) checks these (and the keys that depend on other settings:
#: warmup_epochs < train.epochs, eta_min < optimizer.lr); :func:`make_scheduler` checks what the maths needs.
SCHEDULER_RANGES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "step_size": ("an integer >= 1 (epochs)", lambda v: v >= 1),
    "gamma": ("a number in (0, 1]", lambda v: 0.0 < v <= 1.0),
    "T_max": ("an integer >= 1 (epochs) or null for train.epochs", lambda v: v is None or v >= 1),
    "factor": ("a number in (0, 1)", lambda v: 0.0 < v < 1.0),
    "patience": ("an integer >= 0 (epochs)", lambda v: v >= 0),
}
_KWARGS = ("step_size", "gamma", "T_max", "eta_min", "factor", "patience", "mode", "warmup_epochs")


def make_scheduler(name: str, optimizer: Optimizer, **kwargs: Any) -> Scheduler | LinearWarmup | None:
    """Build the scheduler named by the config (see the module docstring's table for torch's twin).

    ``kwargs`` are the config keys ``step_size, gamma, T_max, eta_min, factor, patience, mode,
    warmup_epochs``; each scheduler reads its own and ignores the others, and ``None`` means "default".
    Returns ``None`` for ``name='none'`` without warm-up. Raises :class:`~cnn.errors.ConfigError` for an
    unknown name or key, a missing required key, or an invalid value.
    """
    unknown = sorted(set(kwargs) - set(_KWARGS))
    if unknown:
        raise ConfigError(
            f"scheduler: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(_KWARGS)}"
        )
    if name not in SCHEDULERS:
        raise ConfigError(
            f"scheduler.name: unknown scheduler {name!r}; expected one of {', '.join(SCHEDULERS)}"
        )
    kw = {k: v for k, v in kwargs.items() if v is not None}
    warmup = _int(kw.pop("warmup_epochs", 0), "warmup_epochs", 0)

    def required(key: str) -> Any:
        if key not in kw:
            raise ConfigError(f"scheduler.{key} is required for scheduler {name!r}")
        return kw[key]

    # Check every value before building anything: construction already changes ``optimizer.lr``.
    if name == "step":
        step_size, gamma = (
            _int(required("step_size"), "step_size", 1),
            _positive(kw.get("gamma", 0.1), "gamma"),
        )
    elif name == "exponential":
        gamma = _positive(required("gamma"), "gamma")
    elif name == "cosine":
        t_max, eta_min = _int(required("T_max"), "T_max", 1), _float(kw.get("eta_min", 0.0), "eta_min", 0.0)
    elif name == "plateau":
        mode, patience = kw.get("mode", "min"), _int(kw.get("patience", 10), "patience", 0)
        factor = _float(kw.get("factor", 0.1), "factor", 0.0)
        if mode not in ("min", "max") or not factor < 1.0:
            raise ConfigError(
                f"scheduler: plateau needs mode 'min' or 'max' and factor < 1, got {mode!r}, {factor}"
            )

    main: Scheduler | None = None
    if name == "step":
        main = StepLR(optimizer, step_size, gamma)
    elif name == "exponential":
        main = ExponentialLR(optimizer, gamma)
    elif name == "cosine":
        main = CosineAnnealingLR(optimizer, t_max, eta_min)
    elif name == "plateau":
        main = ReduceLROnPlateau(optimizer, mode=mode, factor=factor, patience=patience)
    if warmup == 0:
        return main
    return LinearWarmup(optimizer, warmup, main)


def _is_real(value: Any) -> TypeGuard[float]:
    """A real number that is not a bool (``True`` is an ``int`` to Python, never a count or a rate here)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _int(value: Any, key: str, minimum: int) -> int:
    if not _is_real(value) or int(value) != value or value < minimum:
        raise ConfigError(f"scheduler.{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _float(value: Any, key: str, minimum: float) -> float:
    if not _is_real(value) or not value >= minimum:
        raise ConfigError(f"scheduler.{key} must be a number >= {minimum}, got {value!r}")
    return float(value)


def _positive(value: Any, key: str) -> float:
    if not _is_real(value) or not value > 0:
        raise ConfigError(f"scheduler.{key} must be a number > 0, got {value!r}")
    return float(value)
