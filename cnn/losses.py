"""Loss functions: ``forward(pred, target) -> float`` and ``backward() -> dpred``, mean reduction as torch.

Both losses are small stateful objects: ``forward`` keeps what ``backward`` needs, ``backward`` returns
the gradient of the (mean) loss with respect to ``pred``, in ``pred``'s dtype (float32 stays float32).

- :class:`CrossEntropyLoss` ≡ ``torch.nn.CrossEntropyLoss(label_smoothing=ε)`` on logits ``(N, C)`` and
  integer class labels ``(N,)`` (no class weights, no ``ignore_index``).
- :class:`MSELoss` ≡ ``torch.nn.MSELoss()`` (``reduction='mean'``) on equal shapes.
"""

from __future__ import annotations

import numpy as np


class Loss:
    """Protocol of every loss: ``loss = L.forward(pred, target)``; ``dpred = L.backward()``."""

    def forward(self, pred: np.ndarray, target: np.ndarray) -> float:
        raise NotImplementedError

    def backward(self) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> float:
        return self.forward(pred, target)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class CrossEntropyLoss(Loss):
    """Softmax + negative log-likelihood fused into one numerically stable pass, with label smoothing.

    Shapes: ``pred`` logits ``(N, C)``, any float dtype; ``target`` integer class ids ``(N,)`` in
    ``[0, C)``. With ``ε = label_smoothing`` the target distribution of sample ``i`` is
    ``q_i = (1 - ε) · onehot(y_i) + ε / C`` (torch's definition), and::

        log p_ic = z_ic - m_i - log Σ_k exp(z_ik - m_i),      m_i = max_k z_ik   (log-sum-exp)
        loss     = -(1/N) Σ_i Σ_c q_ic · log p_ic
                 = (1/N) Σ_i [ lse_i - (1 - ε) · s_i,y_i - (ε / C) · Σ_c s_ic ]
                   with s = z - m, lse_i = log Σ_k exp s_ik
        dloss/dz = (softmax(z) - q) / N

    Subtracting the row maximum keeps every ``exp`` in ``(0, 1]``, so logits of ±1e3 (or any finite
    size) give a finite loss and gradient.

    After ``forward``, :attr:`probs` holds ``softmax(pred)`` ``(N, C)`` in ``pred``'s dtype: a trainer that
    wants probabilities (or ``probs.argmax(1)`` for accuracy; ``pred.argmax(1)`` is the same) reads them
    instead of recomputing the softmax. The array is replaced, not overwritten, by the next ``forward``.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        label_smoothing = float(label_smoothing)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self.probs: np.ndarray | None = None
        self._target: np.ndarray | None = None

    def forward(self, pred: np.ndarray, target: np.ndarray) -> float:
        """Mean cross-entropy of logits ``pred (N, C)`` against class ids ``target (N,)``; a Python float."""
        pred = np.asarray(pred)
        target = np.asarray(target)
        self._check(pred, target)
        n, c = pred.shape
        eps = self.label_smoothing

        shifted = pred - pred.max(axis=1, keepdims=True)  # s = z - m <= 0
        probs = np.exp(shifted)
        sum_exp = probs.sum(axis=1, keepdims=True)  # in [1, C]: the log is always finite
        lse = np.log(sum_exp)
        probs /= sum_exp

        # Per-sample loss lse_i - (1 - ε) s_iy - (ε/C) Σ_c s_ic, reduced in float64 for a stable mean.
        picked = shifted[np.arange(n), target]
        per_sample = lse[:, 0].astype(np.float64) - (1.0 - eps) * picked.astype(np.float64)
        if eps:
            per_sample -= (eps / c) * shifted.sum(axis=1, dtype=np.float64)
        self.probs = probs
        self._target = target
        return float(per_sample.mean())

    def backward(self) -> np.ndarray:
        """``d loss / d pred = (softmax(pred) - q) / N``, shape ``(N, C)``, ``pred``'s dtype."""
        if self.probs is None or self._target is None:
            raise RuntimeError("CrossEntropyLoss.backward() called before forward()")
        n, c = self.probs.shape
        eps = self.label_smoothing
        grad = self.probs - eps / c if eps else self.probs.copy()
        grad[np.arange(n), self._target] -= 1.0 - eps
        grad *= 1.0 / n
        return grad

    @staticmethod
    def _check(pred: np.ndarray, target: np.ndarray) -> None:
        if pred.ndim != 2 or not np.issubdtype(pred.dtype, np.floating):
            raise ValueError(
                f"CrossEntropyLoss expects float logits of shape (N, C), found {pred.dtype} {pred.shape}"
            )
        n, c = pred.shape
        if n == 0 or c == 0:
            raise ValueError(f"CrossEntropyLoss got an empty batch: logits of shape {pred.shape}")
        if target.shape != (n,):
            raise ValueError(
                f"CrossEntropyLoss expects class labels of shape ({n},) for logits of shape {pred.shape}, "
                f"found labels of shape {target.shape}"
            )
        if not np.issubdtype(target.dtype, np.integer):
            raise ValueError(f"CrossEntropyLoss expects integer class labels, found dtype {target.dtype}")
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= c:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"CrossEntropyLoss: label {bad} is out of range for logits of shape {pred.shape} "
                f"(expected 0 <= label < {c})"
            )

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}" if self.label_smoothing else ""


class MSELoss(Loss):
    """Mean squared error ``loss = (1/M) Σ (pred - target)²`` over all ``M = pred.size`` elements.

    ``pred`` and ``target`` must have the same shape (torch would broadcast with a warning; here a
    mismatch is an error). ``dloss/dpred = 2 (pred - target) / M`` in ``pred``'s dtype.
    """

    def __init__(self) -> None:
        self._diff: np.ndarray | None = None

    def forward(self, pred: np.ndarray, target: np.ndarray) -> float:
        """Mean of the squared differences; a Python float."""
        pred = np.asarray(pred)
        target = np.asarray(target)
        if not np.issubdtype(pred.dtype, np.floating):
            raise ValueError(f"MSELoss expects float predictions, found dtype {pred.dtype}")
        if pred.shape != target.shape:
            raise ValueError(
                f"MSELoss expects target of the same shape as pred {pred.shape}, found {target.shape}"
            )
        if pred.size == 0:
            raise ValueError(f"MSELoss got empty arrays of shape {pred.shape}")
        diff = pred - target.astype(pred.dtype, copy=False)
        self._diff = diff
        return float(np.mean(np.square(diff), dtype=np.float64))

    def backward(self) -> np.ndarray:
        """``d loss / d pred = 2 (pred - target) / M``, same shape and dtype as ``pred``."""
        if self._diff is None:
            raise RuntimeError("MSELoss.backward() called before forward()")
        return self._diff * (2.0 / self._diff.size)
