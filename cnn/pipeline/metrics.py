"""Classification metrics on label vectors, in NumPy only.

Conventions (those of scikit-learn, so results can be checked against it):

- labels are integers in ``[0, K)``; ``y_true`` and ``y_pred`` are 1-D integer arrays of length ``N``;
- the confusion matrix ``C`` is ``(K, K)`` int64 with **rows = true class, columns = predicted class**:
  ``C[i, j] = #{n : y_true[n] = i and y_pred[n] = j}``;
- a score whose denominator is zero (a class never predicted, or absent from ``y_true``) is ``0.0``
  (scikit-learn's ``zero_division=0``).

Besides the per-class scores this module compares two models on the same images (:func:`agreement`,
with McNemar's exact test on the images only one of them gets right), and times batched inference
(:func:`timed_inference`), which the evaluate stage uses to report images per second.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cnn.errors import CNNError


def _as_labels(y: np.ndarray | Sequence[int], name: str) -> np.ndarray:
    """``y`` as a 1-D int64 array; raise :class:`CNNError` naming ``name`` if it is not integer labels."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise CNNError(f"{name} must be a 1-D vector of class labels, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(arr == np.round(arr)):
            raise CNNError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _check_pair(y_true: np.ndarray, y_pred: np.ndarray, names: tuple[str, str]) -> None:
    if y_true.shape != y_pred.shape:
        raise CNNError(
            f"{names[0]} and {names[1]} must have the same length, "
            f"got {y_true.shape[0]} and {y_pred.shape[0]}"
        )


def accuracy(y_true: np.ndarray | Sequence[int], y_pred: np.ndarray | Sequence[int]) -> float:
    """Fraction of positions where ``y_pred == y_true``: ``(1/N) Σ_n [y_pred[n] = y_true[n]]``.

    Args:
        y_true, y_pred: ``(N,)`` integer labels, ``N >= 1``.
    """
    t, p = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    _check_pair(t, p, ("y_true", "y_pred"))
    if t.size == 0:
        raise CNNError("accuracy of an empty label vector is undefined (got N = 0)")
    return float(np.mean(t == p))


def confusion_matrix(
    y_true: np.ndarray | Sequence[int], y_pred: np.ndarray | Sequence[int], num_classes: int | None = None
) -> np.ndarray:
    """Confusion matrix ``C`` (rows = true class, columns = predicted class).

    Args:
        y_true, y_pred: ``(N,)`` integer labels in ``[0, num_classes)``.
        num_classes: ``K``; default ``1 + max(label)`` over both vectors.

    Returns:
        ``(K, K)`` int64 with ``C[i, j] = #{n : y_true[n] = i, y_pred[n] = j}``; ``C.sum() == N`` and the
        trace is the number of correct predictions.
    """
    t, p = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    _check_pair(t, p, ("y_true", "y_pred"))
    if num_classes is None:
        num_classes = int(max(t.max(initial=-1), p.max(initial=-1))) + 1
    k = int(num_classes)
    if k < 1:
        raise CNNError(f"num_classes must be >= 1, got {num_classes}")
    for name, arr in (("y_true", t), ("y_pred", p)):
        if arr.size and (arr.min() < 0 or arr.max() >= k):
            raise CNNError(f"{name} labels must lie in [0, {k}), found values in [{arr.min()}, {arr.max()}]")
    # One bincount over the flat index i*K + j is the whole histogram; no Python loop over samples.
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


