"""Batch normalization over every axis but the channel axis 1, in training and eval mode.

``y = gamma * (x - mu) / sqrt(var + eps) + beta``, per channel, on the (C, N*H*W) channel rows (one
contiguous row per channel). Whole channels are split over the threads, so the statistics do not
depend on the thread count. Loop version: :func:`cnn.kernels.reference.batchnorm_train` (and
:func:`cnn.kernels.reference.batchnorm_eval`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnn.kernels.memory import (
    _channel_rows,
    _from_channel_rows,
    _relu_into,
    _row_dots,
    _row_sums,
    empty,
)
from cnn.kernels.threads import _min_block, parallel


def batchnorm_forward_train(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float,
    cache: dict[str, Any],
    relu: bool = False,
    overwrite_input: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training-mode batch norm over every axis but 1: ``y = gamma * (x - mu) / sqrt(var + eps) + beta``.

    ``mu`` and the biased ``var`` are per channel over N (and H, W), computed in two passes (the mean,
    then the mean of squared deviations: no cancellation in float32). Returns ``(y, mu, var)``, the
    statistics as float64. ``cache`` keeps the centred input ``x - mu`` and ``1/sqrt(var + eps)`` for
    :func:`batchnorm_backward_train`. Whole channels are split over the threads, so the statistics do
    not depend on the thread count.

    ``relu=True`` fuses a following ReLU: ``y = max(bn(x), 0)`` while each channel block is still in
    cache (one pass and one thread-pool dispatch fewer than :func:`relu_forward` after it); ``y`` is then
    kept too, as the mask of the fused backward.

    ``overwrite_input=True``: ``x`` is the caller's to give away (a previous layer's fresh output that
    nothing else holds), and the centred values are written over it in channel-major memory instead
    of into a buffer of their own: the same results, one activation of memory traffic fewer (a write to
    memory that was just read instead of to a cold buffer; measured in ``docs/library.md``).
    """
    rows = _channel_rows(x)  # (C, m), m = N*H*W values per channel
    c, m = rows.shape
    # The centred input is internal state (kept for backward), so its buffer is reused across calls.
    kept = cache.get("centred")
    if overwrite_input and np.may_share_memory(rows, x):  # x's own memory is channel-major
        centred = rows
    elif (
        kept is not None
        and kept.shape == rows.shape
        and kept.dtype == rows.dtype
        and not np.may_share_memory(kept, rows)
    ):
        centred = kept
    else:
        centred = empty(rows.shape, rows.dtype)
    y = empty(rows.shape, rows.dtype)
    mean, var = np.empty(c), np.empty(c)

    def work(lo: int, hi: int) -> None:
        xc = centred[lo:hi]
        mean[lo:hi] = _row_sums(rows[lo:hi]) / m
        np.subtract(rows[lo:hi], mean[lo:hi, None].astype(x.dtype), out=xc)
        var[lo:hi] = _row_dots(xc, xc) / m
        scale = gamma[lo:hi] / np.sqrt(var[lo:hi] + eps)
        np.multiply(xc, scale[:, None].astype(x.dtype), out=y[lo:hi])
        y[lo:hi] += beta[lo:hi, None]
        if relu:
            _relu_into(y[lo:hi], y[lo:hi])

    parallel(work, c, min_block=_min_block(m))
    cache.update(
        centred=centred, inv_std=1.0 / np.sqrt(var + eps), shape=x.shape, relu_out=y if relu else None
    )
    return _from_channel_rows(y, x.shape), mean, var


