"""cnn.pipeline.metrics: confusion matrix, per-class scores, agreement of two models, timed inference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnn.errors import CNNError
from cnn.pipeline.metrics import (
    accuracy,
    agreement,
    classification_report,
    confusion_matrix,
    mcnemar_exact_p,
    normalize_confusion,
    precision_recall_f1,
    softmax,
    timed_inference,
    top_k,
)

# A hand-made case, worked out on paper:
#   true 0 -> predicted 0, 0, 1      row [2, 1, 0]
#   true 1 -> predicted 1, 1, 1, 2   row [0, 3, 1]
#   true 2 -> predicted 2, 0, 0      row [2, 0, 1]
Y_TRUE = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 1, 1, 1, 2, 2, 0, 0])
CM = np.array([[2, 1, 0], [0, 3, 1], [2, 0, 1]])


def test_confusion_matrix_rows_are_true_classes_and_columns_predictions():
    cm = confusion_matrix(Y_TRUE, Y_PRED, num_classes=3)
    np.testing.assert_array_equal(cm, CM)
    assert cm.dtype == np.int64
    assert cm.sum() == Y_TRUE.size and np.trace(cm) == 6


def test_confusion_matrix_infers_k_from_labels_and_pads_to_num_classes():
    assert confusion_matrix(Y_TRUE, Y_PRED).shape == (3, 3)
    cm = confusion_matrix(Y_TRUE, Y_PRED, num_classes=5)
    assert cm.shape == (5, 5) and cm[3:].sum() == 0 and cm[:, 3:].sum() == 0


def test_per_class_scores_match_the_hand_computed_values():
    s = precision_recall_f1(CM)
    np.testing.assert_allclose(s.precision, [2 / 4, 3 / 4, 1 / 2])
    np.testing.assert_allclose(s.recall, [2 / 3, 3 / 4, 1 / 3])
    np.testing.assert_allclose(s.f1, [4 / 7, 6 / 8, 2 / 5])
    np.testing.assert_array_equal(s.support, [3, 4, 3])
    # F1 is the harmonic mean of precision and recall.
    np.testing.assert_allclose(s.f1, 2 * s.precision * s.recall / (s.precision + s.recall))
    assert s.macro()["f1"] == pytest.approx((4 / 7 + 6 / 8 + 2 / 5) / 3)
    assert s.weighted()["recall"] == pytest.approx(accuracy(Y_TRUE, Y_PRED))  # weighted recall == accuracy


def test_a_class_never_seen_nor_predicted_scores_zero_not_nan():
    s = precision_recall_f1(confusion_matrix(Y_TRUE, Y_PRED, num_classes=4))
    assert s.precision[3] == s.recall[3] == s.f1[3] == 0.0 and s.support[3] == 0
    assert np.all(np.isfinite(s.f1))


def test_accuracy_is_the_fraction_of_equal_labels():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(0.6)
    assert accuracy([1, 2], [1, 2]) == 1.0


def test_normalize_confusion_rows_sum_to_one_and_diagonal_is_recall():
    rows = normalize_confusion(CM, over="true")
    np.testing.assert_allclose(rows.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.diag(rows), precision_recall_f1(CM).recall)
    np.testing.assert_allclose(
        np.diag(normalize_confusion(CM, over="pred")), precision_recall_f1(CM).precision
    )
    assert normalize_confusion(CM, over="all").sum() == pytest.approx(1.0)
    empty_row = normalize_confusion(np.array([[1, 0], [0, 0]]))
    np.testing.assert_array_equal(empty_row[1], [0.0, 0.0])


def test_classification_report_is_json_ready_and_named_by_class():
    import json

    rep = classification_report(Y_TRUE, Y_PRED, class_names=["a", "b", "c"])
    json.dumps(rep)  # only Python scalars and lists
    assert rep["accuracy"] == pytest.approx(0.6) and rep["misclassified"] == 4 and rep["num_samples"] == 10
    assert rep["per_class"]["b"] == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    assert rep["confusion_matrix"] == CM.tolist()


def test_metrics_agree_with_scikit_learn_on_random_labels(rng):
    sk = pytest.importorskip("sklearn.metrics")
    y_true = rng.integers(0, 10, size=500)
    y_pred = np.where(rng.random(500) < 0.7, y_true, rng.integers(0, 10, size=500))
    y_pred[y_pred == 9] = 8  # class 9 is never predicted: precision's zero-division case
    cm = confusion_matrix(y_true, y_pred, num_classes=10)
    np.testing.assert_array_equal(cm, sk.confusion_matrix(y_true, y_pred, labels=range(10)))
    p, r, f, s = sk.precision_recall_fscore_support(y_true, y_pred, labels=range(10), zero_division=0)
    ours = precision_recall_f1(cm)
    np.testing.assert_allclose(ours.precision, p)
    np.testing.assert_allclose(ours.recall, r)
    np.testing.assert_allclose(ours.f1, f)
    np.testing.assert_array_equal(ours.support, s)
    assert accuracy(y_true, y_pred) == pytest.approx(sk.accuracy_score(y_true, y_pred))
    macro = sk.f1_score(y_true, y_pred, average="macro", labels=range(10), zero_division=0)
    assert ours.macro()["f1"] == pytest.approx(macro)
    weighted = sk.f1_score(y_true, y_pred, average="weighted", labels=range(10), zero_division=0)
    assert ours.weighted()["f1"] == pytest.approx(weighted)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "match"),
    [
        ([0, 1, 2], [0, 1], "same length"),
        ([[0, 1]], [[0, 1]], "1-D"),
        ([0.5, 1.0], [0, 1], "integer"),
        ([0, 3], [0, 1], r"\[0, 3\)"),
        ([0, -1], [0, 1], r"\[0, 3\)"),
    ],
)
def test_bad_label_vectors_raise_one_clear_error(y_true, y_pred, match):
    with pytest.raises(CNNError, match=match):
        confusion_matrix(y_true, y_pred, num_classes=3)


def test_agreement_counts_disagreements_and_the_correctness_table():
    y = np.array([0, 1, 2, 3, 4, 5])
    a = np.array([0, 1, 2, 3, 0, 0])  # wrong on 4, 5
    b = np.array([0, 1, 9, 3, 4, 1])  # wrong on 2, 5 (and differs from a there)
    ag = agreement(a, b, y)
    np.testing.assert_array_equal(ag.disagree, [2, 4, 5])
    assert ag.rate == pytest.approx(3 / 6)
    assert (ag.both_correct, ag.only_a_correct, ag.only_b_correct, ag.both_wrong) == (3, 1, 1, 1)
    assert ag.mcnemar_p == 1.0  # one each way: no evidence either model is better
    d = ag.to_dict("numpy", "torch")
    assert d["only_numpy_correct"] == 1 and d["only_torch_correct"] == 1 and d["disagreements"] == 3


def test_agreement_without_labels_gives_only_rate_and_indices():
    ag = agreement([1, 2, 3], [1, 2, 4])
    assert ag.rate == pytest.approx(2 / 3) and ag.disagree.tolist() == [2] and ag.mcnemar_p is None
    assert set(ag.to_dict()) == {"rate", "disagreements"}


def test_mcnemar_exact_p_is_the_two_sided_binomial_tail():
    # b=0, c=5: p = 2 * (1/2)^5
    assert mcnemar_exact_p(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact_p(5, 0) == mcnemar_exact_p(0, 5)
    assert mcnemar_exact_p(3, 4) == 1.0
    assert mcnemar_exact_p(0, 0) == 1.0
    # Thousands of pairs: no underflow to 0 or overflow to nan.
    p = mcnemar_exact_p(1000, 1200)
    assert 0.0 < p < 1e-3 and math.isfinite(p)


def test_top_k_orders_classes_by_probability():
    proba = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    classes, values = top_k(proba, 2)
    np.testing.assert_array_equal(classes, [[1, 2], [0, 2]])
    np.testing.assert_allclose(values, [[0.6, 0.3], [0.5, 0.3]])
    with pytest.raises(CNNError, match="k must be"):
        top_k(proba, 4)


def test_softmax_rows_are_probabilities_and_stable_for_huge_logits():
    p = softmax(np.array([[0.0, 0.0], [1000.0, 0.0], [1.0, 2.0]]))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[0], [0.5, 0.5])
    np.testing.assert_allclose(p[1], [1.0, 0.0])  # no overflow to nan
    np.testing.assert_allclose(p[2], np.exp([1.0, 2.0]) / np.exp([1.0, 2.0]).sum())


def test_timed_inference_concatenates_batches_and_reports_throughput():
    calls = []

    def fn(x):
        calls.append(len(x))
        return x * 2

    x = np.arange(25, dtype=np.float64).reshape(25, 1)
    res = timed_inference(fn, x, batch_size=10)
    np.testing.assert_array_equal(res.outputs, x * 2)
    assert calls == [10, 10, 10, 5]  # one untimed warm-up batch, then 3 timed batches
    assert res.images_per_sec > 0 and res.seconds >= 0 and res.batch_size == 10
