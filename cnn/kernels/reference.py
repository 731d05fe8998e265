"""The readable reference: every fast kernel of :mod:`cnn.kernels` as plain loops over its equation.

Read these to learn what a layer computes; the fast kernels compute the same thing, and
``tests/test_kernels.py`` checks every one of them against its loop version here. Each function is a
direct transcription of its equation with explicit Python loops over output positions, in float64
where it accumulates; nothing here is clever, so a disagreement points at the fast kernel. Slow: use
them on small arrays only.

=============================  ==========================================================================
reference                      fast kernel(s)
=============================  ==========================================================================
:func:`im2col`, :func:`col2im` ``kernels.im2col``, ``kernels.col2im``
:func:`conv2d`                 ``kernels.conv2d_forward``; with :func:`batchnorm_eval`, :func:`relu` and
                               :func:`maxpool2d` after it, ``kernels.conv2d_forward_eval``
:func:`conv2d_backward`        ``kernels.conv2d_backward``
:func:`maxpool2d`              ``kernels.maxpool2d_forward`` / ``maxpool2d_backward``
:func:`avgpool2d`              ``kernels.avgpool2d_forward`` / ``avgpool2d_backward``
:func:`batchnorm_train`        ``kernels.batchnorm_forward_train`` / ``batchnorm_backward_train``
:func:`batchnorm_eval`         ``kernels.batchnorm_forward_eval`` / ``batchnorm_backward_eval``
:func:`linear`                 ``kernels.linear_forward`` / ``linear_backward``
:func:`relu`                   ``kernels.relu_forward`` / ``relu_backward``
:func:`dropout_mask`           ``kernels.dropout_mask``
=============================  ==========================================================================
"""

from __future__ import annotations

import numpy as np


def pad(x: np.ndarray, ph: int, pw: int, value: float = 0.0) -> np.ndarray:
    """``x`` (N, C, H, W) with ``ph`` rows and ``pw`` columns of ``value`` added on each side."""
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def out_size(size: int, k: int, s: int, p: int) -> int:
    """Number of positions of a window of ``k`` with stride ``s`` over ``size`` padded by ``p``."""
    return (size + 2 * p - k) // s + 1


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: tuple, padding: tuple) -> np.ndarray:
    """y[n, o, r, q] = b[o] + sum_{c,i,j} w[o, c, i, j] * xpad[n, c, r*sh + i, q*sw + j]."""
    n, _, h, wd = x.shape
    o, _, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = out_size(h, kh, sh, ph), out_size(wd, kw, sw, pw)
    xp = pad(x, ph, pw)
    y = np.zeros((n, o, oh, ow), dtype=np.float64)
    for s in range(n):
        for f in range(o):
            for r in range(oh):
                for q in range(ow):
                    patch = xp[s, :, r * sh : r * sh + kh, q * sw : q * sw + kw]
                    y[s, f, r, q] = np.sum(patch * w[f]) + (0.0 if b is None else b[f])
    return y


def conv2d_backward(
    x: np.ndarray, w: np.ndarray, dy: np.ndarray, stride: tuple, padding: tuple
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dw, db) of :func:`conv2d` by scattering every output's gradient over its window."""
    n, _, h, wd = x.shape
    o, _, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, padding
    xp = pad(x, ph, pw)
    dxp = np.zeros_like(xp, dtype=np.float64)
    dw = np.zeros_like(w, dtype=np.float64)
    for s in range(n):
        for f in range(o):
            for r in range(dy.shape[2]):
                for q in range(dy.shape[3]):
                    g = dy[s, f, r, q]
                    dxp[s, :, r * sh : r * sh + kh, q * sw : q * sw + kw] += g * w[f]
                    dw[f] += g * xp[s, :, r * sh : r * sh + kh, q * sw : q * sw + kw]
    return dxp[:, :, ph : ph + h, pw : pw + wd], dw, dy.sum(axis=(0, 2, 3))


