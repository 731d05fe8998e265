"""Optimizers with exactly ``torch.optim``'s update rules: :class:`SGD`, :class:`Adam`, :class:`AdamW`.

An optimizer holds ``(param, grad)`` ndarray pairs (``model.parameters()``) and updates every ``param``
in place from its ``grad`` on each :meth:`Optimizer.step`; the layers overwrite the ``grad`` arrays in
place on every backward, so the pairs stay valid for the whole training. ``grad`` arrays are only read.
The learning rate is the attribute ``opt.lr`` (schedulers set it). There is one parameter group.

Speed: every step gathers all gradients into one flat buffer per dtype, runs each line of the update
rule as one NumPy call over the whole model, and scatters the update back into the parameters (Adam:
each kernel thread gathers, updates and scatters its own block of the flat vector, when the parameters
and gradients are C-contiguous). The
optimizer state (momentum buffer, Adam moments) lives in flat buffers of the parameters' dtype, so the
state of a float32 model is float32. For the default CNN (468,138 float32 parameters in 17 arrays)
``Adam.step`` costs 0.6-0.7 ms on the project's 2-core AMD EPYC machine (``torch.optim.Adam`` on the same
arrays, one thread: 0.9 ms in the same run), ``SGD`` with momentum 0.2 ms; the cost does not grow with
the number of parameter arrays. ``sqrt`` is the single most expensive line (about a quarter).

``state_dict()`` is a flat ``dict[str, ndarray | int | float | bool | str]`` (no nesting, no objects), so a
trainer can store it in an ``.npz`` (prefix the keys) or JSON (arrays as lists) and load it without
pickle; scalars may come back as 0-d arrays. Layout, for parameter ``i`` in ``params`` order::

    optimizer   "SGD" | "Adam" | "AdamW"              (str; loading into another class is an error)
    lr          current learning rate                   (float; restored on load: schedules continue)
    step        number of steps taken                   (int)
    num_params  number of parameter arrays              (int)
    <hyper>     SGD: momentum, dampening, nesterov, weight_decay;
                Adam/AdamW: beta1, beta2, eps, weight_decay, amsgrad
                (must equal this optimizer's values on load: a changed config is an error, not silent)
    state.<i>.momentum_buffer                           SGD with momentum != 0
    state.<i>.exp_avg, state.<i>.exp_avg_sq             Adam/AdamW
    state.<i>.max_exp_avg_sq                            Adam/AdamW with amsgrad

The arrays have parameter ``i``'s shape and are copies (safe to keep while training goes on).
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from cnn.errors import CheckpointError, ConfigError
from cnn.kernels import parallel

ParamPair = tuple[np.ndarray, np.ndarray]
StateDict = dict[str, Any]


def _zeros_now(size: int, dtype: np.dtype) -> np.ndarray:
    """A zero vector whose memory is written here, at construction, in one thread. ``np.zeros`` maps
    large arrays lazily, and the first step's threads would then fault the pages in together (they
    serialise on the process's memory map): for the default CNN's Adam that first step took 8-11 ms
    instead of ~0.6, against ~3 ms for writing the buffers here."""
    out = np.empty(size, dtype)
    out.fill(0)
    return out


class _FlatGroup:
    """The parameters of one dtype, seen as one flat vector ``[p_0.ravel(), p_1.ravel(), ...]``.

    Owns the flat gradient buffer ``grad`` and a scratch buffer ``tmp`` (both ``(size,)``), and makes
    flat state buffers whose per-parameter views have the parameters' shapes.
    """

    def __init__(self, index: list[int], params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        self.index = index  # positions of these parameters in the optimizer's list
        self.params = params
        self.grads = grads
        self.dtype = params[0].dtype
        self.offsets = np.cumsum([0] + [p.size for p in params]).tolist()
        self.size = self.offsets[-1]
        self.grad = _zeros_now(self.size, self.dtype)
        self.tmp = _zeros_now(self.size, self.dtype)
        self.tmp_views = self.views(self.tmp)
        # Flat views of the parameters and gradients when all are C-contiguous: then each thread gathers
        # and scatters its own block of the flat vectors (see Adam), instead of one serial pass each.
        contiguous = all(a.flags.c_contiguous for a in [*params, *grads])
        self.flat_params = [p.reshape(-1) for p in params] if contiguous else None
        self.flat_grads = [g.reshape(-1) for g in grads] if contiguous else None

    def views(self, flat: np.ndarray) -> list[np.ndarray]:
        """``flat`` (``(size,)``) cut into arrays shaped like the parameters (views, not copies)."""
        return [
            flat[a:b].reshape(p.shape) for a, b, p in zip(self.offsets[:-1], self.offsets[1:], self.params)
        ]

    def gather_grads(self) -> np.ndarray:
        """Copy the current gradients into the flat ``grad`` buffer and return it."""
        np.concatenate([g.ravel() for g in self.grads], out=self.grad)
        return self.grad

    def _segments(self, lo: int, hi: int) -> Iterator[tuple[int, int, int]]:
        """``(k, a, b)``: parameter ``k`` holds ``[a, b)`` of the flat block ``[lo, hi)`` at its own
        ``[a - offsets[k], b - offsets[k])``."""
        offsets = self.offsets
        k = bisect.bisect_right(offsets, lo) - 1
        while k < len(self.params) and offsets[k] < hi:
            a, b = max(lo, offsets[k]), min(hi, offsets[k + 1])
            if a < b:
                yield k, a, b
            k += 1

    def gather_block(self, sources: list[np.ndarray], out: np.ndarray, lo: int, hi: int) -> None:
        """Copy ``[lo, hi)`` of the flat vector of ``sources`` (``flat_grads`` or ``flat_params``) into
        ``out[lo:hi]``."""
        for k, a, b in self._segments(lo, hi):
            out[a:b] = sources[k][a - self.offsets[k] : b - self.offsets[k]]

    def subtract_tmp_block(self, lo: int, hi: int) -> None:
        """``param -= tmp`` on the parameters' parts in the flat block ``[lo, hi)``."""
        assert self.flat_params is not None
        for k, a, b in self._segments(lo, hi):
            self.flat_params[k][a - self.offsets[k] : b - self.offsets[k]] -= self.tmp[a:b]

    def gather_params(self, out: np.ndarray) -> np.ndarray:
        np.concatenate([p.ravel() for p in self.params], out=out)
        return out

    def subtract_tmp_from_params(self) -> None:
        """``param -= tmp`` for every parameter: the only write to the parameters."""
        for p, t in zip(self.params, self.tmp_views):
            p -= t


