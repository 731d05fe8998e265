"""Losses: values and gradients equal torch.nn.functional's, pass float64 gradient checks, stay finite."""

from __future__ import annotations

import numpy as np
import pytest

from cnn.gradcheck import numerical_gradient, rel_error
from cnn.losses import CrossEntropyLoss, MSELoss

torch = pytest.importorskip("torch")
F = torch.nn.functional

SHAPES = [(1, 2), (4, 3), (7, 10), (32, 10)]
SMOOTHING = [0.0, 0.1, 0.5, 1.0]


def _logits_and_labels(rng, n: int, c: int, scale: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    return rng.standard_normal((n, c)) * scale, rng.integers(0, c, size=n)


def _torch_cross_entropy(logits: np.ndarray, labels: np.ndarray, eps: float) -> tuple[float, np.ndarray]:
    z = torch.tensor(logits, requires_grad=True)
    loss = F.cross_entropy(z, torch.tensor(labels), label_smoothing=eps)
    loss.backward()
    return loss.item(), z.grad.numpy()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("eps", SMOOTHING)
def test_cross_entropy_value_and_gradient_equal_torch_in_float64(rng, shape, eps):
    logits, labels = _logits_and_labels(rng, *shape)
    loss_fn = CrossEntropyLoss(label_smoothing=eps)
    loss = loss_fn.forward(logits, labels)
    grad = loss_fn.backward()
    ref_loss, ref_grad = _torch_cross_entropy(logits, labels, eps)
    assert isinstance(loss, float)
    assert loss == pytest.approx(ref_loss, rel=1e-13, abs=1e-15)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("shape", [(1, 2), (3, 5), (6, 4)])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_cross_entropy_gradient_passes_numerical_check(rng, shape, eps):
    # unit-scale logits: no probability so small that the difference quotient's rounding dominates it
    logits, labels = _logits_and_labels(rng, *shape, scale=1.0)
    loss_fn = CrossEntropyLoss(label_smoothing=eps)
    loss_fn.forward(logits, labels)
    analytic = loss_fn.backward()
    numeric = numerical_gradient(lambda: loss_fn.forward(logits, labels), logits)
    assert rel_error(analytic, numeric) < 1e-7


def test_cross_entropy_is_finite_and_exact_for_logits_of_plus_minus_1e3():
    logits = np.array([[1e3, -1e3, 0.0], [-1e3, 1e3, 0.0], [1e3, 1e3, -1e3], [-1e3, -1e3, -1e3]])
    labels = np.array([1, 1, 2, 0])
    for eps in (0.0, 0.1):
        for dtype in (np.float64, np.float32):
            loss_fn = CrossEntropyLoss(eps)
            loss = loss_fn.forward(logits.astype(dtype), labels)
            grad = loss_fn.backward()
            assert np.isfinite(loss) and np.all(np.isfinite(grad))
            ref_loss, ref_grad = _torch_cross_entropy(logits, labels, eps)
            assert loss == pytest.approx(ref_loss, rel=1e-6)
            np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)


def test_cross_entropy_keeps_float32_and_matches_torch_float32(rng):
    logits, labels = _logits_and_labels(rng, 32, 10)
    logits = logits.astype(np.float32)
    loss_fn = CrossEntropyLoss(0.1)
    loss = loss_fn.forward(logits, labels)
    grad = loss_fn.backward()
    assert grad.dtype == np.float32 and loss_fn.probs.dtype == np.float32
    z = torch.tensor(logits, requires_grad=True)
    ref = F.cross_entropy(z, torch.tensor(labels), label_smoothing=0.1)
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-6)
    np.testing.assert_allclose(grad, z.grad.numpy(), rtol=1e-5, atol=1e-8)