def im2col(x: np.ndarray, kernel: tuple, stride: tuple, padding: tuple) -> np.ndarray:
    """cols[(c*kh + i)*kw + j, (n*OH + r)*OW + q] = xpad[n, c, r*sh + i, q*sw + j]."""
    n, c, h, wd = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh, ow = out_size(h, kh, sh, ph), out_size(wd, kw, sw, pw)
    xp = pad(x, ph, pw)
    cols = np.zeros((c * kh * kw, n * oh * ow), dtype=x.dtype)
    for s in range(n):
        for ch in range(c):
            for i in range(kh):
                for j in range(kw):
                    for r in range(oh):
                        for q in range(ow):
                            cols[(ch * kh + i) * kw + j, (s * oh + r) * ow + q] = xp[
                                s, ch, r * sh + i, q * sw + j
                            ]
    return cols


def col2im(cols: np.ndarray, x_shape: tuple, kernel: tuple, stride: tuple, padding: tuple) -> np.ndarray:
    """The adjoint of :func:`im2col`: every column entry added back onto its source pixel."""
    n, c, h, wd = x_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh, ow = out_size(h, kh, sh, ph), out_size(wd, kw, sw, pw)
    dxp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=cols.dtype)
    for s in range(n):
        for ch in range(c):
            for i in range(kh):
                for j in range(kw):
                    for r in range(oh):
                        for q in range(ow):
                            dxp[s, ch, r * sh + i, q * sw + j] += cols[
                                (ch * kh + i) * kw + j, (s * oh + r) * ow + q
                            ]
    return dxp[:, :, ph : ph + h, pw : pw + wd]


def maxpool2d(x: np.ndarray, kernel: tuple, stride: tuple, padding: tuple, dy: np.ndarray | None = None):
    """(y, dx): window maxima with -inf padding; dx routes dy to the first maximum of each window."""
    n, c, h, wd = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh, ow = out_size(h, kh, sh, ph), out_size(wd, kw, sw, pw)
    xp = pad(x, ph, pw, -np.inf)
    y = np.zeros((n, c, oh, ow), dtype=x.dtype)
    dxp = np.zeros_like(xp)
    for s in range(n):
        for ch in range(c):
            for r in range(oh):
                for q in range(ow):
                    win = xp[s, ch, r * sh : r * sh + kh, q * sw : q * sw + kw]
                    i, j = np.unravel_index(np.argmax(win), win.shape)  # first maximum, row-major
                    y[s, ch, r, q] = win[i, j]
                    if dy is not None:
                        dxp[s, ch, r * sh + i, q * sw + j] += dy[s, ch, r, q]
    return y, dxp[:, :, ph : ph + h, pw : pw + wd]


def avgpool2d(x: np.ndarray, kernel: tuple, stride: tuple, padding: tuple, dy: np.ndarray | None = None):
    """(y, dx): window means of the zero-padded input, divisor kh*kw (padding counted)."""
    n, c, h, wd = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh, ow = out_size(h, kh, sh, ph), out_size(wd, kw, sw, pw)
    xp = pad(x, ph, pw)
    y = np.zeros((n, c, oh, ow), dtype=x.dtype)
    dxp = np.zeros_like(xp)
    for s in range(n):
        for ch in range(c):
            for r in range(oh):
                for q in range(ow):
                    y[s, ch, r, q] = xp[s, ch, r * sh : r * sh + kh, q * sw : q * sw + kw].sum() / (kh * kw)
                    if dy is not None:
                        dxp[s, ch, r * sh : r * sh + kh, q * sw : q * sw + kw] += dy[s, ch, r, q] / (kh * kw)
    return y, dxp[:, :, ph : ph + h, pw : pw + wd]


