"""Slow, obviously-correct loop implementations that the fast kernels in ``cnn.kernels`` are tested against.

Each function is a direct transcription of its equation with explicit Python loops over output
positions; nothing here is clever, so a disagreement points at the fast kernel.
"""

from __future__ import annotations

import numpy as np


def pad(x: np.ndarray, ph: int, pw: int, value: float = 0.0) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def out_size(size: int, k: int, s: int, p: int) -> int:
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