class Optimizer:
    """Base class: validates the ``(param, grad)`` pairs, holds ``lr`` and the step count.

    Subclasses implement ``_init_state`` (allocate flat state buffers) and ``_update`` (one step of one
    flat group) and list their hyperparameters in ``_hyper``.
    """

    _hyper: tuple[str, ...] = ()

    def __init__(self, params: Iterable[ParamPair], lr: float) -> None:
        pairs = list(params)
        if not pairs:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        self.params: list[np.ndarray] = []
        self.grads: list[np.ndarray] = []
        for i, pair in enumerate(pairs):
            try:
                p, g = pair
            except (TypeError, ValueError):
                raise ValueError(
                    f"parameter {i}: expected a (param, grad) pair, found {pair!r:.80}"
                ) from None
            if not isinstance(p, np.ndarray) or not isinstance(g, np.ndarray):
                raise ValueError(
                    f"parameter {i}: param and grad must be ndarrays, found {type(p)}, {type(g)}"
                )
            if not np.issubdtype(p.dtype, np.floating) or p.dtype != g.dtype or p.shape != g.shape:
                raise ValueError(
                    f"parameter {i}: param {p.dtype} {p.shape} and grad {g.dtype} {g.shape} must be "
                    "float arrays of the same shape and dtype"
                )
            if not p.flags.writeable:
                raise ValueError(f"parameter {i} (shape {p.shape}) is read-only")
            self.params.append(p)
            self.grads.append(g)
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError("the same parameter array appears more than once")
        self.lr = lr
        # Set by the first scheduler attached to this optimizer (torch's group["initial_lr"]).
        self.initial_lr: float | None = None
        self.step_count = 0
        by_dtype: dict[np.dtype, list[int]] = {}
        for i, p in enumerate(self.params):
            by_dtype.setdefault(p.dtype, []).append(i)
        self._groups = [
            _FlatGroup(idx, [self.params[i] for i in idx], [self.grads[i] for i in idx])
            for idx in by_dtype.values()
        ]
        # name -> one flat buffer per group; per-parameter views for state_dict.
        self._state: dict[str, list[np.ndarray]] = {}
        self._init_state()

    # -- learning rate ---------------------------------------------------------------------------
    @property
    def lr(self) -> float:
        """The current learning rate (a Python float, so float32 updates stay float32)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        value = float(value)
        if not value >= 0.0:  # also rejects NaN
            raise ConfigError(f"optimizer.lr must be >= 0 ({type(self).__name__}), got {value}")
        self._lr = value

    # -- stepping --------------------------------------------------------------------------------
    def step(self) -> None:
        """Update every parameter in place from its current gradient."""
        self.step_count += 1
        for k, group in enumerate(self._groups):
            self._update(group, {name: bufs[k] for name, bufs in self._state.items()})

    def zero_grad(self) -> None:
        """Set every gradient to zero (not needed with layers that overwrite their gradients)."""
        for g in self.grads:
            g.fill(0)

    def _new_state(self, *names: str) -> None:
        for name in names:
            self._state[name] = [_zeros_now(g.size, g.dtype) for g in self._groups]

    def _init_state(self) -> None:
        raise NotImplementedError

    def _update(self, group: _FlatGroup, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    # -- checkpointing ---------------------------------------------------------------------------
    def _param_state_views(self, name: str) -> list[np.ndarray]:
        """State ``name`` as one array per parameter (views into the flat buffers), in ``params`` order."""
        out: list[np.ndarray] = [None] * len(self.params)  # type: ignore[list-item]
        for group, flat in zip(self._groups, self._state[name]):
            for i, view in zip(group.index, group.views(flat)):
                out[i] = view
        return out

    def state_dict(self) -> StateDict:
        """Plain-data snapshot (flat dict of str -> ndarray/int/float/bool/str); see the module docstring."""
        sd: StateDict = {
            "optimizer": type(self).__name__,
            "lr": self.lr,
            "step": self.step_count,
            "num_params": len(self.params),
        }
        for name in self._hyper:
            sd[name] = getattr(self, name)
        for name in self._state:
            for i, view in enumerate(self._param_state_views(name)):
                sd[f"state.{i}.{name}"] = view.copy()
        return sd

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``lr``, the step count and the buffers from :meth:`state_dict`'s output.

        Raises :class:`~cnn.errors.CheckpointError` naming the key when the state is of another optimizer,
        another set of parameter shapes, or other hyperparameters. Nothing is changed when it raises.
        """
        name = type(self).__name__
        found = str(_scalar(state, "optimizer", name))
        if found != name:
            raise CheckpointError(f"optimizer state is for {found}, but this optimizer is {name}")
        num = int(_scalar(state, "num_params", name))
        if num != len(self.params):
            raise CheckpointError(
                f"{name} state 'num_params': checkpoint has {num} parameter arrays, this optimizer has "
                f"{len(self.params)}"
            )
        for key in self._hyper:
            mine, saved = getattr(self, key), _scalar(state, key, name)
            if type(mine)(saved) != mine:
                raise CheckpointError(
                    f"{name} state '{key}' is {saved!r} in the checkpoint but {mine!r} in this optimizer"
                )
        updates: list[tuple[np.ndarray, np.ndarray]] = []
        for buf in self._state:
            for i, view in enumerate(self._param_state_views(buf)):
                key = f"state.{i}.{buf}"
                if key not in state:
                    raise CheckpointError(f"{name} state has no key '{key}'")
                arr = np.asarray(state[key])
                if arr.shape != view.shape:
                    raise CheckpointError(
                        f"{name} state '{key}' has shape {arr.shape}, "
                        f"but parameter {i} has shape {view.shape}"
                    )
                if not np.issubdtype(arr.dtype, np.floating):
                    raise CheckpointError(f"{name} state '{key}' has dtype {arr.dtype}, expected float")
                updates.append((view, arr))
        lr, step = float(_scalar(state, "lr", name)), int(_scalar(state, "step", name))
        if step < 0 or not lr >= 0:
            raise CheckpointError(f"{name} state has step={step}, lr={lr}: expected step >= 0 and lr >= 0")
        for view, arr in updates:
            view[...] = arr
        self.lr, self.step_count = lr, step

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._hyper)
        return f"{type(self).__name__}(lr={self.lr!r}, {hyper})"


