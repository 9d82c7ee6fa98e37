"""metrics.threads: the metrics' CPU work on one thread, the caller's settings restored."""

from __future__ import annotations

import threading

import pytest
import torch

from plasticollapse.metrics.collapse import CollapseAccumulator, collapse_metrics
from plasticollapse.metrics.plasticity import UnitStatistics
from plasticollapse.metrics.threads import blas_pools, one_thread


@pytest.fixture
def two_threads():
    """torch and the BLAS pools on 2 threads for the test, then back as they were."""
    before = torch.get_num_threads(), [p.get_num_threads() for p in blas_pools()]
    torch.set_num_threads(2)
    for pool in blas_pools():
        pool.set_num_threads(2)
    yield
    torch.set_num_threads(before[0])
    for pool, n in zip(blas_pools(), before[1], strict=True):
        pool.set_num_threads(n)


def pool_threads() -> tuple[int, list[int]]:
    return torch.get_num_threads(), [p.get_num_threads() for p in blas_pools()]


def test_blas_pools_include_scipys_openblas():
    # the grams call SciPy's dsyrk: its pool must be among those one_thread sets
    assert any("scipy" in p.filepath for p in blas_pools())


def test_one_thread_inside_and_restored_after_an_error(two_threads):
    with pytest.raises(RuntimeError, match="inside"), one_thread():
        assert pool_threads() == (1, [1] * len(blas_pools()))
        with one_thread():  # nested: still 1, and the outer one's 1 after
            pass
        assert pool_threads() == (1, [1] * len(blas_pools()))
        raise RuntimeError("inside")
    assert pool_threads() == (2, [2] * len(blas_pools()))


def test_a_block_on_another_thread_does_not_change_this_threads_blocks(two_threads):
    # A background Monitor measures on its worker while the training thread opens a block
    # of its own. The worker's block opens first and closes first: the training thread's
    # block must still be on one thread, and its 2 threads come back when it closes. (With
    # one counter for the process, the training thread's block counted as nested and set
    # nothing, and the lost update left the counter negative for the rest of the process.)
    opened, main_inside, worker_closed = (threading.Event() for _ in range(3))
    seen = {}

    def worker():
        with one_thread():
            seen["worker inside"] = pool_threads()
            opened.set()
            main_inside.wait(5)
        worker_closed.set()

    thread = threading.Thread(target=worker)
    thread.start()
    opened.wait(5)
    with one_thread():
        main_inside.set()
        worker_closed.wait(5)
        seen["main after the worker closed"] = pool_threads()
    thread.join(5)
    assert seen["worker inside"][0] == 1  # torch's pool: per thread (OpenMP)
    assert seen["main after the worker closed"] == (1, [1] * len(blas_pools()))
    assert pool_threads() == (2, [2] * len(blas_pools()))
    with one_thread():  # nothing left open on this thread: a new block sets 1 again
        assert pool_threads() == (1, [1] * len(blas_pools()))
    assert pool_threads() == (2, [2] * len(blas_pools()))


def _data(n=3000, d=40, c=5):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, c, (n,), generator=g)
    x = (torch.randn(c, d, generator=g)[y] + torch.randn(n, d, generator=g)).float()
    return x, y, torch.randn(c, d, generator=g), torch.randn(c, generator=g)


def test_metrics_leave_the_callers_threads_and_do_not_depend_on_them(two_threads):
    x, y, w, b = _data()
    at_two = collapse_metrics(x, y, 5, weight=w, bias=b)
    assert pool_threads() == (2, [2] * len(blas_pools()))
    acc = CollapseAccumulator(5, x.shape[1])
    acc.update(x, y)
    units = UnitStatistics()
    units.update(x.relu())
    streamed, ranks = acc.compute(w, b), units.compute()
    assert pool_threads() == (2, [2] * len(blas_pools()))
    torch.set_num_threads(1)
    # the same arithmetic on one thread, so bit for bit the same numbers
    assert collapse_metrics(x, y, 5, weight=w, bias=b) == at_two
    assert streamed == at_two
    again = UnitStatistics()
    again.update(x.relu())
    assert again.compute() == ranks
