"""Sweeps: run many :class:`~plasticollapse.studies.base.RunSpec` s, resumably, on any backend.

``run_sweep(specs, backend=...)`` first classifies every run by its folder (complete runs are
skipped without launching anything; partial ones resume from their checkpoint), then runs the
rest on one of four backends and returns a :class:`SweepResult` (printing a line per run as it
finishes and a table at the end):

``serial``   in this process, one run after another.
``process``  a local pool of fresh processes (``workers`` runs at once, each pinned to
             ``cores // workers`` threads so the machine is never oversubscribed).
``ray``      Ray tasks on the cluster at ``RAY_ADDRESS``, or on a local Ray started here.
``slurm``    a SLURM job array through submitit (logs under ``<out>/slurm_logs``).

Failures are isolated: a run that raises is reported ``failed`` (its traceback is in its
folder's ``error.txt``) while the others go on; a run whose worker process died (killed, out of
memory) gets an ``error.txt`` written here saying so. ``SweepResult.ok`` is False when any run
failed, and the command exits non-zero.

Two sweeps started on the same ``--out`` never run one folder twice: a worker takes the run's
``.lock`` file (created with ``O_CREAT | O_EXCL``) before executing it, and a run whose lock is
held by a live process is reported ``skipped`` with the note ``running elsewhere`` (it is not
waited for: rerun the sweep later to pick up its result). A lock is stale, and broken, when its
holder was on this host and its pid is dead, or when its heartbeat (the holder touches the file
every :data:`HEARTBEAT_S` seconds) is older than :data:`STALE_AFTER_S` seconds, which covers
holders on other hosts (Ray, SLURM) that died without cleaning up.

Why forkserver: workers must not be forked from this process (torch and OpenMP state do
not survive ``fork`` once used), and ``spawn`` makes every worker import torch again (about
2 s each on a busy 2-core machine, paid again for each pool rebuilt after a worker death).
A forkserver that has imported torch once, and never used it, forks clean workers in
milliseconds: the process-backend test with a dying worker takes 3 s instead of 18 s.
``options["start_method"] = "spawn"`` is the fallback, and the default where forkserver does
not exist (Windows).

This module imports neither torch nor the experiments at import time, so that a spawned
worker sets its thread environment variables before torch is loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# parse_seeds lives with the other config parsing; sweep re-exports it for older imports.
from plasticollapse.runs.config import parse_seeds  # noqa: F401

if TYPE_CHECKING:  # pragma: no cover - typing only; the real import would load torch
    from plasticollapse.studies.base import RunSpec

BACKENDS = ("serial", "process", "ray", "slurm")
STATUSES = ("done", "resumed", "skipped", "failed")
#: backend -> (module it needs, the package extra that installs it)
EXTRAS = {"ray": ("ray", "ray"), "slurm": ("submitit", "slurm")}

#: Name of the lock file inside a run folder.
LOCK = ".lock"
#: How often a lock holder refreshes its lock's mtime.
HEARTBEAT_S = 30.0
#: A lock whose mtime is older than this is stale whoever holds it (10 missed heartbeats).
STALE_AFTER_S = 300.0

#: Thread-count variables read by OpenMP, MKL, OpenBLAS and numba when they load.
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)


# --------------------------------------------------------------------------- results


@dataclass
class RunOutcome:
    """What happened to one run of a sweep."""

    spec: RunSpec
    status: str  # one of STATUSES
    seconds: float = 0.0
    error: str | None = None  # "ExceptionType: message" of a failed run
    note: str = ""  # why it was skipped ("complete", "running elsewhere"), or where to look

    @property
    def folder(self) -> str:
        return self.spec.folder


@dataclass
class SweepResult:
    """Per-run outcomes in plan order, with totals. ``ok`` is False when any run failed."""

    outcomes: list[RunOutcome]
    backend: str = "serial"
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and not self.failed

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def counts(self) -> dict[str, int]:
        """Runs per status, every status present (zero when none)."""
        counts = dict.fromkeys(STATUSES, 0)
        for outcome in self.outcomes:
            counts[outcome.status] += 1
        return counts

    def table(self) -> str:
        """One line per run (status, seconds, folder, note or error) and a totals line."""
        width = max([len("run folder")] + [len(o.folder) for o in self.outcomes])
        lines = [f"{'status':<8} {'seconds':>8}  {'run folder':<{width}}  note"]
        for o in self.outcomes:
            note = o.note
            if o.status == "failed":
                note = f"{o.error}  (see {Path(o.folder) / 'error.txt'})"
            lines.append(f"{o.status:<8} {o.seconds:>8.1f}  {o.folder:<{width}}  {note}".rstrip())
        totals = ", ".join(f"{n} {status}" for status, n in self.counts.items())
        tail = "; interrupted" if self.interrupted else ""
        lines.append(
            f"total: {totals} of {len(self.outcomes)} runs in {self.seconds:.1f} s "
            f"({self.backend}){tail}"
        )
        return "\n".join(lines)


# --------------------------------------------------------------------------- locks


class RunLock:
    """An exclusive ``.lock`` file in a run folder, refreshed by a heartbeat while held.

    The file holds ``{"host", "pid", "since"}`` of its holder as JSON. :meth:`acquire` is
    atomic (``O_CREAT | O_EXCL``, atomic on local file systems and NFSv3+); breaking a stale
    lock renames it aside first and checks it renamed the lock it judged stale.
    """

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self.held = False

    def acquire(self) -> bool:
        """Take the lock; False when a live holder has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._break_if_stale():
                    return False
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(
                    {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}, f
                )
            self.held = True
            self._stop.clear()
            self._heartbeat = threading.Thread(target=self._beat, name="run-lock", daemon=True)
            self._heartbeat.start()
            return True
        return False

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        self.path.unlink(missing_ok=True)
        self.held = False

    def holder(self) -> dict[str, Any] | None:
        """The holder's record, or None when unlocked (or the record is unreadable)."""
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def is_live(self) -> bool:
        """True when the lock exists and is not stale."""
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False
        return not _is_stale(self.holder(), age)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:  # folder removed under us: nothing left to keep alive
                return

    def _break_if_stale(self) -> bool:
        """Remove a stale lock; True when the caller should retry taking it."""
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True  # released meanwhile
        judged = self.holder()
        if not _is_stale(judged, age):
            return False
        aside = self.path.with_name(f"{LOCK}.stale.{socket.gethostname()}.{os.getpid()}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return True
        # Another breaker may have broken it and a new holder taken it between our look and
        # our rename: then we moved a live lock, and give it back.
        if _read_json(aside) != judged:
            with contextlib.suppress(OSError):  # a newer holder already took it: leave it
                os.link(aside, self.path)
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _is_stale(holder: dict[str, Any] | None, age_s: float) -> bool:
    if age_s > STALE_AFTER_S:
        return True
    if holder is None:  # being written right now, or a holder died mid-write: wait for age
        return False
    if holder.get("host") == socket.gethostname():
        return not _pid_alive(int(holder.get("pid", -1)))
    return False


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


# --------------------------------------------------------------------------- one run


#: The lock of the run this process executes (for the SLURM checkpoint hook to release).
_HELD: RunLock | None = None


def execute_locked(
    spec: RunSpec, threads: int | None = None, registry: dict[str, str] | None = None
) -> tuple[str, float, str | None, str]:
    """Execute one run under its lock, in whatever process the backend put us in.

    Returns ``(status, seconds, error, note)`` instead of raising, so that no exception has
    to cross a process boundary (some do not pickle; submitit's debug executor would drop
    into pdb). ``registry`` adds studies the parent knows (``name -> "module:attribute"``) to
    this process's :data:`~plasticollapse.studies.REGISTRY`, so user-registered studies work
    in workers too.
    """
    global _HELD
    start = time.perf_counter()
    wall_start = time.time()
    from plasticollapse import studies
    from plasticollapse.studies.base import execute

    for name, target in (registry or {}).items():
        studies.register(name, target)
    lock = RunLock(spec.folder)
    if not lock.acquire():
        return "skipped", 0.0, None, "running elsewhere"
    _HELD = lock
    try:
        status = execute(spec, threads=threads)
    except Exception as exc:
        _keep_traceback(spec, exc, since=wall_start)
        return "failed", time.perf_counter() - start, f"{type(exc).__name__}: {exc}", ""
    finally:
        lock.release()
        _HELD = None
    note = "complete" if status == "skipped" else ""
    return status, time.perf_counter() - start, None, note


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


# --------------------------------------------------------------------------- the sweep


def _estimated_cost(spec: RunSpec) -> float:
    """The experiment's ``estimated_cost(config)`` (relative units), or 0 when it has none."""
    from plasticollapse.studies import get_study

    try:
        return float(get_study(spec.experiment).estimated_cost(spec.config))
    except (ImportError, ValueError, TypeError):
        return 0.0


def run_sweep(
    specs: list[RunSpec],
    backend: str = "serial",
    workers: int | None = None,
    options: dict[str, Any] | None = None,
    echo: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run every spec that is not complete; print a line per run and a table at the end.

    ``workers``: runs at once (process: default ``min(cores, runs to do)``; ray: at most this
    many tasks in flight; slurm: the array parallelism). ``options`` (all optional):

    - ``cpus``, ``gpus``: resources per run (ray: fractional allowed; slurm: rounded up).
    - ``partition``, ``time_min``, ``array_parallelism``: SLURM job settings.
    - ``slurm_cluster``: submitit executor: None picks SLURM when present; ``"local"``
      (subprocesses) or ``"debug"`` (in this process) run the same code path without SLURM.
    - ``poll_s``: how often the slurm backend checks its jobs (default 10 s).
    - ``start_method``: the process backend's multiprocessing start method (default
      ``"forkserver"`` preloading torch, or ``"spawn"`` where there is no forkserver).
    - ``max_retries``: ray task retries after a worker crash (default 0).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    options = dict(options or {})
    echo = echo or _print
    if backend in EXTRAS:  # fail before anything runs, with the extra to install
        _import_extra(*EXTRAS[backend])
    started = time.perf_counter()
    outcomes: dict[int, RunOutcome] = {}
    todo: list[tuple[int, RunSpec]] = []

    from plasticollapse.studies import REGISTRY
    from plasticollapse.studies.base import run_status

    partial = 0
    for index, spec in enumerate(specs):
        status = run_status(spec)
        if status == "complete":
            outcomes[index] = RunOutcome(spec, "skipped", note="complete")
        elif RunLock(spec.folder).is_live():
            outcomes[index] = RunOutcome(spec, "skipped", note="running elsewhere")
        else:
            partial += status == "partial"
            todo.append((index, spec))
    # Longest runs first: a long run started last would leave the other workers idle.
    todo.sort(key=lambda item: -_estimated_cost(item[1]))
    echo(
        f"sweep: {len(specs)} runs: {len(specs) - len(todo)} skipped, {partial} to resume, "
        f"{len(todo) - partial} new; backend {backend}"
    )

    finished = [len(specs) - len(todo)]

    def report(index: int, outcome: RunOutcome) -> None:
        outcome.spec = specs[index]  # the caller's spec, even if a backend shipped a variant
        outcomes[index] = outcome
        finished[0] += 1
        extra = outcome.error if outcome.status == "failed" else outcome.note
        echo(
            f"[{finished[0]:>{len(str(len(specs)))}}/{len(specs)}] {outcome.status:<8}"
            f"{outcome.seconds:>8.1f} s  {outcome.folder}  {extra}".rstrip()
        )

    registry = {s.experiment: REGISTRY[s.experiment] for _, s in todo if s.experiment in REGISTRY}
    runner = {"serial": _run_serial, "process": _run_process, "ray": _run_ray, "slurm": _run_slurm}
    interrupted = False
    try:
        if todo:
            runner[backend](todo, workers, options, registry, report, echo)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        result = SweepResult(
            [outcomes[i] for i in sorted(outcomes)],
            backend=backend,
            seconds=time.perf_counter() - started,
            interrupted=interrupted,
        )
        if interrupted:
            echo("sweep interrupted; rerun the same command to resume. Finished so far:")
        echo(result.table())
    return result


def _print(text: str) -> None:
    print(text, flush=True)


def available_cores() -> int:
    """Cores this process may use (its CPU affinity where the OS reports one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _outcome(spec: RunSpec, result: tuple[str, float, str | None, str]) -> RunOutcome:
    status, seconds, error, note = result
    return RunOutcome(spec, status, seconds, error, note)


# --------------------------------------------------------------------------- serial


def _run_serial(todo, workers, options, registry, report, echo) -> None:
    for index, spec in todo:
        report(index, _outcome(spec, execute_locked(spec, None, registry)))


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
        context.set_forkserver_preload(["plasticollapse.studies.base"])
    return context


def _run_process(todo, workers, options, registry, report, echo) -> None:
    cores = available_cores()
    n_workers = min(workers or cores, cores, len(todo))
    if workers and workers > cores:
        echo(f"sweep: {workers} workers asked, {cores} cores available: using {n_workers}")
    threads = max(1, cores // n_workers)
    context = _process_context(options.get("start_method"))
    echo(f"sweep: {n_workers} worker processes x {threads} threads ({cores} cores)")

    if n_workers > 1:  # bars from several workers would interleave; the run lines suffice
        todo = [(index, _without_progress_bar(spec)) for index, spec in todo]
    queue = deque(todo)
    suspects: list[tuple[int, RunSpec]] = []
    while queue:
        suspects += _pool_pass(queue, n_workers, threads, context, registry, report)
    # A worker death breaks the whole pool and kills every run in flight with it; run each
    # of those again alone, so only the run that really kills its worker is marked failed.
    for item in suspects:
        _pool_pass(deque([item]), 1, threads, context, registry, report)


def _without_progress_bar(spec: RunSpec) -> RunSpec:
    """The same run with ``progress = false`` (an execution field: same folder, same run)."""
    if "progress" not in spec.config:
        return spec
    return dataclasses.replace(spec, config={**spec.config, "progress": False})


def _pool_pass(queue, n_workers, threads, context, registry, report) -> list:
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
            future = pool.submit(execute_locked, spec, threads, registry)
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
                    report(index, RunOutcome(spec, "failed", 0.0, f"{type(exc).__name__}: {exc}"))
            while queue and len(running) < n_workers and not broken:
                index, spec = queue.popleft()
                try:
                    future = pool.submit(execute_locked, spec, threads, registry)
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
        report(index, RunOutcome(spec, "failed", time.perf_counter() - t0, error))
        return []
    return [(index, spec) for index, spec, _ in broken]


# --------------------------------------------------------------------------- ray


class MissingExtraError(ImportError, ValueError):
    """A backend's optional dependency is not installed (a ValueError too, so the CLI
    reports it as a one-line error rather than a traceback)."""


def _import_extra(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"the {extra!r} backend needs {module}: pip install 'plasticollapse[{extra}]'"
        ) from e


def _run_ray(todo, workers, options, registry, report, echo) -> None:
    ray = _import_extra("ray", "ray")
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
                ref = task.remote(spec, threads, registry)
                in_flight[ref] = (index, spec, time.perf_counter())
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            index, spec, t0 = in_flight.pop(ready[0])
            try:
                report(index, _outcome(spec, ray.get(ready[0])))
            except ray.exceptions.RayError as exc:  # worker or node died, task cancelled
                error = _record_death(spec, f"Ray task ended without a result: {exc}", True)
                report(index, RunOutcome(spec, "failed", time.perf_counter() - t0, error))
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

    def __call__(self, spec, threads, registry):
        return execute_locked(spec, threads, registry)

    def checkpoint(self, spec, threads, registry):
        from submitit.helpers import DelayedSubmission

        if _HELD is not None:
            _HELD.release()
        return DelayedSubmission(self, spec, threads, registry)


def _run_slurm(todo, workers, options, registry, report, echo) -> None:
    submitit = _import_extra("submitit", "slurm")
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
    jobs = executor.map_array(SlurmRun(), specs, [cpus] * n, [registry] * n)
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
                report(index, RunOutcome(spec, "failed", time.perf_counter() - submitted, error))
        if pending:
            time.sleep(poll)
