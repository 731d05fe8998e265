"""Specification of the activations: exact gradients, equality with torch, dtype and overflow behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from cnn.activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from cnn.gradcheck import numerical_gradient_array, rel_error

torch = pytest.importorskip("torch")

ACTIVATIONS = [
    (ReLU, lambda: torch.nn.ReLU()),
    (lambda: LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2)),
    (Sigmoid, lambda: torch.nn.Sigmoid()),
    (Tanh, lambda: torch.nn.Tanh()),
    (Softmax, lambda: torch.nn.Softmax(dim=1)),
    (lambda: Softmax(axis=-1), lambda: torch.nn.Softmax(dim=-1)),
]
SHAPES = [(3, 5), (2, 3, 4, 5)]


def away_from_kinks(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Normal values with |x| >= 0.01, so a finite-difference step never crosses the kink at 0."""
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 0.01, 0.5, x)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("ours", "_"), ACTIVATIONS)
def test_activation_gradient_matches_central_differences(rng, ours, _, shape):
    layer = ours()
    x = away_from_kinks(rng, shape)
    dout = rng.standard_normal(shape)
    layer.forward(x)
    analytic = layer.backward(dout)
    numeric = numerical_gradient_array(lambda: layer.forward(x), x, dout, h=1e-5)
    assert rel_error(analytic, numeric) < 1e-6


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("ours", "theirs"), ACTIVATIONS)
def test_activation_equals_torch_forward_and_gradient(rng, ours, theirs, shape):
    x = rng.standard_normal(shape)
    x.flat[0] = 0.0  # the kink: torch's convention for the gradient at 0 must hold too
    layer, ref = ours(), theirs()
    xt = torch.tensor(x, requires_grad=True)
    y, yt = layer.forward(x), ref(xt)
    dout = rng.standard_normal(shape)
    yt.backward(torch.tensor(dout))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(layer.backward(dout), xt.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("ours", "_"), ACTIVATIONS)
def test_activation_keeps_float32(rng, ours, _):
    layer = ours()
    x = rng.standard_normal((4, 6)).astype(np.float32)
    assert layer.forward(x).dtype == np.float32
    assert layer.backward(np.ones_like(x)).dtype == np.float32


def test_sigmoid_and_softmax_are_finite_for_huge_inputs():
    x = np.array([[-1000.0, 0.0, 1000.0]])
    np.testing.assert_array_equal(Sigmoid().forward(x), [[0.0, 0.5, 1.0]])
    np.testing.assert_allclose(Softmax().forward(x), [[0.0, 0.0, 1.0]])


def test_softmax_rows_sum_to_one_along_its_axis(rng):
    y = Softmax(axis=1).forward(rng.standard_normal((3, 7, 2)))
    np.testing.assert_allclose(y.sum(axis=1), 1.0)
