"""Run the metrics' CPU work on one thread: torch's pool and the BLAS pools, for a moment.

Why. Streaming metrics alternate, batch after batch, between small torch operations
(conversions, scatter-adds, a subtraction: memory-bound, ~1 ms each) and one float64 BLAS
call (SciPy's OpenBLAS ``dsyrk``, :class:`~plasticollapse.metrics.gram.SyrkGram`). At
torch's default thread count those are two thread pools of T threads each: OpenBLAS's
workers keep spinning after each call while torch's OpenMP team works, and every small
torch operation ends at a barrier that waits for its slowest (descheduled) thread. On two
cores shared with other jobs (load ~13), ``benchmarks/collapse_speed.py`` timed
``collapse_metrics`` on 60,000 x 512 float32 features at torch's default 2 threads: 23.0 s
wall (7.2 s CPU) streamed at those threads, 4.3 s (1.4 s CPU) on one thread, one float64
``H^T H`` at 2 threads 4.3 s (1.3 s CPU). In a separate trial, giving only the gram the
2 threads (torch's operations on one, so never two pools busy at once) was still 2.3x
slower than one thread: the spinning workers and the barriers cost, not the pool count.

So every streaming entry point (:func:`~plasticollapse.metrics.collapse.collapse_metrics`,
``CollapseAccumulator.update``/``compute``, ``UnitStatistics.update``/``compute``) runs
inside :func:`one_thread`, which sets torch's intra-op threads and every loaded BLAS pool
to 1 and restores the caller's settings on exit. A model's own forward pass (in
:func:`~plasticollapse.metrics.measure.measure_model`) keeps the caller's threads. The
cost is the gram's parallelism on a many-core machine that nothing else uses; there a
caller who wants it can stream on a GPU, where none of this applies.

Setting and restoring the pools costs ~50 us (threadpoolctl's library handles are looked
up once; its ``threadpool_limits`` looks them up on every call, ~5 ms), and a nested use
nothing, so ``measure_model`` switches once per batch.

Threads. Each Python thread counts its own open blocks and saves and restores its own
settings: torch's ``set_num_threads`` sets the calling thread's OpenMP team size (a worker
thread's call leaves the main thread's at 2), and so, seen from threadpoolctl, does
OpenBLAS's once the main thread has set it. A process-wide counter was wrong both ways:
a ``Monitor(background=True)`` measuring on its worker made the training thread's own
block a "nested" one that set nothing, and the unlocked counter, lost to that race, went
negative and left every later block of the process at the caller's threads.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch

_F = TypeVar("_F", bound=Callable)
_blas_pools: list | None = None  # threadpoolctl LibControllers of the BLAS libraries
_open = threading.local()  # .blocks: how many one_thread() blocks this thread has open


def blas_pools() -> list:
    """threadpoolctl's controllers of the BLAS libraries loaded in this process, SciPy's
    (whose ``dsyrk`` the grams call) included; found once and kept."""
    global _blas_pools
    if _blas_pools is None:
        import scipy.linalg.blas  # noqa: F401 - load SciPy's BLAS before looking it up
        from threadpoolctl import ThreadpoolController

        _blas_pools = ThreadpoolController().select(user_api="blas").lib_controllers
    return _blas_pools


@contextmanager
def one_thread() -> Iterator[None]:
    """Inside: torch's intra-op pool and every BLAS pool on 1 thread. On exit from a
    thread's outermost block each is put back to the thread count it had; a nested block
    changes nothing (~1 us, against ~50 us to set and restore the pools)."""
    blocks = getattr(_open, "blocks", 0)
    _open.blocks = blocks + 1
    try:
        if blocks:
            yield
            return
        pools = blas_pools()
        torch_threads = torch.get_num_threads()
        blas_threads = [pool.get_num_threads() for pool in pools]
        torch.set_num_threads(1)
        for pool in pools:
            pool.set_num_threads(1)
        try:
            yield
        finally:
            for pool, n in zip(pools, blas_threads, strict=True):
                if n is not None:
                    pool.set_num_threads(n)
            torch.set_num_threads(torch_threads)
    finally:
        _open.blocks = blocks


def on_one_thread(fn: _F) -> _F:
    """Decorator: ``fn`` runs inside :func:`one_thread`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with one_thread():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
