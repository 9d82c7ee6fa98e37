"""The sweep's backends: how the runs a sweep has left to do are executed.

Each ``run_<backend>(todo, workers, options, report, echo)`` runs ``todo`` (pairs of index
and :class:`~plasticollapse.runs.spec.RunSpec`) and calls ``report(index, outcome)``
as each run ends; :func:`plasticollapse.runs.sweep.run_sweep` chooses one. See the sweep
module's docstring for what each backend is and why the process pool uses a forkserver.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any

from plasticollapse.runs.lock import RunLock
from plasticollapse.runs.outcomes import (
    ELSEWHERE,
    RunOutcome,
    Status,
    complete_note,
    divergence,
    summary_note,
)
from plasticollapse.runs.spec import RunSpec

#: Thread-count variables read by OpenMP, MKL, OpenBLAS and numba when they load.
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)


# --------------------------------------------------------------------------- one run


#: The lock of the run this process executes (for the SLURM checkpoint hook to release).
_HELD: RunLock | None = None


#: What :func:`execute_locked` returns across a process boundary: (status, seconds, error,
#: note, the exception's class name of a failure, whether the run's summary says diverged).
WorkerResult = tuple[str, float, "str | None", str, "str | None", bool]


def execute_locked(spec: RunSpec, threads: int | None = None) -> WorkerResult:
    """Execute one run under its lock, in whatever process the backend put us in.

    Returns ``(status, seconds, error, note)`` instead of raising, so that no exception has
    to cross a process boundary (some do not pickle; submitit's debug executor would drop
    into pdb). The spec's ``"module:attribute"`` target says which study runs it, so a
    study registered only in the parent (a user's, a test's) runs in workers too.
    """
    global _HELD
    start = time.perf_counter()
    wall_start = time.time()
    from plasticollapse.runs.execute import execute

    lock = RunLock(spec.folder)
    if not lock.acquire():
        return "skipped", 0.0, None, ELSEWHERE, None, False
    _HELD = lock
    try:
        status = execute(spec, threads=threads)
    except Exception as exc:
        _keep_traceback(spec, exc, since=wall_start)
        seconds, kind = time.perf_counter() - start, type(exc).__name__
        return "failed", seconds, f"{kind}: {exc}", "", kind, False
    finally:
        lock.release()
        _HELD = None
    diverged = divergence(spec)
    if status == "skipped":
        note = complete_note(spec)
    else:  # a diverged run says where; any run may add its summary's note
        note = "; ".join(filter(None, (diverged, summary_note(spec))))
    return status, time.perf_counter() - start, None, note, None, diverged is not None


def _keep_traceback(spec: RunSpec, exc: BaseException, since: float) -> None:
    """Write error.txt unless execute() already did (it cannot before the folder exists)."""
    path = Path(spec.folder) / "error.txt"
    if path.exists() and path.stat().st_mtime >= since - 1:
        return
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    _write_error(spec, text)


def _write_error(spec: RunSpec, text: str) -> None:
    from plasticollapse.runs.folder import atomic_write_text

    atomic_write_text(Path(spec.folder) / "error.txt", text)


def _record_death(spec: RunSpec, what: str, elsewhere: bool = False) -> str:
    """A worker died without reporting: say so in error.txt and free its lock; return ``what``.

    ``elsewhere``: the backend (Ray, SLURM) has confirmed that the task's process is gone,
    so its lock is freed even when held from another host, where its heartbeat would keep
    it looking live for :data:`STALE_AFTER_S`; a live pid on this host is never broken.
    """
    lock = RunLock(spec.folder)
    holder = lock.holder()
    who = f" (host {holder.get('host')}, pid {holder.get('pid')})" if holder else ""
    text = (
        f"{what}{who} while running {spec.folder}.\n"
        "No traceback exists: the process ended without raising (killed by a signal, out of\n"
        "memory, node failure or time limit). Rerunning the sweep resumes this run from its\n"
        "last checkpoint.\n"
    )
    _write_error(spec, text)
    remote = holder is not None and holder.get("host") != socket.gethostname()
    if not lock.is_live() or (elsewhere and remote):
        lock.path.unlink(missing_ok=True)
    return what


def available_cores() -> int:
    """Cores this process may use (its CPU affinity where the OS reports one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _outcome(spec: RunSpec, result: WorkerResult) -> RunOutcome:
    status, seconds, error, note, error_type, diverged = result
    return RunOutcome(spec, Status(status), seconds, error, note, error_type, diverged)


# --------------------------------------------------------------------------- serial


def run_serial(todo, workers, options, report, echo) -> None:
    for index, spec in todo:
        report(index, _outcome(spec, execute_locked(spec, None)))


# --------------------------------------------------------------------------- process


def _init_worker(threads: int) -> None:
    """Set a fresh worker's thread-count variables before its libraries read them.

    They reach whatever loads after this (numba, and torch under ``spawn``); torch preloaded
    by the fork server has read its environment already, so ``execute(threads=...)`` also
    pins torch's pools with ``torch.set_num_threads``.
    """
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(threads)


def _process_context(method: str | None):
    """The multiprocessing context for workers: forkserver with torch preloaded if possible."""
    import multiprocessing

    if method is None:
        available = multiprocessing.get_all_start_methods()
        method = "forkserver" if "forkserver" in available else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        # Takes effect when the (per-process) fork server starts; a server started earlier
        # without it still works, its workers just import torch themselves.
        context.set_forkserver_preload(["plasticollapse.runs.execute"])
    return context


def run_process(todo, workers, options, report, echo) -> None:
    cores = available_cores()
    n_workers = min(workers or cores, cores, len(todo))
    if workers and workers > cores:
        echo(f"sweep: {workers} workers asked, {cores} cores available: using {n_workers}")
    # Runs whose config sets threads use that many (config.json records it); the others
    # get an even share of the cores.
    threads = max(1, cores // n_workers)
    own = {int(spec.config.get("threads") or 0) for _, spec in todo}
    if len(own) == 1 and min(own) > 0:
        threads = own.pop()
    context = _process_context(options.get("start_method"))
    echo(f"sweep: {n_workers} worker processes x {threads} threads ({cores} cores)")

    if n_workers > 1:  # bars from several workers would interleave; the run lines suffice
        todo = [(index, _without_progress_bar(spec)) for index, spec in todo]
    queue = deque(todo)
    suspects: list[tuple[int, RunSpec]] = []
    while queue:
        suspects += _pool_pass(queue, n_workers, threads, context, report)
    # A worker death breaks the whole pool and kills every run in flight with it; run each
    # of those again alone, so only the run that really kills its worker is marked failed.
    for item in suspects:
        _pool_pass(deque([item]), 1, threads, context, report)


def _without_progress_bar(spec: RunSpec) -> RunSpec:
    """The same run with ``progress = false`` (an execution field: same folder, same run)."""
    if "progress" not in spec.config:
        return spec
    return dataclasses.replace(spec, config={**spec.config, "progress": False})


def _pool_pass(queue, n_workers, threads, context, report) -> list:
    """Run specs from ``queue`` in one pool until it empties or the pool breaks.

    Only ``n_workers`` runs are submitted at a time, so when a worker dies the runs caught
    in the broken pool are exactly the ones that were running. Returns those runs when the
    pool had several in flight; a run alone in a broken pool is reported failed here.
    """
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    running: dict[Any, tuple[int, RunSpec, float]] = {}
    broken: list[tuple[int, RunSpec, float]] = []
    pool = ProcessPoolExecutor(
        max_workers=n_workers, mp_context=context, initializer=_init_worker, initargs=(threads,)
    )
    try:
        while queue and len(running) < n_workers:
            index, spec = queue.popleft()
            future = pool.submit(execute_locked, spec, threads)
            running[future] = (index, spec, time.perf_counter())
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                index, spec, t0 = running.pop(future)
                try:
                    report(index, _outcome(spec, future.result()))
                except BrokenProcessPool:
                    broken.append((index, spec, t0))
                except Exception as exc:  # a result that did not come back (e.g. pickling)
                    kind = type(exc).__name__
                    report(index, RunOutcome(spec, Status.FAILED, 0.0, f"{kind}: {exc}", "", kind))
            while queue and len(running) < n_workers and not broken:
                index, spec = queue.popleft()
                try:
                    future = pool.submit(execute_locked, spec, threads)
                except BrokenProcessPool:
                    queue.appendleft((index, spec))
                    break
                running[future] = (index, spec, time.perf_counter())
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    if len(broken) == 1:
        index, spec, t0 = broken[0]
        error = _record_death(spec, "worker process died")
        report(index, RunOutcome(spec, Status.FAILED, time.perf_counter() - t0, error))
        return []
    return [(index, spec) for index, spec, _ in broken]


# --------------------------------------------------------------------------- ray


class MissingExtraError(ImportError, ValueError):
    """A backend's optional dependency is not installed (a ValueError too, so the CLI
    reports it as a one-line error rather than a traceback)."""


def import_extra(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"the {extra!r} backend needs {module}: pip install 'plasticollapse[{extra}]'"
        ) from e


def run_ray(todo, workers, options, report, echo) -> None:
    ray = import_extra("ray", "ray")
    started_here = False
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if address:
            echo(f"sweep: joining the Ray cluster at {address}")
            ray.init(address=address)
        else:
            echo("sweep: RAY_ADDRESS not set, starting a local Ray")
            ray.init(num_cpus=workers or available_cores(), include_dashboard=False)
        started_here = True
    cpus = float(options.get("cpus") or 1)
    gpus = float(options.get("gpus") or 0)
    threads = max(1, int(cpus))
    task = ray.remote(execute_locked).options(
        num_cpus=cpus, num_gpus=gpus, max_retries=int(options.get("max_retries", 0))
    )
    queue = deque(todo)
    limit = workers or len(todo)
    in_flight: dict[Any, tuple[int, RunSpec, float]] = {}
    try:
        while queue or in_flight:
            while queue and len(in_flight) < limit:
                index, spec = queue.popleft()
                ref = task.remote(spec, threads)
                in_flight[ref] = (index, spec, time.perf_counter())
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            index, spec, t0 = in_flight.pop(ready[0])
            try:
                report(index, _outcome(spec, ray.get(ready[0])))
            except ray.exceptions.RayError as exc:  # worker or node died, task cancelled
                error = _record_death(spec, f"Ray task ended without a result: {exc}", True)
                report(index, RunOutcome(spec, Status.FAILED, time.perf_counter() - t0, error))
    except BaseException:
        for ref in in_flight:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()


# --------------------------------------------------------------------------- slurm


class SlurmRun:
    """The callable a SLURM job runs: :func:`execute_locked`, requeued on time limit.

    submitit calls :meth:`checkpoint` when the job is about to hit its time limit or is
    preempted; the run folder already holds the training checkpoint, so the requeued job
    only needs the same arguments. The run's lock is released first, so that the requeued
    job (maybe on another node) does not find it held.
    """

    def __call__(self, spec, threads, registry=None):
        # ``registry``: what jobs submitted before specs carried their study target passed
        # (a requeued job calls with its old arguments); the target now says it
        if not spec.study and registry and spec.experiment in registry:
            spec = dataclasses.replace(spec, study=registry[spec.experiment])
        return execute_locked(spec, threads)

    def checkpoint(self, spec, threads, registry=None):
        from submitit.helpers import DelayedSubmission

        if _HELD is not None:
            _HELD.release()
        return DelayedSubmission(self, spec, threads)


def run_slurm(todo, workers, options, report, echo) -> None:
    submitit = import_extra("submitit", "slurm")
    specs = [spec for _, spec in todo]
    out = Path(
        options.get("out") or os.path.commonpath([str(Path(s.folder).parent) for s in specs])
    )
    logs = out / "slurm_logs"
    cluster = options.get("slurm_cluster")
    executor = submitit.AutoExecutor(folder=logs / "%j", cluster=cluster)
    cpus = max(1, math.ceil(float(options.get("cpus") or 1)))
    gpus = math.ceil(float(options.get("gpus") or 0))
    executor.update_parameters(
        name="plasticollapse",
        timeout_min=int(options.get("time_min") or 240),
        cpus_per_task=cpus,
        gpus_per_node=gpus,
        slurm_partition=options.get("partition"),
        slurm_array_parallelism=int(workers or options.get("array_parallelism") or 64),
    )
    n = len(specs)
    jobs = executor.map_array(SlurmRun(), specs, [cpus] * n)
    echo(f"sweep: submitted {n} jobs ({executor.cluster}); logs in {logs}")
    pending = {job: item for job, item in zip(jobs, todo, strict=True)}
    submitted = time.perf_counter()
    poll = float(options.get("poll_s", 10))
    while pending:
        for job in list(pending):
            if not job.done():
                continue
            index, spec = pending.pop(job)
            try:
                report(index, _outcome(spec, job.result()))
            except Exception as exc:  # timeout, cancelled, node failure: no result pickle
                what = f"job {job.job_id} ended without a result ({type(exc).__name__})"
                error = _record_death(spec, f"{what}; its log: {job.paths.stderr}", True)
                report(
                    index, RunOutcome(spec, Status.FAILED, time.perf_counter() - submitted, error)
                )
        if pending:
            time.sleep(poll)