def batchnorm_train(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, dy: np.ndarray):
    """(y, dx, dgamma, dbeta, mean, biased var) of training-mode batch norm, one channel at a time.

    dx is the chain rule written out term by term (through x_hat, the variance and the mean)."""
    c = x.shape[1]
    y, dx = np.zeros_like(x), np.zeros_like(x)
    dgamma, dbeta, means, variances = (np.zeros(c) for _ in range(4))
    for ch in range(c):
        xc, dyc = x[:, ch].astype(np.float64), dy[:, ch].astype(np.float64)
        m = xc.size
        mean = xc.sum() / m
        var = ((xc - mean) ** 2).sum() / m
        x_hat = (xc - mean) / np.sqrt(var + eps)
        y[:, ch] = gamma[ch] * x_hat + beta[ch]
        dx_hat = dyc * gamma[ch]
        dvar = np.sum(dx_hat * (xc - mean)) * -0.5 * (var + eps) ** -1.5
        dmean = -np.sum(dx_hat) / np.sqrt(var + eps) + dvar * -2.0 * np.sum(xc - mean) / m
        dx[:, ch] = dx_hat / np.sqrt(var + eps) + dvar * 2.0 * (xc - mean) / m + dmean / m
        dgamma[ch], dbeta[ch] = np.sum(dyc * x_hat), np.sum(dyc)
        means[ch], variances[ch] = mean, var
    return y, dx, dgamma, dbeta, means, variances


def batchnorm_eval(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    eps: float,
    dy: np.ndarray,
):
    """(y, dx, dgamma, dbeta) of eval-mode batch norm, element by element.

    ``y = gamma * x_hat + beta`` with ``x_hat = (x - running_mean) / sqrt(running_var + eps)``: the
    statistics are constants, so ``dx = gamma * dy / sqrt(running_var + eps)``."""
    y, dx = np.zeros(x.shape), np.zeros(x.shape)
    dgamma, dbeta = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for idx in np.ndindex(*x.shape):
        ch = idx[1]
        std = np.sqrt(float(running_var[ch]) + eps)
        x_hat = (float(x[idx]) - float(running_mean[ch])) / std
        y[idx] = gamma[ch] * x_hat + beta[ch]
        dx[idx] = gamma[ch] * dy[idx] / std
        dgamma[ch] += dy[idx] * x_hat
        dbeta[ch] += dy[idx]
    return y, dx, dgamma, dbeta


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, dy: np.ndarray):
    """(y, dx, dw, db) of a fully connected layer: ``y[n, o] = b[o] + sum_i w[o, i] * x[n, i]``.

    ``dx[n, i] = sum_o dy[n, o] * w[o, i]``, ``dw[o, i] = sum_n dy[n, o] * x[n, i]``,
    ``db[o] = sum_n dy[n, o]`` (None without a bias)."""
    n, d_in = x.shape
    d_out = w.shape[0]
    y, dx = np.zeros((n, d_out)), np.zeros((n, d_in))
    dw, db = np.zeros((d_out, d_in)), np.zeros(d_out)
    for s in range(n):
        for o in range(d_out):
            y[s, o] = 0.0 if b is None else b[o]
            for i in range(d_in):
                y[s, o] += w[o, i] * x[s, i]
                dx[s, i] += dy[s, o] * w[o, i]
                dw[o, i] += dy[s, o] * x[s, i]
            db[o] += dy[s, o]
    return y, dx, dw, None if b is None else db


def relu(x: np.ndarray, dy: np.ndarray):
    """(y, dx) of ``y = max(x, 0)``: ``dx = dy`` where ``x > 0``, else 0."""
    y, dx = np.zeros_like(x), np.zeros_like(dy)
    for idx in np.ndindex(*x.shape):
        y[idx] = x[idx] if x[idx] > 0 else 0.0
        dx[idx] = dy[idx] if x[idx] > 0 else 0.0
    return y, dx


def dropout_mask(shape: tuple[int, ...], p: float, dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    """Inverted dropout's mask: each entry ``1 / (1 - p)`` when its uniform draw ``u >= p`` (probability
    ``1 - p``), else 0, so that ``E[x * mask] = x``. The draws are ``rng.random(shape)`` in ``dtype``
    (float64 for other dtypes), as the fast kernel makes them."""
    dtype = np.dtype(dtype)
    draws = rng.random(shape, dtype=dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64))
    mask = np.zeros(shape, dtype=dtype)
    keep = dtype.type(1.0 / (1.0 - p))
    for idx in np.ndindex(*shape):
        mask[idx] = keep if draws[idx] >= p else 0
    return mask
