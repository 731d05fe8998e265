"""Numerical kernels behind the layers: im2col/col2im, convolution, pooling, batch norm, ReLU, dropout.

The layers in :mod:`cnn.layers` read like the equations; everything done for speed lives here. The
design, and why (measured on a 2-core machine; see ``benchmarks/train_throughput.py``):

**Channel-major memory.** Arrays are NCHW by *shape* everywhere, but the 4-D arrays these kernels
return live in memory as ``(C, N, H, W)`` (the NCHW array is a transposed view, as torch's
``memory_format`` idea). A convolution as one GEMM, ``Y = W2 @ cols`` with ``W2`` (O, C*kh*kw) and
``cols`` (C*kh*kw, N*OH*OW), produces exactly that layout, so no transpose is ever copied; batch norm's
per-channel statistics become reductions over long contiguous rows; per-channel scale/shift becomes a
row broadcast; im2col of the next layer reads whole channel planes. Any input layout is accepted
(``channel_major`` copies only when needed), so correctness never depends on the layout.

**Both cores for everything.** A small thread pool (:func:`parallel`) splits each kernel's work into
contiguous blocks, by channel for batch norm and pooling, by feature for the dense layer, by element for
ReLU, with BLAS held at one thread per worker (NumPy releases the GIL inside its loops and BLAS).
Splitting batch norm by channel keeps its statistics exact: each worker owns whole channels, so there is
nothing to combine. The convolutions, most of a step, go by chunks of a few samples handed out to
whichever thread is free (:func:`parallel_chunks`): a worker wakes 50-500 us after the caller on this
machine, and fixed halves left one thread idle ~1 ms per call at batch 128. Results are deterministic:
blocks are fixed by the sizes, and chunk results are combined in chunk order whichever thread made them.
``set_num_threads(1)`` gives the classic design instead: one Python thread, BLAS free to use its own
threads.

**Columns that stay in cache.** For stride 1 the input gradient is itself a convolution of the padded
output gradient with the flipped, transposed kernel, computed as im2col + GEMM: a plain copy per offset
instead of col2im's read-modify-write ``+=`` (measured ~2.5x cheaper). The columns of the output
gradient it builds also give the weight gradient, ``G = dcols @ x2^T`` with the kernel offsets flipped
back, so the forward columns are not needed after the forward: both passes make their columns a couple
of megabytes at a time (about a core's L2) in per-thread buffers that never travel to memory. At batch
128 that spares ~600 MB of memory traffic per step (the forward columns written, read by the forward
GEMM and read again for ``dW``), and the ``G`` GEMM runs faster than ``dY @ cols^T`` did on the
32-channel layers (~87 against ~64 GF/s per core). Layers whose input gradient is a col2im (other
strides; many more output than input channels, such as a first layer with its small columns) keep their
forward columns for ``dW = dY @ cols^T`` as the classic design does.

**Reused buffers.** Column buffers live in a :class:`Workspace`: allocated once, zeroed, so the padding
entries, which are never written, stay zero (no padded copy of the input is made); filled by one slice
copy per kernel offset. Outputs are new arrays to the caller, but their memory comes from outputs that
nobody references any more (:class:`_Recycler`): fresh megabytes cost page faults, which two threads
take in turn.

**The BLAS kernels.** Most of a step is OpenBLAS GEMMs; :mod:`cnn.blas` has NumPy load OpenBLAS's AVX2
kernels on AMD Zen 4, where they ran these shapes 8-15% faster than the AVX-512 ones OpenBLAS picks.

**NumPy pitfalls avoided.** Broadcasting a scalar or a row into ``np.maximum`` or into a multiply along
short inner axes is 2-3x slower than an operation between two same-layout contiguous arrays; ``np.where``
and ``np.copyto(where=)`` are far slower still. Hence the flat contiguous views, a shared zero buffer for
ReLU, ``out=`` arguments, and long-row broadcasts only.
"""

from __future__ import annotations

import functools
import itertools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

from cnn.errors import CNNError

IntPair = int | tuple[int, int]
T = TypeVar("T")


def pair(value: IntPair, name: str) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(3, 1) -> (3, 1)``. Raises :class:`CNNError` naming ``name`` otherwise."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value), int(value)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        return int(value[0]), int(value[1])
    raise CNNError(f"{name} must be an int or a pair of ints, got {value!r}")


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a sliding window: ``floor((size + 2*padding - kernel) / stride) + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


# ============================================================================================== threads