def test_probs_after_forward_are_the_softmax_of_the_logits(rng):
    logits, labels = _logits_and_labels(rng, 5, 7)
    loss_fn = CrossEntropyLoss()
    loss_fn.forward(logits, labels)
    np.testing.assert_allclose(loss_fn.probs, F.softmax(torch.tensor(logits), dim=1).numpy(), rtol=1e-13)
    np.testing.assert_array_equal(loss_fn.probs.argmax(1), logits.argmax(1))


def test_backward_does_not_change_the_probabilities(rng):
    logits, labels = _logits_and_labels(rng, 4, 3)
    loss_fn = CrossEntropyLoss(0.3)
    loss_fn.forward(logits, labels)
    probs = loss_fn.probs.copy()
    np.testing.assert_array_equal(loss_fn.backward(), loss_fn.backward())
    np.testing.assert_array_equal(loss_fn.probs, probs)


def test_cross_entropy_accepts_any_integer_label_dtype(rng):
    logits, labels = _logits_and_labels(rng, 6, 4)
    values = {CrossEntropyLoss().forward(logits, labels.astype(dt)) for dt in (np.int64, np.int32, np.uint8)}
    assert len(values) == 1


@pytest.mark.parametrize(
    ("logits_shape", "labels", "message"),
    [
        (
            (4, 3),
            np.array([0, 1, 3, 2]),
            r"label 3 is out of range for logits of shape \(4, 3\) \(expected 0 <= label < 3\)",
        ),
        ((4, 3), np.array([0, -1, 2, 2]), r"label -1 is out of range"),
        (
            (4, 3),
            np.array([0, 1, 2]),
            r"labels of shape \(4,\) for logits of shape \(4, 3\), found labels of shape \(3,\)",
        ),
        ((4, 3), np.zeros((4, 1), np.int64), r"found labels of shape \(4, 1\)"),
        ((12,), np.zeros(12, np.int64), r"float logits of shape \(N, C\), found float64 \(12,\)"),
        ((4, 3), np.zeros(4), r"integer class labels, found dtype float64"),
        ((0, 3), np.zeros(0, np.int64), r"empty batch: logits of shape \(0, 3\)"),
    ],
)
def test_cross_entropy_rejects_bad_inputs_with_value_error_naming_the_shapes(logits_shape, labels, message):
    with pytest.raises(ValueError, match=message):
        CrossEntropyLoss().forward(np.zeros(logits_shape), labels)


def test_label_smoothing_outside_0_1_and_backward_before_forward_are_errors():
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\], got 1.5"):
        CrossEntropyLoss(1.5)
    with pytest.raises(RuntimeError, match=r"backward\(\) called before forward\(\)"):
        CrossEntropyLoss().backward()
    with pytest.raises(RuntimeError, match=r"backward\(\) called before forward\(\)"):
        MSELoss().backward()


@pytest.mark.parametrize("shape", [(1,), (5, 3), (2, 3, 4)])
def test_mse_value_and_gradient_equal_torch_and_numerical_check(rng, shape):
    pred, target = rng.standard_normal(shape), rng.standard_normal(shape)
    loss_fn = MSELoss()
    loss = loss_fn.forward(pred, target)
    grad = loss_fn.backward()
    p = torch.tensor(pred, requires_grad=True)
    ref = F.mse_loss(p, torch.tensor(target))
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-14)
    np.testing.assert_allclose(grad, p.grad.numpy(), rtol=1e-14)
    numeric = numerical_gradient(lambda: loss_fn.forward(pred, target), pred)
    assert rel_error(grad, numeric) < 1e-7


def test_mse_keeps_float32_and_rejects_mismatched_shapes():
    loss_fn = MSELoss()
    loss_fn.forward(np.ones((2, 3), np.float32), np.zeros((2, 3)))
    assert loss_fn.backward().dtype == np.float32
    with pytest.raises(ValueError, match=r"target of the same shape as pred \(2, 3\), found \(3, 2\)"):
        loss_fn.forward(np.ones((2, 3)), np.ones((3, 2)))