def batchnorm_backward_train(
    grad_out: np.ndarray,
    gamma: np.ndarray,
    cache: dict[str, Any],
    grad_gamma: np.ndarray,
    grad_beta: np.ndarray,
    overwrite_grad: bool = False,
    relu_applied: bool = False,
) -> np.ndarray:
    """Closed-form backward of training-mode batch norm (m values per channel, x_hat = centred * inv_std)::

        dbeta = sum(dy),  dgamma = sum(dy * x_hat),
        dx = gamma * inv_std / m * (m * dy - dbeta - x_hat * dgamma)

    evaluated as ``dx = a * dy + b * centred + c`` with per-channel ``a = gamma * inv_std``,
    ``b = -a * inv_std * dgamma / m`` and ``c = -a * dbeta / m``. After a forward with ``relu=True``,
    ``grad_out`` is the gradient of the ReLU's output and ``dy = grad_out * [y > 0]`` is formed first,
    in the same pass.

    ``overwrite_grad=True``: ``grad_out`` is the caller's to give away (a following layer's fresh input
    gradient), and dx is computed in its memory, in place (channel-major memory; else a new array).
    ``relu_applied=True``: after a forward with ``relu=True``, ``grad_out`` already holds the gradient
    through the ReLU (``dy * [y > 0]``; a max-pool after it can route it so, see
    :func:`cnn.kernels.pool.maxpool2d_backward`), and the mask is not applied again.
    """
    centred, inv_std, relu_out = cache["centred"], cache["inv_std"], cache.get("relu_out")
    dy = _channel_rows(grad_out)  # (C, m)
    c, m = dy.shape
    in_place = overwrite_grad and np.may_share_memory(dy, grad_out)
    dx = dy if in_place else empty(dy.shape, dy.dtype)
    dtype = dx.dtype

    def work(lo: int, hi: int) -> None:
        g, xc, inv, out = dy[lo:hi], centred[lo:hi], inv_std[lo:hi], dx[lo:hi]
        if relu_out is not None and not relu_applied:  # dx's block holds the masked dy for now
            g = np.multiply(g, relu_out[lo:hi] > 0, out=out)
        dbeta = _row_sums(g)
        dgamma = _row_dots(g, xc) * inv
        grad_beta[lo:hi], grad_gamma[lo:hi] = dbeta, dgamma
        a = gamma[lo:hi] * inv
        b = (-a * inv * dgamma / m).astype(dtype)[:, None]
        shift = (-a * dbeta / m).astype(dtype)[:, None]
        if relu_out is None:
            ga = g * a.astype(dtype)[:, None]  # before out (which may be g's memory) is written
            np.multiply(xc, b, out=out)
            out += shift
            out += ga
        else:  # g holds the masked dy (out's memory, or with relu_applied grad_out's)
            np.multiply(g, a.astype(dtype)[:, None], out=out)
            out += shift
            out += xc * b

    parallel(work, c, min_block=_min_block(m))
    return _from_channel_rows(dx, cache["shape"])


def batchnorm_forward_eval(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    eps: float,
    cache: dict[str, Any],
) -> np.ndarray:
    """Eval-mode batch norm, an affine map per channel:
    ``y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta``."""
    rows = _channel_rows(x)
    inv_std = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
    centred = rows - running_mean[:, None]
    cache.update(centred=centred, inv_std=inv_std, shape=x.shape, relu_out=None)
    y = centred * (gamma * inv_std).astype(x.dtype)[:, None] + beta[:, None]
    return _from_channel_rows(y, x.shape)


def batchnorm_backward_eval(
    grad_out: np.ndarray,
    gamma: np.ndarray,
    cache: dict[str, Any],
    grad_gamma: np.ndarray,
    grad_beta: np.ndarray,
) -> np.ndarray:
    """Backward of :func:`batchnorm_forward_eval` (constant statistics): ``dx = gamma * inv_std * dy``,
    ``dgamma = sum(dy * x_hat)``, ``dbeta = sum(dy)``."""
    centred, inv_std = cache["centred"], cache["inv_std"]
    dy = _channel_rows(grad_out)
    grad_beta[...] = dy.sum(axis=1)
    grad_gamma[...] = _row_dots(dy, centred) * inv_std
    return _from_channel_rows(dy * (gamma * inv_std).astype(dy.dtype)[:, None], cache["shape"])
