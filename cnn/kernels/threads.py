"""The kernels' thread pool: contiguous blocks or chunks of work over a few persistent threads.

NumPy releases the GIL inside its loops and BLAS, so threads give real parallelism. :func:`parallel`
splits ``range(n)`` into one contiguous block per thread; :func:`parallel_chunks` hands out fixed-size
chunks to whichever thread is free. Both return the results in block (chunk) order, and the blocks
depend only on the sizes, so results are deterministic whatever the timing. BLAS is held at one thread
per worker while the pool runs (:func:`blas_held`). ``set_num_threads(1)`` turns the pool off. Why and
what was measured: ``docs/library.md``, "How it is fast".
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

import numpy as np

from cnn.errors import CNNError

T = TypeVar("T")


def _default_num_threads() -> int:
    """``CNN_NUM_THREADS`` if set (a clear error if not an int), else the CPUs this process may use."""
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

    Lighter than ``concurrent.futures`` (a semaphore pair per worker), which matters with ~40 dispatches
    per training step.
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
    """Per-thread flag: True inside a pool worker, where nested kernel calls run inline."""

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
    """threadpoolctl's controller of the loaded BLAS libraries (found once), or False without it."""
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

    Talks to the BLAS libraries' own setters (threadpoolctl found them once), several times cheaper
    than ``threadpool_limits``."""
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
    with _blas_single_threaded() as ok:
        _held.append(ok)
        try:
            yield
        finally:
            _held.pop()


_held: list[bool] = []
"""What each active :func:`blas_held` found (True: BLAS is held at one thread), innermost last. While one
is active, :func:`parallel` takes its answer instead of setting and restoring the BLAS threads again
(~2.4 us per dispatch, ~24 dispatches per training step)."""


_MIN_TASK = 1 << 16
"""Fewest elements (or multiply-adds) per thread worth a dispatch: waking a worker costs about what
NumPy needs for ~64K elements; smaller work (the classifier's (N, 128) batch norm, the last dense layer)
runs inline."""


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
        with nullcontext(_held[-1]) if _held else _blas_single_threaded() as ok:
            if parts <= 1 or not ok:  # without control over BLAS threads, one Python thread is safe
                return [work(0, n)]
            blocks = split(n, parts)
            results: list[Any] = [None] * len(blocks)

            def task(k: int) -> None:
                results[k] = work(*blocks[k])

            pool.run([functools.partial(task, k) for k in range(len(blocks))])
            return results
    finally:
        pool.lock.release()


def parallel_chunks(work: Callable[[int, int, int], T], n: int, chunk: int) -> list[T]:
    """Call ``work(slot, lo, hi)`` for the chunks ``[lo, hi)`` of ``range(n)`` (``chunk`` items each, the
    last one shorter), handed out one at a time to whichever thread is free; return the results in chunk
    order. ``slot`` numbers the calling thread (0 = the caller), for per-thread scratch buffers.

    Unlike :func:`parallel`'s fixed halves, a thread that starts late (a worker wakes well after the
    caller) or runs slower simply takes fewer chunks. Results stay deterministic: each chunk's result
    is the same whichever thread computes it, and callers combine them in chunk order.
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
