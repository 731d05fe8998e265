"""Memory layout and buffers: channel-major views, reused scratch buffers, recycled outputs.

The 4-D arrays the kernels return are NCHW by shape but (C, N, H, W) in memory (:func:`channel_major`
gives that layout, as a free view when it already is). Scratch buffers live in a :class:`Workspace`
per layer; output arrays come from :func:`empty`, which reuses outputs nobody references any more.
Also here: the per-channel row view ``(C, N*H*W)`` and its row reductions, shared by batch norm and the
convolution's bias gradient.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np


def channel_major(x: np.ndarray) -> np.ndarray:
    """``x`` (N, C, ...) as a C-contiguous (C, N, ...) array: a free view for the arrays these kernels
    return, a copy otherwise."""
    return np.ascontiguousarray(np.swapaxes(x, 0, 1))


def empty_channel_major(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Uninitialised (N, C, ...) array whose memory is laid out as (C, N, ...)."""
    n, c, *rest = shape
    return np.swapaxes(empty((c, n, *rest), dtype), 0, 1)


def _flat(*arrays: np.ndarray) -> list[np.ndarray] | None:
    """1-D views of arrays that share one contiguous memory layout (elementwise ops then run at full
    SIMD speed), or None when their layouts differ."""
    first = arrays[0]
    if any(a.shape != first.shape or a.strides != first.strides for a in arrays):
        return None
    flats = [a.ravel(order="K") for a in arrays]
    if not all(np.shares_memory(f, a) or a.size == 0 for f, a in zip(flats, arrays)):
        return None
    return flats


def _relu_into(x: np.ndarray, out: np.ndarray) -> None:
    """``out = max(x, 0)`` (NaN stays NaN) as ``np.clip(x, 0, inf)``: NumPy's clip loop with scalar
    bounds runs ~15% faster than ``np.maximum`` against a zero array (which reads the zeros too) and
    ~40% faster than ``np.maximum`` against a scalar (AMD Zen 5, 12.8 MB, two threads)."""
    dtype = out.dtype.type
    np.clip(x, dtype(0), dtype(np.inf), out=out)


_ones_cache: dict[tuple[int, np.dtype], np.ndarray] = {}


def _ones(n: int, dtype: np.dtype) -> np.ndarray:
    """A read-only vector of ``n`` ones (cached per length and dtype: the right side of row-sum GEMVs)."""
    key = (n, np.dtype(dtype))
    v = _ones_cache.get(key)
    if v is None:
        v = np.ones(n, dtype=dtype)
        v.flags.writeable = False
        _ones_cache[key] = v
    return v


class Workspace:
    """Named scratch buffers that one layer reuses from call to call.

    Allocating, page-faulting and zeroing tens of megabytes per step costs as much as the copies that
    fill them. A buffer is reallocated only when the shape or dtype asked for changes.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}
        self.meta: dict[str, Any] = {}  # small per-call facts the backward pass needs (shapes)

    def get(self, name: str, shape: tuple[int, ...], dtype: np.dtype, zero: bool = False) -> np.ndarray:
        """The buffer ``name`` of ``shape``/``dtype``; a new one is zero-filled when ``zero``."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
            buf = np.zeros(shape, dtype=dtype) if zero else np.empty(shape, dtype=dtype)
            self._buffers[name] = buf
        return buf

    def clear(self) -> None:
        """Drop every buffer and fact (the next call allocates afresh)."""
        self._buffers.clear()
        self.meta.clear()


class _Recycler:
    """Output arrays that nobody references any more, handed out again instead of fresh memory.

    A fresh multi-megabyte array costs page faults on first touch, and faults from two threads
    serialise on the process's memory map (measurements: ``docs/library.md``). An array is reused only
    when its reference count shows that no one but this recycler holds it (or a view of it, since views
    reference their base), so a caller that keeps an output never sees it overwritten. Arrays under
    ``MIN_BYTES`` (64 KiB) are left to NumPy's allocator; at most ``MAX_BYTES`` are kept (unreferenced
    arrays of other shapes are dropped first), so memory held after
    training or a large evaluation batch stays bounded.
    """

    MIN_BYTES = 1 << 16
    MAX_BYTES = 768 << 20

    def __init__(self) -> None:
        self._arrays: dict[tuple[tuple[int, ...], np.dtype], list[np.ndarray]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` and ``dtype`` (fresh or recycled)."""
        dtype = np.dtype(dtype)
        shape = tuple(int(d) for d in shape)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if nbytes < self.MIN_BYTES:
            return np.empty(shape, dtype=dtype)
        key = (shape, dtype)
        with self._lock:
            arrays = self._arrays.setdefault(key, [])
            for a in arrays:
                if sys.getrefcount(a) <= 3:  # the list, ``a`` and getrefcount's argument: unused
                    return a
            if self._bytes + nbytes > self.MAX_BYTES:
                self._evict(nbytes, keep=key)
            a = np.empty(shape, dtype=dtype)
            if self._bytes + nbytes <= self.MAX_BYTES:
                arrays.append(a)
                self._bytes += nbytes
            return a

    def _evict(self, needed: int, keep: tuple[tuple[int, ...], np.dtype]) -> None:
        """Drop unreferenced arrays of shapes other than ``keep`` until ``needed`` more bytes fit."""
        for key, arrays in self._arrays.items():
            if key == keep:
                continue
            i = 0
            while i < len(arrays) and self._bytes + needed > self.MAX_BYTES:
                if sys.getrefcount(arrays[i]) <= 2:  # the list and getrefcount's argument: unused
                    self._bytes -= arrays[i].nbytes
                    del arrays[i]
                else:
                    i += 1
            if self._bytes + needed <= self.MAX_BYTES:
                return

    def clear(self) -> None:
        with self._lock:
            self._arrays.clear()
            self._bytes = 0


_recycler = _Recycler()


def empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Uninitialised C-contiguous array, recycled from outputs nobody references any more (see
    :class:`_Recycler`): the callers fully overwrite it."""
    return _recycler.empty(shape, dtype)


def empty_like_layout(x: np.ndarray) -> np.ndarray:
    """Uninitialised array shaped and laid out in memory like ``x`` (C order or channel-major)."""
    if x.flags.c_contiguous:
        return empty(x.shape, x.dtype)
    if x.ndim >= 2 and np.swapaxes(x, 0, 1).flags.c_contiguous:
        return np.swapaxes(empty(np.swapaxes(x, 0, 1).shape, x.dtype), 0, 1)
    return np.empty_like(x)


def _channel_rows(x: np.ndarray) -> np.ndarray:
    """(N, C) or (N, C, H, W) -> contiguous (C, N*H*W) rows, one per channel (a view when possible)."""
    return channel_major(x).reshape(x.shape[1], -1)


def _from_channel_rows(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`_channel_rows`: (C, N*H*W) rows -> an (N, C, ...) channel-major view."""
    n, c, *rest = shape
    return np.swapaxes(rows.reshape(c, n, *rest), 0, 1)


def _row_sums(a: np.ndarray) -> np.ndarray:
    """``sum_j a[i, j]`` per row of ``a`` (C, m), returned as float64 (C,): one BLAS GEMV ``a @ 1``
    (faster than ``a.sum(axis=1)`` on long rows; summed in SIMD blocks, like :func:`_row_dots`)."""
    return (a @ _ones(a.shape[1], a.dtype)).astype(np.float64)


def _row_dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``sum_j a[i, j] * b[i, j]`` per row of ``a``, ``b`` (C, m) -> (C,), as one batched BLAS dot."""
    return np.matmul(a[:, None, :], b[:, :, None]).reshape(a.shape[0])