def _scalar(state: Mapping[str, Any], key: str, owner: str) -> Any:
    """``state[key]`` as a Python scalar (a 0-d array from an ``.npz`` becomes its ``.item()``)."""
    if key not in state:
        raise CheckpointError(f"{owner} state has no key '{key}' (found keys: {sorted(state)[:8]}...)")
    value = state[key]
    if isinstance(value, np.ndarray):
        if value.ndim != 0:
            raise CheckpointError(f"{owner} state '{key}' should be a scalar, found shape {value.shape}")
        value = value.item()
    return value


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay (torch.optim.SGD).

    With ``g = grad + weight_decay · param`` (L2: added to the gradient)::

        b = g                                   on the first step (no dampening, as torch)
        b = momentum · b + (1 - dampening) · g  afterwards
        d = g + momentum · b   if nesterov else   b        (d = g when momentum == 0)
        param -= lr · d
    """

    _hyper = ("momentum", "dampening", "nesterov", "weight_decay")

    def __init__(
        self,
        params: Iterable[ParamPair],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        self.momentum = float(momentum)
        self.dampening = float(dampening)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)
        if not self.momentum >= 0.0:
            raise ConfigError(f"optimizer.momentum must be >= 0 (SGD), got {momentum}")
        if not self.weight_decay >= 0.0:
            raise ConfigError(f"optimizer.weight_decay must be >= 0 (SGD), got {weight_decay}")
        if self.nesterov and (self.momentum <= 0.0 or self.dampening != 0.0):
            raise ConfigError(
                f"optimizer.nesterov=true requires momentum > 0 and dampening = 0 (SGD), "
                f"got momentum={momentum}, dampening={dampening}"
            )
        super().__init__(params, lr)

    def _init_state(self) -> None:
        if self.momentum != 0.0:
            self._new_state("momentum_buffer")

    def _update(self, group: _FlatGroup, state: dict[str, np.ndarray]) -> None:
        g = group.gather_grads()
        tmp = group.tmp
        if self.weight_decay != 0.0:
            group.gather_params(tmp)
            tmp *= self.weight_decay
            g += tmp
        d = g
        if self.momentum != 0.0:
            buf = state["momentum_buffer"]
            if self.step_count == 1:
                buf[...] = g
            else:
                buf *= self.momentum
                if self.dampening != 0.0:
                    np.multiply(g, 1.0 - self.dampening, out=tmp)
                    buf += tmp
                else:
                    buf += g
            if self.nesterov:
                np.multiply(buf, self.momentum, out=tmp)
                g += tmp
            else:
                d = buf
        np.multiply(d, self.lr, out=group.tmp)
        group.subtract_tmp_from_params()


class Adam(Optimizer):
    """Adam (torch.optim.Adam), with L2 weight decay added to the gradient and optional AMSGrad.

    At step ``t`` (from 1), with ``g = grad + weight_decay · param``::

        m = m + (1 - β1) · (g - m)                 (torch's lerp)
        v = β2 · v + (1 - β2) · g²
        v̂ = max(v̂, v) if amsgrad else v
        param -= (lr / (1 - β1^t)) · m / (sqrt(v̂) / sqrt(1 - β2^t) + eps)

    eps is added after the bias correction of ``sqrt(v)``, as torch does. ``m``, ``v`` start at zero.
    """

    _hyper = ("beta1", "beta2", "eps", "weight_decay", "amsgrad")
    _decoupled = False

    def __init__(
        self,
        params: Iterable[ParamPair],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        name = type(self).__name__
        if len(betas) != 2:
            raise ConfigError(f"optimizer.betas must be a pair (beta1, beta2) ({name}), got {betas!r}")
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.amsgrad = bool(amsgrad)
        for key, value in (("beta1", self.beta1), ("beta2", self.beta2)):
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"optimizer.betas: {key} must be in [0, 1) ({name}), got {value}")
        if not self.eps >= 0.0:
            raise ConfigError(f"optimizer.eps must be >= 0 ({name}), got {eps}")
        if not self.weight_decay >= 0.0:
            raise ConfigError(f"optimizer.weight_decay must be >= 0 ({name}), got {weight_decay}")
        super().__init__(params, lr)

    @property
    def betas(self) -> tuple[float, float]:
        return (self.beta1, self.beta2)

    def _init_state(self) -> None:
        self._new_state("exp_avg", "exp_avg_sq")
        if self.amsgrad:
            self._new_state("max_exp_avg_sq")

    def _update(self, group: _FlatGroup, state: dict[str, np.ndarray]) -> None:
        lr, beta1, beta2, wd = self.lr, self.beta1, self.beta2, self.weight_decay
        m, v, tmp = state["exp_avg"], state["exp_avg_sq"], group.tmp
        max_v = state.get("max_exp_avg_sq")
        if wd != 0.0 and self._decoupled:
            decay = 1.0 - lr * wd
            for p in group.params:
                p *= decay
        flat_grads, flat_params = group.flat_grads or [], group.flat_params or []
        blockwise = group.flat_params is not None
        g = group.grad if blockwise else group.gather_grads()
        coupled_decay = wd != 0.0 and not self._decoupled
        if coupled_decay and not blockwise:
            group.gather_params(tmp)
        bias_correction1 = 1.0 - beta1**self.step_count
        bias_correction2_sqrt = (1.0 - beta2**self.step_count) ** 0.5
        step_size = lr / bias_correction1
        weight = 1.0 - beta1

        def work(lo: int, hi: int) -> None:
            # Element-wise on one contiguous block of the flat buffers (the blocks run on the kernels'
            # thread pool): the same operations, in the same order, for every element. Blockwise, the
            # thread gathers its block of the gradients (and parameters) and updates its parameters.
            if blockwise:
                group.gather_block(flat_grads, g, lo, hi)
                if coupled_decay:
                    group.gather_block(flat_params, tmp, lo, hi)
            gb, mb, vb, tb = g[lo:hi], m[lo:hi], v[lo:hi], tmp[lo:hi]
            if coupled_decay:  # tmp holds the parameters
                tb *= wd
                gb += tb
            # m.lerp_(g, 1 - beta1), with torch's two formulas for small and large weights.
            np.subtract(gb, mb, out=tb)
            if weight < 0.5:
                tb *= weight
                mb += tb
            else:
                tb *= 1.0 - weight
                np.subtract(gb, tb, out=mb)
            # v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            np.multiply(gb, 1.0 - beta2, out=tb)
            tb *= gb
            vb *= beta2
            vb += tb
            if max_v is not None:  # amsgrad
                vb = np.maximum(max_v[lo:hi], vb, out=max_v[lo:hi])
            if step_size == 0.0:  # lr = 0: the moments advance, the parameters stay
                return
            # step_size · m / (sqrt(v)/bc2 + eps) with step_size folded into the denominator, one pass
            # fewer (torch's own formula on its capturable path; equal to its default within a few ulp).
            np.sqrt(vb, out=tb)
            tb /= bias_correction2_sqrt * step_size
            tb += self.eps / step_size
            np.divide(mb, tb, out=tb)
            if blockwise:
                group.subtract_tmp_block(lo, hi)

        parallel(work, group.size, min_block=1 << 15)
        if step_size != 0.0 and not blockwise:
            group.subtract_tmp_from_params()


class AdamW(Adam):
    """AdamW (torch.optim.AdamW): Adam with decoupled weight decay ``param *= 1 - lr · weight_decay``
    applied before the moment update (instead of adding ``weight_decay · param`` to the gradient)."""

    _decoupled = True

    def __init__(
        self,
        params: Iterable[ParamPair],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)


OPTIMIZERS: dict[str, type[Optimizer]] = {"adam": Adam, "adamw": AdamW, "sgd": SGD}


def _finite_positive(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) and float(x) > 0


#: The values the pipeline's config accepts for each optimizer hyper-parameter: (what is expected, test).
#: The config schema (cnn.pipeline.config) checks these; the classes above check what the maths needs.
OPTIMIZER_RANGES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "lr": ("a number > 0", _finite_positive),
    "weight_decay": ("a number >= 0", lambda v: v >= 0),
    "momentum": ("a number in [0, 1)", lambda v: 0.0 <= v < 1.0),
    "betas": ("two numbers in [0, 1)", lambda v: len(v) == 2 and all(0.0 <= b < 1.0 for b in v)),
    "eps": ("a number > 0", _finite_positive),
}
#: The config keys each optimizer reads besides ``lr`` (the keyword arguments of :func:`make_optimizer`).
OPTIMIZER_KEYS: dict[str, tuple[str, ...]] = {
    "adam": ("betas", "eps", "weight_decay"),
    "adamw": ("betas", "eps", "weight_decay"),
    "sgd": ("momentum", "nesterov", "weight_decay"),
}


def make_optimizer(
    name: str,
    params: Iterable[ParamPair],
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    nesterov: bool = False,
    betas: tuple[float, float] | list[float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> Optimizer:
    """Build an optimizer from the config vocabulary (``optimizer: {name, lr, weight_decay, ...}``).

    ``name``: ``adam`` → :class:`Adam` (``torch.optim.Adam``), ``adamw`` → :class:`AdamW`
    (``torch.optim.AdamW``; ``weight_decay`` is the config's value, default 0.0 here, not torch's 1e-2),
    ``sgd`` → :class:`SGD` (``torch.optim.SGD``, dampening 0). ``momentum``/``nesterov`` are used by sgd
    only, ``betas``/``eps`` by adam and adamw only; the others are ignored.

    Raises :class:`~cnn.errors.ConfigError` naming the key for an unknown name or an invalid value.
    """
    if name not in OPTIMIZERS:
        raise ConfigError(
            f"optimizer.name: unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}"
        )
    if not float(lr) > 0.0:
        raise ConfigError(f"optimizer.lr must be > 0, got {lr}")
    if name == "sgd":
        return SGD(params, lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    if len(betas) != 2:
        raise ConfigError(f"optimizer.betas must be a pair (beta1, beta2), got {betas!r}")
    return OPTIMIZERS[name](params, lr, betas=(betas[0], betas[1]), eps=eps, weight_decay=weight_decay)  # type: ignore[call-arg]