def _default_num_threads() -> int:
    env = os.environ.get("CNN_NUM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise CNNError(f"environment variable CNN_NUM_THREADS must be an int, got {env!r}") from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class _ThreadPool:
    """Persistent worker threads; the calling thread runs the first block itself.

    Lighter than ``concurrent.futures`` (a round trip costs ~20 us instead of ~60 us), which matters
    with ~40 dispatches per training step.
    """

    def __init__(self, num_workers: int) -> None:
        self._tasks: list[Callable[[], None] | None] = [None] * num_workers
        self._errors: list[BaseException | None] = [None] * num_workers
        self._start = [threading.Semaphore(0) for _ in range(num_workers)]
        self._done = [threading.Semaphore(0) for _ in range(num_workers)]
        self.lock = threading.Lock()
        for i in range(num_workers):
            threading.Thread(target=self._loop, args=(i,), name=f"cnn-kernels-{i}", daemon=True).start()

    def _loop(self, i: int) -> None:
        _state.in_worker = True
        while True:
            self._start[i].acquire()
            try:
                task = self._tasks[i]
                if task is not None:
                    task()
            except BaseException as exc:  # re-raised in the calling thread
                self._errors[i] = exc
            finally:
                self._done[i].release()

    def run(self, tasks: list[Callable[[], None]]) -> None:
        """Run ``tasks[0]`` here and ``tasks[1:]`` on the workers; wait for all; re-raise a failure."""
        helpers = tasks[1:]
        for i, task in enumerate(helpers):
            self._tasks[i], self._errors[i] = task, None
            self._start[i].release()
        first_error: BaseException | None = None
        try:
            tasks[0]()
        except BaseException as exc:
            first_error = exc
        for i in range(len(helpers)):
            self._done[i].acquire()
            self._tasks[i] = None
            if first_error is None and self._errors[i] is not None:
                first_error = self._errors[i]
        if first_error is not None:
            raise first_error


class _State(threading.local):
    in_worker = False


_state = _State()
_num_threads = _default_num_threads()
_pool: _ThreadPool | None = None
_pool_guard = threading.Lock()
_blas: Any = None  # threadpoolctl controller for the BLAS libraries, or False when unavailable


def _forget_pool_after_fork() -> None:
    # A forked child has none of the parent's threads: it must start its own pool, not wait on ghosts.
    global _pool, _pool_guard
    _pool, _pool_guard = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def get_num_threads() -> int:
    """Number of threads the kernels split their work over (default: the CPUs this process may use,
    or the ``CNN_NUM_THREADS`` environment variable)."""
    return _num_threads


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads (``None``: all available CPUs). ``1`` turns the pool off: one Python thread,
    BLAS with its own default threading."""
    global _num_threads
    if n is not None and (not isinstance(n, (int, np.integer)) or n < 1):
        raise CNNError(f"number of threads must be a positive int or None, got {n!r}")
    _num_threads = _default_num_threads() if n is None else int(n)


def _blas_controller() -> Any:
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - threadpoolctl is a dependency
            _blas = False
        else:
            _blas = ThreadpoolController().select(user_api="blas")
    return _blas


@contextmanager
def _blas_single_threaded() -> Iterator[bool]:
    """Hold BLAS at one thread (a process-wide setting, restored on exit) while the pool runs, so that
    each worker's GEMM runs on its own core; yields False where BLAS threads cannot be controlled.

    Talks to the BLAS libraries' own setters (threadpoolctl found them once): ~1 us instead of the
    ~9 us of ``threadpool_limits``, which matters at ~40 dispatches per step."""
    controller = _blas_controller()
    if controller is False:
        yield False
        return
    libs = controller.lib_controllers
    before = [lib.num_threads for lib in libs]
    for lib in libs:
        lib.set_num_threads(1)
    try:
        yield True
    finally:
        for lib, n in zip(libs, before):
            lib.set_num_threads(n)


@contextmanager
def blas_held() -> Iterator[None]:
    """Hold BLAS at one thread for a whole run of kernel calls (a training loop, a batched evaluation)
    while the pool is on, instead of only around each dispatch: a BLAS call made between two dispatches
    would otherwise run multi-threaded and leave OpenBLAS's helper threads spinning on the cores the
    pool's workers need. No-op with the pool off."""
    if _num_threads <= 1 or _state.in_worker:
        yield
        return
    with _blas_single_threaded():
        yield


_MIN_TASK = 1 << 16
"""Fewest elements (or multiply-adds) per thread worth a dispatch: waking a worker costs 25-75 us on
this machine, about what NumPy needs for ~64K elements; smaller work (the classifier's (N, 128) batch
norm, the last dense layer) runs inline."""


def _min_block(per_item: int) -> int:
    """``min_block`` for :func:`parallel` when each item carries ``per_item`` elements of work."""
    return -(-_MIN_TASK // max(1, per_item))


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ``(lo, hi)`` blocks covering ``range(n)``, sizes differing by at most one."""
    parts = max(1, min(parts, n))
    edges = [n * k // parts for k in range(parts + 1)]
    return [(edges[k], edges[k + 1]) for k in range(parts)]


def parallel(work: Callable[[int, int], T], n: int, min_block: int = 1) -> list[T]:
    """Call ``work(lo, hi)`` over contiguous blocks covering ``range(n)``, one block per thread, and
    return the results in block order.

    ``work`` must write only its own block of the outputs. Runs inline (one block) when the pool is off,
    when ``n`` is too small for ``min_block`` items per thread, inside a worker, or while another thread
    of the program uses the pool. Callers must not assume a number of blocks: combine the results.
    """
    global _pool
    if _num_threads <= 1 or _state.in_worker:
        return [work(0, n)]
    parts = min(_num_threads, n // max(1, min_block))
    with _pool_guard:
        if _pool is None or len(_pool._tasks) < _num_threads - 1:
            _pool = _ThreadPool(_num_threads - 1)
        pool = _pool
    if not pool.lock.acquire(blocking=False):  # another thread of the program is using the pool
        return [work(0, n)]
    try:
        # BLAS stays at one thread even when this call runs inline: a multi-threaded GEMM leaves
        # OpenBLAS's helper threads spinning for a while, and they would compete with the pool's workers.
        with _blas_single_threaded() as ok:
            if parts <= 1 or not ok:  # without control over BLAS threads, one Python thread is safe
                return [work(0, n)]
            blocks = split(n, parts)
            results: list[Any] = [None] * len(blocks)

            def task(k: int) -> None:
                results[k] = work(*blocks[k])

            pool.run([lambda k=k: task(k) for k in range(len(blocks))])
            return results
    finally:
        pool.lock.release()


def parallel_chunks(work: Callable[[int, int, int], T], n: int, chunk: int) -> list[T]:
    """Call ``work(slot, lo, hi)`` for the chunks ``[lo, hi)`` of ``range(n)`` (``chunk`` items each, the
    last one shorter), handed out one at a time to whichever thread is free; return the results in chunk
    order. ``slot`` numbers the calling thread (0 = the caller), for per-thread scratch buffers.

    Unlike :func:`parallel`'s fixed halves, a thread that starts late (a worker wakes 50-500 us after
    the caller) or runs slower simply takes fewer chunks: measured, fixed halves of a convolution left
    one thread idle for ~1 ms per call at batch 128. Results stay deterministic: each chunk's result is
    the same whichever thread computes it, and callers combine them in chunk order.
    """
    bounds = [(lo, min(n, lo + chunk)) for lo in range(0, n, max(1, chunk))]
    results: list[Any] = [None] * len(bounds)
    counter = itertools.count()  # next() on it is atomic under the GIL

    def run(slot: int, _hi: int) -> None:
        for k in iter(counter.__next__, None):
            if k >= len(bounds):
                return
            results[k] = work(slot, *bounds[k])

    parallel(run, min(_num_threads, len(bounds)))
    return results


# ======================================================================================= layout, buffers


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


_zeros_lock = threading.Lock()
_zeros: dict[np.dtype, np.ndarray] = {}


def _zeros_like_flat(n: int, dtype: np.dtype) -> np.ndarray:
    """A read-only zero vector of length ``n`` (shared, grown on demand)."""
    with _zeros_lock:
        z = _zeros.get(dtype)
        if z is None or z.size < n:
            z = np.zeros(n, dtype=dtype)
            z.flags.writeable = False
            _zeros[dtype] = z
    return z[:n]


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
        self._buffers.clear()
        self.meta.clear()


class _Recycler:
    """Output arrays that nobody references any more, handed out again instead of fresh memory.

    A fresh multi-megabyte array costs page faults on first touch (~0.1 ms per 3 MB, and faults from
    two threads serialise on the process's memory map), which made the element-wise kernels slower on
    two threads than on one. An array is reused only when its reference count shows that no one but
    this recycler holds it (or a view of it, since views reference their base), so a caller that keeps
    an output never sees it overwritten. Arrays under 64 KiB are left to NumPy's allocator; at most
    ``MAX_BYTES`` are kept (unreferenced arrays of other shapes are dropped first), so memory held after
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


# ============================================================================================ im2col


def _valid_range(out_size: int, in_size: int, offset: int, stride: int, pad: int) -> tuple[int, int, int]:
    """Output positions ``o`` in ``[o_lo, o_hi)`` whose input ``o*stride + offset - pad`` lies inside
    ``[0, in_size)``, and the first such input index."""
    shift = offset - pad
    o_lo = max(0, -(shift // stride))  # ceil(-shift / stride) when shift < 0
    o_hi = max(o_lo, min(out_size, (in_size - 1 - shift) // stride + 1))
    return o_lo, o_hi, o_lo * stride + shift


@functools.lru_cache(maxsize=512)
def _offset_slices(
    in_hw: tuple[int, int],
    out_hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> tuple[tuple[int, int, tuple[slice, slice], tuple[slice, slice]], ...]:
    """For each kernel offset (i, j): the (rows, cols) slices of the output grid whose input pixel is
    inside the image, and the matching strided slices of the input. Cached per geometry: the chunked
    convolutions ask for the same slices hundreds of times per training step (~11 us each to build,
    holding the GIL that the other worker needs)."""
    found = []
    for i in range(kernel[0]):
        r_lo, r_hi, r0 = _valid_range(out_hw[0], in_hw[0], i, stride[0], padding[0])
        for j in range(kernel[1]):
            c_lo, c_hi, c0 = _valid_range(out_hw[1], in_hw[1], j, stride[1], padding[1])
            if r_hi == r_lo or c_hi == c_lo:
                continue  # this offset only ever sees padding
            out_sl = (slice(r_lo, r_hi), slice(c_lo, c_hi))
            in_sl = (
                slice(r0, r0 + stride[0] * (r_hi - r_lo - 1) + 1, stride[0]),
                slice(c0, c0 + stride[1] * (c_hi - c_lo - 1) + 1, stride[1]),
            )
            found.append((i, j, out_sl, in_sl))
    return tuple(found)


def _im2col_into(
    xt: np.ndarray,
    cols6: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> None:
    """``cols6[c, i, j, n, oh, ow] = xpad[c, n, oh*sh + i, ow*sw + j]`` for the in-image entries only.

    ``xt`` is channel-major (C, N, H, W); entries that fall in the padding are not written (the caller's
    buffer holds zeros there). One slice copy per kernel offset.
    """
    oh, ow = cols6.shape[4:]
    for i, j, (ro, co), (ri, ci) in _offset_slices(
        xt.shape[2:], (oh, ow), tuple(kernel), tuple(stride), tuple(padding)
    ):
        cols6[:, i, j, :, ro, co] = xt[:, :, ri, ci]


def _col2im_into(
    cols6: np.ndarray,
    dxt: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> None:
    """Adjoint of :func:`_im2col_into`: ``dxt`` (C, N, H, W) = sum over offsets of the column entries
    that were copied from each pixel. One slice ``+=`` per kernel offset; padding entries are dropped."""
    dxt[...] = 0
    oh, ow = cols6.shape[4:]
    for i, j, (ro, co), (ri, ci) in _offset_slices(
        dxt.shape[2:], (oh, ow), tuple(kernel), tuple(stride), tuple(padding)
    ):
        dxt[:, :, ri, ci] += cols6[:, i, j, :, ro, co]


def im2col(
    x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> np.ndarray:
    """Columns of ``x`` (N, C, H, W) for a sliding ``kernel`` window: shape (C*kh*kw, N*OH*OW).

    ``cols[(c*kh + i)*kw + j, (n*OH + oh)*OW + ow] = xpad[n, c, oh*sh + i, ow*sw + j]``, so that a
    convolution is ``weight.reshape(O, -1) @ cols``.
    """
    n, c, h, w = x.shape
    oh, ow = (
        conv_output_size(h, kernel[0], stride[0], padding[0]),
        conv_output_size(w, kernel[1], stride[1], padding[1]),
    )
    cols6 = np.zeros((c, kernel[0], kernel[1], n, oh, ow), dtype=x.dtype)
    _im2col_into(channel_major(x), cols6, kernel, stride, padding)
    return cols6.reshape(c * kernel[0] * kernel[1], n * oh * ow)


def col2im(
    cols: np.ndarray,
    x_shape: tuple[int, int, int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> np.ndarray:
    """Adjoint of :func:`im2col`: ``cols`` (C*kh*kw, N*OH*OW) -> (N, C, H, W), overlaps summed."""
    n, c, h, w = x_shape
    oh, ow = (
        conv_output_size(h, kernel[0], stride[0], padding[0]),
        conv_output_size(w, kernel[1], stride[1], padding[1]),
    )
    dx = empty_channel_major(x_shape, cols.dtype)
    _col2im_into(
        cols.reshape(c, kernel[0], kernel[1], n, oh, ow), np.swapaxes(dx, 0, 1), kernel, stride, padding
    )
    return dx


# ======================================================================================= convolution


def _transposed_input_gradient(
    c: int, o: int, kernel: tuple[int, int], stride: tuple, padding: tuple
) -> bool:
    """Whether a convolution's input gradient is computed as a convolution of the padded output gradient
    with the flipped transposed kernel (stride 1, padding < kernel, not many more output than input
    channels); otherwise it is ``col2im(W2^T @ dY2)``."""
    return stride == (1, 1) and padding[0] < kernel[0] and padding[1] < kernel[1] and o <= 2 * c


def _keeps_columns(c: int, o: int, kernel: tuple[int, int], stride: tuple, padding: tuple) -> bool:
    """Whether the forward keeps its im2col columns for ``dW = dY2 @ cols^T``: only where the input
    gradient is not a transposed convolution (strided layers; layers with many more output than input
    channels, such as a first layer, whose columns are small).

    Where it is, the backward builds the columns of the padded output gradient anyway and ``dW``
    follows from those (see :func:`conv2d_backward`), so the forward columns are made a few samples at
    a time in a buffer that stays in cache and never travel to memory: at batch 128 that spares the
    default network ~600 MB of memory traffic per step (the columns written, read by the forward GEMM
    and read again by the weight-gradient GEMM)."""
    return not _transposed_input_gradient(c, o, kernel, stride, padding)


def _chunk(per_sample_bytes: int, n: int) -> int:
    """Samples per chunk of columns: about ``_BLOCK_BYTES`` with the pool on; the whole batch with it off
    (``set_num_threads(1)``), where BLAS threads split one large GEMM better than many small ones."""
    if _num_threads <= 1:
        return max(1, n)
    return max(1, min(n, _BLOCK_BYTES // max(1, per_sample_bytes)))


def conv2d_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    ws: Workspace,
) -> np.ndarray:
    """``y[n, o] = bias[o] + sum_{c,i,j} weight[o, c, i, j] * xpad[n, c, oh*sh + i, ow*sw + j]``.

    x (N, C, H, W), weight (O, C, kh, kw), bias (O,) or None -> y (N, O, OH, OW), channel-major memory.
    im2col, then one GEMM ``W2 @ cols``. Layers that keep their columns for the backward
    (:func:`_keeps_columns`) fill one buffer for the whole batch, a fixed block of samples per thread;
    the others work a few samples at a time (chunks handed out by :func:`parallel_chunks`) in a small
    per-thread buffer that stays in cache, and keep a reference to ``x`` instead.
    """
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    oh, ow = conv_output_size(h, kh, stride[0], padding[0]), conv_output_size(w, kw, stride[1], padding[1])
    keep = _keeps_columns(c, o, (kh, kw), stride, padding)
    xt = channel_major(x)
    ws.meta.update(x_shape=x.shape, kept_columns=keep, xt=None if keep else xt)
    w2 = weight.reshape(o, -1)
    yt = empty((o, n, oh, ow), x.dtype)
    y2 = yt.reshape(o, n * oh * ow)

    def columns_times_weight(b6: np.ndarray, lo: int, hi: int) -> None:
        _im2col_into(xt[:, lo:hi], b6, (kh, kw), stride, padding)
        block = slice(lo * oh * ow, hi * oh * ow)
        np.matmul(w2, b6.reshape(c * kh * kw, -1), out=y2[:, block])
        if bias is not None:
            y2[:, block] += bias[:, None]

    if keep:
        cols6 = ws.get("cols", (c, kh, kw, n, oh, ow), x.dtype, zero=True)
        parallel(lambda lo, hi: columns_times_weight(cols6[:, :, :, lo:hi], lo, hi), n)
    else:
        chunk = _chunk(c * kh * kw * oh * ow * x.dtype.itemsize, n)

        def chunk_work(slot: int, lo: int, hi: int) -> None:
            # Each thread's own buffer, allocated zeroed: the padding entries are never written, and every
            # chunk has the same padding pattern.
            buf6 = ws.get(f"fwd_cols@{slot}", (c, kh, kw, chunk, oh, ow), x.dtype, zero=True)
            columns_times_weight(buf6[:, :, :, : hi - lo], lo, hi)

        parallel_chunks(chunk_work, n, chunk)
    return np.swapaxes(yt, 0, 1)


_BLOCK_BYTES = 2 << 20
"""Target size of a chunk of columns (the convolution's forward columns when they are not kept, and its
input-gradient columns): about a core's L2 cache. Measured per training step against 1, 1.5, 3 and 4 MiB:
smaller chunks cost more calls, larger ones leave the columns to L3 and the last chunk to one thread."""


def _flipped_transposed(weight: np.ndarray) -> np.ndarray:
    """``w'[c, o, i, j] = weight[o, c, kh-1-i, kw-1-j]``: the kernel of the stride-1 input gradient."""
    return np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))


def conv2d_backward(
    grad_out: np.ndarray,
    weight: np.ndarray,
    stride: tuple[int, int],
    padding: tuple[int, int],
    ws: Workspace,
    grad_weight: np.ndarray,
    grad_bias: np.ndarray | None,
    input_grad: bool = True,
) -> np.ndarray | None:
    """Gradients of :func:`conv2d_forward`; writes ``grad_weight`` / ``grad_bias`` in place, returns dx
    (None with ``input_grad=False``, which skips its computation: a first layer's dx is unused).

    ``db = sum_{n,oh,ow} dY``. With the forward columns kept: ``dW2 = dY2 @ cols^T`` (dY2 = grad
    (O, N*OH*OW)) and ``dx = col2im(W2^T @ dY2)``.

    Otherwise (stride 1, padding < kernel: :func:`_transposed_input_gradient`) dx is the convolution of
    dY, padded by ``k - 1 - p``, with the flipped transposed kernel: ``dx2 = W'2 @ dcols`` with
    ``dcols[(o, a, b), (n, h, w)] = dYpad[o, n, h + a, w + b]``, and the same columns give the weight
    gradient without the forward's: ``dW[o, c, i, j] = sum_{n,h,w} dcols[(o, kh-1-i, kw-1-j), (n, h, w)]
    * x[n, c, h, w]``, i.e. ``G = dcols @ x2^T`` with its offsets flipped back. The columns are made a
    few samples at a time in a per-thread buffer that stays in cache; the per-chunk parts of ``G`` and
    ``db`` are added in chunk order, so the result does not depend on which thread took which chunk.
    """
    if "x_shape" not in ws.meta:
        raise CNNError("conv2d_backward called before conv2d_forward: no forward state to reuse")
    n, c, h, w = ws.meta["x_shape"]
    o, _, kh, kw = weight.shape
    oh, ow = grad_out.shape[2:]
    dyt = channel_major(grad_out)
    dy2 = dyt.reshape(o, n * oh * ow)
    dxt = empty((c, n, h, w), weight.dtype) if input_grad else None
    dtype = weight.dtype

    if ws.meta["kept_columns"]:
        cols = ws.get("cols", (c, kh, kw, n, oh, ow), dtype, zero=True).reshape(c * kh * kw, -1)
        w2t = np.ascontiguousarray(weight.reshape(o, -1).T)
        chunk = _chunk(c * kh * kw * oh * ow * weight.itemsize, n)

        def work(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray | None]:
            out_block = slice(lo * oh * ow, hi * oh * ow)
            if input_grad:  # dcols a few samples at a time, in a small per-thread buffer
                buf6 = ws.get(f"dx_cols@{lo}", (c, kh, kw, min(chunk, hi - lo), oh, ow), dtype, zero=True)
                for s0 in range(lo, hi, chunk):
                    s1 = min(hi, s0 + chunk)
                    b6 = buf6[:, :, :, : s1 - s0]
                    np.matmul(w2t, dy2[:, s0 * oh * ow : s1 * oh * ow], out=b6.reshape(c * kh * kw, -1))
                    _col2im_into(b6, dxt[:, s0:s1], (kh, kw), stride, padding)
            # This block's share of dW2^T (K, O): computed transposed, which OpenBLAS runs ~10% faster.
            dw_t = cols[:, out_block] @ dy2[:, out_block].T
            return dw_t, None if grad_bias is None else _row_sums(dy2[:, out_block])

        parts = parallel(work, n)
    else:
        tpad = (kh - 1 - padding[0], kw - 1 - padding[1])
        wt2 = _flipped_transposed(weight).reshape(c, -1)
        x2 = ws.meta["xt"].reshape(c, n * h * w)
        chunk = _chunk(o * kh * kw * h * w * weight.itemsize, n)

        def chunk_work(slot: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray | None]:
            buf6 = ws.get(f"dx_cols@{slot}", (o, kh, kw, chunk, h, w), dtype, zero=True)
            b6 = buf6[:, :, :, : hi - lo]
            dcols = b6.reshape(o * kh * kw, -1)
            _im2col_into(dyt[:, lo:hi], b6, (kh, kw), (1, 1), tpad)
            pixels = slice(lo * h * w, hi * h * w)
            if input_grad:
                np.matmul(wt2, dcols, out=dxt.reshape(c, -1)[:, pixels])
            g = dcols @ x2[:, pixels].T  # this chunk's part of G, rows (o, a, b)
            return g, None if grad_bias is None else _row_sums(dy2[:, lo * oh * ow : hi * oh * ow])

        parts = parallel_chunks(chunk_work, n, chunk)

    g_total, db_total = parts[0]
    for g, db in parts[1:]:
        g_total += g
        if db_total is not None:
            db_total += db
    if ws.meta["kept_columns"]:
        grad_weight[...] = g_total.T.reshape(grad_weight.shape)
    else:  # G[(o, a, b), c] holds dW[o, c, kh-1-a, kw-1-b]
        grad_weight[...] = g_total.reshape(o, kh, kw, c)[:, ::-1, ::-1, :].transpose(0, 3, 1, 2)
    if grad_bias is not None:
        grad_bias[...] = db_total
    return np.swapaxes(dxt, 0, 1) if input_grad else None


# ============================================================================================ linear


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


# =========================================================================================== pooling


def _pool_out_hw(
    x_shape: tuple[int, ...], kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> tuple[int, int]:
    return (
        conv_output_size(x_shape[2], kernel[0], stride[0], padding[0]),
        conv_output_size(x_shape[3], kernel[1], stride[1], padding[1]),
    )


def maxpool2d_forward(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    cache: dict[str, Any],
    scale: np.ndarray | None = None,
) -> np.ndarray:
    """``y[n, c, oh, ow] = max_{i,j} xpad[n, c, oh*sh + i, ow*sw + j]`` (padding never wins: -inf).

    ``scale`` (N, C, 1, 1), e.g. a following ``Dropout2D``'s mask, fuses ``y * scale`` into the same
    pass (each channel block scaled while in cache); :func:`maxpool2d_backward` then applies it too.

    Strided views, one per kernel offset, are folded into a running maximum; ``cache['argmax']`` keeps
    the offset of the *first* maximum of each window (row-major, as torch) as uint8/uint16, for the
    backward pass. Channel blocks run in parallel. Output memory is channel-major.
    """
    n, c, h, w = x.shape
    oh, ow = _pool_out_hw(x.shape, kernel, stride, padding)
    kk = kernel[0] * kernel[1]
    xt = channel_major(x)
    yt = empty((c, n, oh, ow), x.dtype)
    argmax = empty((c, n, oh, ow), np.dtype(np.uint8 if kk < 256 else np.uint16))
    offsets = _offset_slices((h, w), (oh, ow), tuple(kernel), tuple(stride), tuple(padding))

    # When the first offset's windows cover the whole output (no padding at the top left), its values
    # start the running maximum as they are: no -inf fill, and one compare-and-update pass fewer.
    first_covers = (
        bool(offsets) and offsets[0][:2] == (0, 0) and offsets[0][2] == (slice(0, oh), slice(0, ow))
    )

    def work(lo: int, hi: int) -> None:
        best, idx, src = yt[lo:hi], argmax[lo:hi], xt[lo:hi]
        idx[...] = 0
        rest = offsets
        if first_covers:
            _, _, _, (ri, ci) = offsets[0]
            best[...] = src[:, :, ri, ci]
            rest = offsets[1:]
        else:
            best[...] = -np.inf
        for i, j, (ro, co), (ri, ci) in rest:
            cand, cur, cur_idx = src[:, :, ri, ci], best[:, :, ro, co], idx[:, :, ro, co]
            better = cand > cur  # strict: an equal later value never displaces the first maximum
            np.maximum(cur, cand, out=cur)
            # The offsets come in increasing row-major order k, so k exceeds every index stored so
            # far: "k where better, else unchanged" is max(idx, better * k), one pass fewer.
            np.maximum(cur_idx, better * cur_idx.dtype.type(i * kernel[1] + j), out=cur_idx)
        if scale_t is not None:
            best *= scale_t[lo:hi]

    scale_t = _scale_channel_major(scale, n, c, x.dtype)
    parallel(work, c)
    cache.update(argmax=argmax, x_shape=x.shape, scale_t=scale_t)
    return np.swapaxes(yt, 0, 1)


def _scale_channel_major(scale: np.ndarray | None, n: int, c: int, dtype: np.dtype) -> np.ndarray | None:
    """A per-(sample, channel) ``scale`` (N, C, 1, 1) as a (C, N, 1, 1) view, to match channel blocks."""
    if scale is None:
        return None
    if scale.shape != (n, c, 1, 1):
        raise CNNError(f"max-pool scale must have shape {(n, c, 1, 1)}, got {scale.shape}")
    return np.swapaxes(scale.astype(dtype, copy=False), 0, 1)


def maxpool2d_backward(
    grad_out: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    cache: dict[str, Any],
) -> np.ndarray:
    """Routes each output gradient to the input position that won its window (the first maximum),
    times the forward's ``scale`` if it had one."""
    argmax, (n, c, h, w), scale_t = cache["argmax"], cache["x_shape"], cache.get("scale_t")
    oh, ow = argmax.shape[2:]
    dyt = channel_major(grad_out)
    dxt = empty((c, n, h, w), grad_out.dtype)
    offsets = _offset_slices((h, w), (oh, ow), tuple(kernel), tuple(stride), tuple(padding))

    # Windows that tile the input (kernel == stride, no padding) never overlap: each offset's gradient
    # is written straight into its strided view, and only the rows/columns no window covers are zeroed.
    tiles = kernel == stride and padding == (0, 0)

    def work(lo: int, hi: int) -> None:
        dx, dy, idx = dxt[lo:hi], dyt[lo:hi], argmax[lo:hi]
        if scale_t is not None:
            dy = dy * scale_t[lo:hi]
        if tiles:
            dx[:, :, oh * stride[0] :] = 0
            dx[:, :, :, ow * stride[1] :] = 0
        else:
            dx[...] = 0
        for i, j, (ro, co), (ri, ci) in offsets:
            won = idx[:, :, ro, co] == i * kernel[1] + j
            if tiles:
                np.multiply(dy, won, out=dx[:, :, ri, ci])
            else:
                dx[:, :, ri, ci] += dy[:, :, ro, co] * won

    parallel(work, c)
    return np.swapaxes(dxt, 0, 1)


def avgpool2d_forward(
    x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> np.ndarray:
    """``y = sum of each kh x kw window of the zero-padded input / (kh*kw)`` (padding counted, as the
    torch default ``count_include_pad=True``)."""
    n, c, h, w = x.shape
    oh, ow = _pool_out_hw(x.shape, kernel, stride, padding)
    xt = channel_major(x)
    yt = np.zeros((c, n, oh, ow), dtype=x.dtype)
    for _, _, (ro, co), (ri, ci) in _offset_slices(
        (h, w), (oh, ow), tuple(kernel), tuple(stride), tuple(padding)
    ):
        yt[:, :, ro, co] += xt[:, :, ri, ci]
    yt *= yt.dtype.type(1.0 / (kernel[0] * kernel[1]))
    return np.swapaxes(yt, 0, 1)


def avgpool2d_backward(
    grad_out: np.ndarray,
    x_shape: tuple[int, int, int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> np.ndarray:
    """Each input pixel receives ``grad / (kh*kw)`` from every window that contains it."""
    n, c, h, w = x_shape
    oh, ow = grad_out.shape[2:]
    dyt = channel_major(grad_out) * grad_out.dtype.type(1.0 / (kernel[0] * kernel[1]))
    dxt = np.zeros((c, n, h, w), dtype=grad_out.dtype)
    for _, _, (ro, co), (ri, ci) in _offset_slices(
        (h, w), (oh, ow), tuple(kernel), tuple(stride), tuple(padding)
    ):
        dxt[:, :, ri, ci] += dyt[:, :, ro, co]
    return np.swapaxes(dxt, 0, 1)


# ======================================================================================== batch norm


def _channel_rows(x: np.ndarray) -> np.ndarray:
    """(N, C) or (N, C, H, W) -> contiguous (C, N*H*W) rows, one per channel (a view when possible)."""
    return channel_major(x).reshape(x.shape[1], -1)


def _from_channel_rows(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    n, c, *rest = shape
    return np.swapaxes(rows.reshape(c, n, *rest), 0, 1)


def _row_sums(a: np.ndarray) -> np.ndarray:
    """``sum_j a[i, j]`` per row as one BLAS GEMV ``a @ 1``: ~3x faster than ``a.sum(axis=1)`` on the
    long channel rows (and summed in SIMD blocks, like :func:`_row_dots`), returned as float64."""
    return (a @ _ones(a.shape[1], a.dtype)).astype(np.float64)


def _row_dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``sum_j a[i, j] * b[i, j]`` per row, as one batched BLAS dot (5-10x faster than einsum here)."""
    return np.matmul(a[:, None, :], b[:, :, None]).reshape(a.shape[0])


def batchnorm_forward_train(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float,
    cache: dict[str, Any],
    relu: bool = False,
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
    """
    rows = _channel_rows(x)
    c, m = rows.shape
    # The centred input is internal state (kept for backward), so its buffer is reused across calls.
    centred = cache["centred"] if rows.shape == getattr(cache.get("centred"), "shape", None) else None
    if centred is None or centred.dtype != rows.dtype:
        centred = empty(rows.shape, rows.dtype)
    y = empty(rows.shape, rows.dtype)
    mean, var = np.empty(c), np.empty(c)
    zeros = _zeros_like_flat(y.size, y.dtype).reshape(y.shape) if relu else None

    def work(lo: int, hi: int) -> None:
        xc = centred[lo:hi]
        mean[lo:hi] = _row_sums(rows[lo:hi]) / m
        np.subtract(rows[lo:hi], mean[lo:hi, None].astype(x.dtype), out=xc)
        var[lo:hi] = _row_dots(xc, xc) / m
        scale = gamma[lo:hi] / np.sqrt(var[lo:hi] + eps)
        np.multiply(xc, scale[:, None].astype(x.dtype), out=y[lo:hi])
        y[lo:hi] += beta[lo:hi, None]
        if zeros is not None:
            np.maximum(y[lo:hi], zeros[lo:hi], out=y[lo:hi])

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
) -> np.ndarray:
    """Closed-form backward of training-mode batch norm (m values per channel, x_hat = centred * inv_std)::

        dbeta = sum(dy),  dgamma = sum(dy * x_hat),
        dx = gamma * inv_std / m * (m * dy - dbeta - x_hat * dgamma)

    evaluated as ``dx = a * dy + b * centred + c`` with per-channel ``a = gamma * inv_std``,
    ``b = -a * inv_std * dgamma / m`` and ``c = -a * dbeta / m``. After a forward with ``relu=True``,
    ``grad_out`` is the gradient of the ReLU's output and ``dy = grad_out * [y > 0]`` is formed first,
    in the same pass.
    """
    centred, inv_std, relu_out = cache["centred"], cache["inv_std"], cache.get("relu_out")
    dy = _channel_rows(grad_out)
    c, m = dy.shape
    dx = empty(dy.shape, dy.dtype)
    dtype = dx.dtype

    def work(lo: int, hi: int) -> None:
        g, xc, inv, out = dy[lo:hi], centred[lo:hi], inv_std[lo:hi], dx[lo:hi]
        if relu_out is not None:
            g = np.multiply(g, relu_out[lo:hi] > 0, out=out)  # dx's block holds the masked dy for now
        dbeta = _row_sums(g)
        dgamma = _row_dots(g, xc) * inv
        grad_beta[lo:hi], grad_gamma[lo:hi] = dbeta, dgamma
        a = gamma[lo:hi] * inv
        b = (-a * inv * dgamma / m).astype(dtype)[:, None]
        shift = (-a * dbeta / m).astype(dtype)[:, None]
        if relu_out is None:
            np.multiply(xc, b, out=out)
            out += shift
            out += g * a.astype(dtype)[:, None]
        else:
            out *= a.astype(dtype)[:, None]
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


# ======================================================================================= activations


def relu_forward(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)``, elementwise, same memory layout as ``x``.

    Computed against a zero *array* on flat contiguous views: ``np.maximum`` with a scalar or a
    broadcast row is 2-3x slower.
    """
    y = empty_like_layout(x)
    flat = _flat(x, y)
    if flat is None:
        np.maximum(x, 0, out=y)
        return y
    xf, yf = flat
    zeros = _zeros_like_flat(xf.size, x.dtype)

    def work(lo: int, hi: int) -> None:
        np.maximum(xf[lo:hi], zeros[lo:hi], out=yf[lo:hi])

    parallel(work, xf.size, min_block=1 << 18)  # smaller arrays: a dispatch costs more than it saves
    return y


def relu_backward(grad_out: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``grad_out * [y > 0]`` where ``y`` is the ReLU output (``y > 0`` exactly where the input was)."""
    flat = _flat(grad_out, y)
    if flat is None:
        return grad_out * (y > 0)
    dx = empty_like_layout(grad_out)
    gf, yf = flat
    dxf = dx.ravel(order="K")

    def work(lo: int, hi: int) -> None:
        np.multiply(gf[lo:hi], yf[lo:hi] > 0, out=dxf[lo:hi])

    parallel(work, gf.size, min_block=1 << 18)
    return dx


# =========================================================================================== dropout


def dropout_mask(shape: tuple[int, ...], p: float, dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    """Inverted-dropout mask of ``shape``: ``1/(1-p)`` with probability ``1-p``, else 0, in ``dtype``.

    The uniform draws are made in ``dtype`` itself when it is float32/float64 (no float64 detour).
    """
    dtype = np.dtype(dtype)
    draw_dtype = dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)
    u = rng.random(shape, dtype=draw_dtype)
    mask = (u >= p).astype(dtype)
    mask *= dtype.type(1.0 / (1.0 - p))
    return mask