def normalize_confusion(cm: np.ndarray, over: str = "true") -> np.ndarray:
    """Normalise a confusion matrix to rates.

    Args:
        cm: ``(K, K)`` counts, rows = true class.
        over: ``"true"`` divides each row by its sum (row ``i`` is the distribution of predictions for
            true class ``i``; the diagonal is the recall), ``"pred"`` divides each column by its sum (the
            diagonal is the precision), ``"all"`` divides by ``N``.

    Returns:
        ``(K, K)`` float64; a row (column) with no samples is all zeros.
    """
    c = np.asarray(cm, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise CNNError(f"a confusion matrix must be square (K, K), got shape {c.shape}")
    if over == "true":
        denom = c.sum(axis=1, keepdims=True)
    elif over == "pred":
        denom = c.sum(axis=0, keepdims=True)
    elif over == "all":
        denom = np.full((1, 1), c.sum())
    else:
        raise CNNError(f"over must be one of 'true', 'pred', 'all', got {over!r}")
    return np.divide(c, denom, out=np.zeros_like(c), where=denom > 0)


@dataclass(frozen=True)
class ClassScores:
    """Per-class scores from a confusion matrix; every array has shape ``(K,)``.

    With ``tp_k = C[k, k]``, ``fp_k = Σ_i C[i, k] - tp_k`` and ``fn_k = Σ_j C[k, j] - tp_k``:

    - ``precision_k = tp_k / (tp_k + fp_k)``
    - ``recall_k    = tp_k / (tp_k + fn_k)``
    - ``f1_k        = 2 tp_k / (2 tp_k + fp_k + fn_k)``  (the harmonic mean of the two)
    - ``support_k   = tp_k + fn_k``  (number of true samples of class ``k``)
    """

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray

    def macro(self) -> dict[str, float]:
        """Unweighted mean over classes of precision, recall and F1."""
        return {
            "precision": float(self.precision.mean()),
            "recall": float(self.recall.mean()),
            "f1": float(self.f1.mean()),
        }

    def weighted(self) -> dict[str, float]:
        """Mean over classes weighted by ``support`` (all zeros when there is no sample at all)."""
        total = self.support.sum()
        if total == 0:
            return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
        w = self.support / total
        return {
            "precision": float(w @ self.precision),
            "recall": float(w @ self.recall),
            "f1": float(w @ self.f1),
        }


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = num.astype(np.float64), den.astype(np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def precision_recall_f1(cm: np.ndarray) -> ClassScores:
    """Per-class precision, recall, F1 and support of a ``(K, K)`` confusion matrix.

    See :class:`ClassScores` for the equations; zero denominators give 0.
    """
    c = np.asarray(cm)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise CNNError(f"a confusion matrix must be square (K, K), got shape {c.shape}")
    tp = np.diag(c).astype(np.int64)
    predicted = c.sum(axis=0).astype(np.int64)  # tp + fp
    actual = c.sum(axis=1).astype(np.int64)  # tp + fn
    return ClassScores(
        precision=_safe_ratio(tp, predicted),
        recall=_safe_ratio(tp, actual),
        f1=_safe_ratio(2 * tp, predicted + actual),
        support=actual,
    )


def classification_report(
    y_true: np.ndarray | Sequence[int],
    y_pred: np.ndarray | Sequence[int],
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> dict:
    """Everything about one model's predictions, as a JSON-ready dict of Python scalars.

    Returns:
        ``{"accuracy", "misclassified", "num_samples", "macro": {precision, recall, f1},
        "weighted": {...}, "per_class": {name: {precision, recall, f1, support}},
        "confusion_matrix": [[...], ...]}``; class names default to ``"0" ... "K-1"``.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    k = cm.shape[0]
    names = [str(i) for i in range(k)] if class_names is None else [str(n) for n in class_names]
    if len(names) != k:
        raise CNNError(f"class_names must have {k} entries (one per class), got {len(names)}")
    scores = precision_recall_f1(cm)
    n = int(cm.sum())
    correct = int(np.trace(cm))
    return {
        "accuracy": correct / n if n else 0.0,
        "misclassified": n - correct,
        "num_samples": n,
        "macro": scores.macro(),
        "weighted": scores.weighted(),
        "per_class": {
            name: {
                "precision": float(scores.precision[i]),
                "recall": float(scores.recall[i]),
                "f1": float(scores.f1[i]),
                "support": int(scores.support[i]),
            }
            for i, name in enumerate(names)
        },
        "confusion_matrix": cm.tolist(),
    }


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs.

    ``b`` = images only model A classifies correctly, ``c`` = only model B. Under the null hypothesis
    that both models have the same error rate, ``b ~ Binomial(b + c, 1/2)``, so
    ``p = min(1, 2 · Σ_{i <= min(b, c)} C(b+c, i) / 2^(b+c))``. Computed in exact integer arithmetic,
    so it does not underflow for thousands of discordant pairs. ``b = c = 0`` gives ``1.0``.
    """
    if b < 0 or c < 0:
        raise CNNError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)  # int / int is correctly rounded even for huge ints


@dataclass(frozen=True)
class Agreement:
    """How two models' predictions on the same ``N`` images relate.

    Attributes:
        rate: fraction of images where the two predictions are equal.
        disagree: ``(D,)`` int64 indices ``n`` with ``pred_a[n] != pred_b[n]``, increasing.
        both_correct, only_a_correct, only_b_correct, both_wrong: the 2x2 table of correctness
            (``None`` when no ``y_true`` was given). Both wrong includes both wrong *and equal*.
        mcnemar_p: exact McNemar p-value of ``only_a_correct`` vs ``only_b_correct`` (``None`` without
            ``y_true``); small values mean the accuracy difference is unlikely to be chance.
    """

    rate: float
    disagree: np.ndarray
    both_correct: int | None = None
    only_a_correct: int | None = None
    only_b_correct: int | None = None
    both_wrong: int | None = None
    mcnemar_p: float | None = None

    def to_dict(self, a: str = "a", b: str = "b") -> dict:
        """JSON-ready summary, keys named after the two models (indices left out: see ``disagree``)."""
        out: dict = {"rate": self.rate, "disagreements": int(self.disagree.size)}
        if self.both_correct is not None:
            out.update(
                {
                    "both_correct": self.both_correct,
                    f"only_{a}_correct": self.only_a_correct,
                    f"only_{b}_correct": self.only_b_correct,
                    "both_wrong": self.both_wrong,
                    "mcnemar_p": self.mcnemar_p,
                }
            )
        return out


def agreement(
    pred_a: np.ndarray | Sequence[int],
    pred_b: np.ndarray | Sequence[int],
    y_true: np.ndarray | Sequence[int] | None = None,
) -> Agreement:
    """Compare two prediction vectors of the same ``N`` images (see :class:`Agreement`)."""
    a, b = _as_labels(pred_a, "pred_a"), _as_labels(pred_b, "pred_b")
    _check_pair(a, b, ("pred_a", "pred_b"))
    if a.size == 0:
        raise CNNError("agreement of empty prediction vectors is undefined (got N = 0)")
    differ = a != b
    rate = float(1.0 - differ.mean())
    disagree = np.flatnonzero(differ).astype(np.int64)
    if y_true is None:
        return Agreement(rate=rate, disagree=disagree)
    t = _as_labels(y_true, "y_true")
    _check_pair(a, t, ("pred_a", "y_true"))
    ok_a, ok_b = a == t, b == t
    only_a, only_b = int(np.sum(ok_a & ~ok_b)), int(np.sum(~ok_a & ok_b))
    return Agreement(
        rate=rate,
        disagree=disagree,
        both_correct=int(np.sum(ok_a & ok_b)),
        only_a_correct=only_a,
        only_b_correct=only_b,
        both_wrong=int(np.sum(~ok_a & ~ok_b)),
        mcnemar_p=mcnemar_exact_p(only_a, only_b),
    )


def top_k(proba: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most probable classes of each row, most probable first.

    Args:
        proba: ``(N, K)`` class probabilities (or any scores).
        k: ``1 <= k <= K``.

    Returns:
        ``(classes, values)``, both ``(N, k)``: int64 class indices and their scores. Ties keep the
        lower class index first (stable sort), as ``argmax`` does.
    """
    p = np.asarray(proba)
    if p.ndim != 2:
        raise CNNError(f"proba must be (N, K), got shape {p.shape}")
    if not 1 <= k <= p.shape[1]:
        raise CNNError(f"k must be in [1, {p.shape[1]}] for {p.shape[1]} classes, got {k}")
    classes = np.argsort(-p, axis=1, kind="stable")[:, :k].astype(np.int64)
    return classes, np.take_along_axis(p, classes, axis=1)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise ``softmax(z)_k = exp(z_k - max z) / Σ_j exp(z_j - max z)`` of ``(N, K)`` logits, in float64.

    Float64 so that the probabilities of a confident model keep their small entries (float32 rounds
    ``1 - 1e-9`` to 1) for the top-2 display of the misclassified figure.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise CNNError(f"logits must be (N, K), got shape {z.shape}")
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class TimedInference:
    """Outputs of a batched inference pass and how fast it ran.

    Attributes:
        outputs: the per-batch outputs concatenated along axis 0 (``(N, ...)``).
        seconds: wall-clock time of the timed batches (the warm-up batch excluded).
        images_per_sec: ``timed images / seconds``.
        batch_size: the batch size used.
    """

    outputs: np.ndarray
    seconds: float
    images_per_sec: float
    batch_size: int


def timed_inference(
    fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch_size: int = 1000, warmup: bool = True
) -> TimedInference:
    """Run ``fn`` over ``x`` in batches of ``batch_size`` and time it.

    One pass gives both the outputs (e.g. class probabilities for the metrics) and the throughput, so
    the evaluate stage does not predict twice. With ``warmup`` the first batch is run once untimed
    beforehand (lazy initialisation, allocator and cache warm-up in torch), then every batch is timed.

    Args:
        fn: maps an ``(B, ...)`` batch to ``(B, ...)`` outputs, e.g. ``model.predict_proba``.
        x: ``(N, ...)`` inputs, ``N >= 1``.
        batch_size: images per call (the last batch may be smaller).
    """
    if batch_size < 1:
        raise CNNError(f"batch_size must be >= 1, got {batch_size}")
    n = len(x)
    if n == 0:
        raise CNNError("timed_inference needs at least one input image, got N = 0")
    if warmup:
        fn(x[:batch_size])
    outputs = []
    start = time.perf_counter()
    for i in range(0, n, batch_size):
        outputs.append(np.asarray(fn(x[i : i + batch_size])))
    seconds = time.perf_counter() - start
    return TimedInference(
        outputs=np.concatenate(outputs, axis=0),
        seconds=seconds,
        images_per_sec=n / seconds if seconds > 0 else float("inf"),
        batch_size=batch_size,
    )
