"""Fully connected layer: ``y = x @ W^T + b`` and its gradients, split over the threads.

Loop version: :func:`cnn.kernels.reference.linear`.
"""

from __future__ import annotations

import numpy as np

from cnn.kernels.threads import _min_block, parallel


def linear_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """``y = x @ weight^T + bias``: x (N, in), weight (out, in), bias (out,) -> y (N, out).

    Output features are split over the threads (each computes ``x @ weight[block]^T``)."""
    y = np.empty((x.shape[0], weight.shape[0]), dtype=x.dtype)

    def work(lo: int, hi: int) -> None:
        np.matmul(x, weight[lo:hi].T, out=y[:, lo:hi])
        if bias is not None:
            y[:, lo:hi] += bias[lo:hi]

    parallel(work, weight.shape[0], min_block=max(16, _min_block(x.size)))
    return y


def linear_backward(
    grad_out: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    grad_weight: np.ndarray,
    grad_bias: np.ndarray | None,
) -> np.ndarray:
    """Gradients of :func:`linear_forward`: ``dW = dy^T @ x`` and ``db = sum_n dy`` (written in place,
    output features split over the threads), and returns ``dx = dy @ W`` (samples split)."""

    def weight_work(lo: int, hi: int) -> None:
        np.matmul(grad_out[:, lo:hi].T, x, out=grad_weight[lo:hi])
        if grad_bias is not None:
            grad_bias[lo:hi] = grad_out[:, lo:hi].sum(axis=0)

    parallel(weight_work, weight.shape[0], min_block=max(16, _min_block(x.size)))
    dx = np.empty_like(x)

    def input_work(lo: int, hi: int) -> None:
        np.matmul(grad_out[lo:hi], weight, out=dx[lo:hi])

    parallel(input_work, x.shape[0], min_block=max(8, _min_block(weight.size)))
    return dx
