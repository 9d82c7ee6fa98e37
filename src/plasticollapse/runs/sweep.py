"""Sweeps: run many :class:`~plasticollapse.runs.spec.RunSpec` s, resumably, on any backend.

``run_sweep(specs, backend=...)`` first classifies every run by its folder (complete runs are
skipped without launching anything; partial ones resume from their checkpoint), then runs the
rest on one of four backends and returns a :class:`SweepResult` (printing a line per run as it
finishes and a table at the end):

``serial``   in this process, one run after another.
``process``  a local pool of fresh processes (``workers`` runs at once, each pinned to
             ``cores // workers`` threads so the machine is never oversubscribed, unless
             the run's config sets ``threads``: then exactly that many).
``ray``      Ray tasks on the cluster at ``RAY_ADDRESS``, or on a local Ray started here.
``slurm``    a SLURM job array through submitit (logs under ``<out>/slurm_logs``).

Failures are isolated: a run that raises is reported ``failed`` (its traceback is in its
folder's ``error.txt``) while the others go on; a run whose worker process died (killed, out of
memory) gets an ``error.txt`` written here saying so. ``SweepResult.ok`` is False when any run
failed.

Two sweeps started on the same ``--out`` never run one folder twice: a worker takes the run's
``.lock`` file (created with ``O_CREAT | O_EXCL``) before executing it, and a run whose lock is
held by a live process is reported ``skipped`` with the note ``running elsewhere``. It is not
waited for unless ``run_sweep(..., wait=True)`` (``--wait``): then, after its own runs, the
sweep polls those locks and runs each such run here once its lock is free or stale (or counts
it complete when its holder completed it). A lock is stale, and broken, when its holder was on
this host and is gone, a zombie (killed, not yet reaped), or a newer process that reused its
pid; or when its heartbeat (the holder touches the file every :data:`HEARTBEAT_S` seconds) is
older than :data:`STALE_AFTER_S` seconds, which covers holders on other hosts (Ray, SLURM) that
died without cleaning up.

Before anything runs (:mod:`plasticollapse.runs.preflight`), :func:`preflight` checks what
would make every run fail: each run's ``out`` folder must be writable, and a device the runs
name (``cuda``) must exist here when they run here (serial, process). Then, for the runs left
to do, a line says so when a GPU-scale study will train on the CPU (with its estimated CPU
time), and each dataset they need is found or downloaded once (a dataset that cannot be had
fails there, with one message; exit 2). A run that ends with summary status ``diverged`` is
reported ``diverged``, both when it ends and when a later sweep finds it complete; a run whose
summary.json has a ``note`` (a threshold run stopped at its safety cap) shows it beside it.

``SweepResult.exit_code`` is what the command exits with: :data:`EXIT_COMPLETE` (0) when every
run is complete; :data:`EXIT_FAILED` (1) when a run failed; :data:`EXIT_CONFIG` (2) when
every failed run failed on a config error found once its data was loaded (``train_samples``
above the dataset's size, say), as the command line exits for usage and config errors;
:data:`EXIT_ELSEWHERE` (3) when nothing failed but some runs are still running elsewhere
(rerun, or wait for them); :data:`EXIT_DIVERGED` (4) when every run ended but some diverged
(their rows up to the divergence are kept; rerunning does not change them).

Why forkserver: workers must not be forked from this process (torch and OpenMP state do
not survive ``fork`` once used), and ``spawn`` makes every worker import torch again (about
2 s each on a busy 2-core machine, paid again for each pool rebuilt after a worker death).
A forkserver that has imported torch once, and never used it, forks clean workers in
milliseconds: the process-backend test with a dying worker takes 3 s instead of 18 s.
``options["start_method"] = "spawn"`` is the fallback, and the default where forkserver does
not exist (Windows).

Every spec names its study as ``"module:attribute"`` (``RunSpec.study``, filled in by
:func:`plasticollapse.studies.base.plan`): a worker imports the study from it, so this floor
never reads the study registry. This module imports neither torch nor the studies at import
time, so that a spawned worker sets its thread environment variables before torch is loaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plasticollapse.runs import backends

# parse_seeds lives with the other config parsing; sweep re-exports it for older imports.
from plasticollapse.runs.config import parse_seeds  # noqa: F401
from plasticollapse.runs.lock import RunLock

# What happened to each run is its own module (the backends report it); importable from here.
from plasticollapse.runs.outcomes import (  # noqa: F401
    COMPLETE,
    DIVERGED_SUFFIX,
    ELSEWHERE,
    STATUSES,
    RunOutcome,
    Status,
    complete_note,
    divergence,
    summary_note,
)
from plasticollapse.runs.preflight import cpu_notice, preflight, prepare_data
from plasticollapse.runs.spec import MissingTargetError, RunSpec, load_study, run_status

BACKENDS = ("serial", "process", "ray", "slurm")


#: backend -> (module it needs, the package extra that installs it)
EXTRAS = {"ray": ("ray", "ray"), "slurm": ("submitit", "slurm")}

#: Exit statuses (``SweepResult.exit_code``): every run complete; a run failed (or the sweep
#: was interrupted); every failure is a config error (as the command line's usage and
#: config errors); nothing failed but some runs are still running elsewhere, unfinished;
#: every run ended but some diverged.
EXIT_COMPLETE, EXIT_FAILED, EXIT_CONFIG, EXIT_ELSEWHERE, EXIT_DIVERGED = 0, 1, 2, 3, 4
#: How often ``run_sweep(wait=True)`` checks the locks of runs running elsewhere.
WAIT_POLL_S = 2.0


# --------------------------------------------------------------------------- results


@dataclass
class SweepResult:
    """Per-run outcomes in plan order, with totals.

    ``ok`` is False when any run failed; ``complete`` is True only when every run is complete
    (nothing failed and nothing is still running elsewhere); ``exit_code`` tells them apart.
    """

    outcomes: list[RunOutcome]
    backend: str = "serial"
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and not self.failed

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status is Status.FAILED]

    @property
    def elsewhere(self) -> list[RunOutcome]:
        """Runs skipped because another process holds them: unfinished as far as we know."""
        return [o for o in self.outcomes if o.elsewhere]

    @property
    def complete(self) -> bool:
        """Every run is complete: nothing failed and nothing is still running elsewhere."""
        return self.ok and not self.elsewhere

    @property
    def diverged(self) -> list[RunOutcome]:
        """Runs that ended diverged (this time, or before)."""
        return [o for o in self.outcomes if o.diverged]

    @property
    def exit_code(self) -> int:
        """:data:`EXIT_FAILED` if the sweep was interrupted or a run failed (but
        :data:`EXIT_CONFIG` when every failure is a config error), else
        :data:`EXIT_ELSEWHERE` if some runs are still running elsewhere, else
        :data:`EXIT_DIVERGED` if some diverged, else :data:`EXIT_COMPLETE`."""
        if self.interrupted:
            return EXIT_FAILED
        if self.failed:
            return EXIT_CONFIG if all(o.config_error for o in self.failed) else EXIT_FAILED
        if self.elsewhere:
            return EXIT_ELSEWHERE
        return EXIT_DIVERGED if self.diverged else EXIT_COMPLETE

    def unfinished_line(self) -> str:
        """The line saying how many runs are still running elsewhere ("" when none)."""
        n = len(self.elsewhere)
        if not n:
            return ""
        runs = "1 run is" if n == 1 else f"{n} runs are"
        return f"{runs} still running elsewhere: rerun, or pass --wait to wait for them"

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
            error_txt = Path(o.folder) / "error.txt"
            if o.status is Status.FAILED:
                note = f"{o.error}  (see {error_txt})" if error_txt.exists() else str(o.error)
            lines.append(f"{o.status:<8} {o.seconds:>8.1f}  {o.folder:<{width}}  {note}".rstrip())
        totals = ", ".join(  # "0 diverged" would be noise on every sweep
            f"{n} {status}" for status, n in self.counts.items() if n or status != "diverged"
        )
        tail = "; interrupted" if self.interrupted else ""
        lines.append(
            f"total: {totals} of {len(self.outcomes)} runs in {self.seconds:.1f} s "
            f"({self.backend}){tail}"
        )
        if self.elsewhere:
            lines.append(self.unfinished_line())
        if self.diverged:
            n = len(self.diverged)
            lines.append(
                f"{n} run{'s' if n > 1 else ''} diverged (rows kept up to the divergence; "
                "a smaller lr may not)"
            )
        return "\n".join(lines)


# --------------------------------------------------------------------------- the sweep


def _estimated_cost(spec: RunSpec) -> float:
    """The experiment's ``estimated_cost(config)`` (relative units), or 0 when it has none."""
    try:
        return float(load_study(spec.study).estimated_cost(spec.config))
    except (ImportError, ValueError, TypeError, AttributeError):
        return 0.0


def run_sweep(
    specs: list[RunSpec],
    backend: str = "serial",
    workers: int | None = None,
    options: dict[str, Any] | None = None,
    echo: Callable[[str], None] | None = None,
    wait: bool = False,
) -> SweepResult:
    """Run every spec that is not complete; print a line per run and a table at the end.

    ``wait``: after this sweep's own runs, wait for the runs that another process holds
    ("running elsewhere"): check their locks every ``options["wait_poll_s"]`` seconds
    (default :data:`WAIT_POLL_S`), run each here on this backend once its lock is free or
    stale and it is still incomplete, and count it complete once its holder completed it.
    Without ``wait`` they stay ``skipped`` (``SweepResult.exit_code`` is then
    :data:`EXIT_ELSEWHERE` unless a run failed).

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
    - ``wait_poll_s``: with ``wait``, how often to check the locks (default 2 s).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    options = dict(options or {})
    untargeted = [spec.folder for spec in specs if not spec.study]
    if untargeted:
        raise MissingTargetError(
            f"{len(untargeted)} spec(s) name no study target ('module:attribute'), e.g. "
            f"{untargeted[0]}: plan them with plasticollapse.studies.base.plan, or give "
            "them one with plasticollapse.studies.base.with_target"
        )

    echo = echo or _print
    if backend in EXTRAS:  # fail before anything runs, with the extra to install
        backends.import_extra(*EXTRAS[backend])
    started = time.perf_counter()
    outcomes: dict[int, RunOutcome] = {}
    todo: list[tuple[int, RunSpec]] = []

    preflight(specs, backend)
    partial = 0
    for index, spec in enumerate(specs):
        status = run_status(spec)
        if status == "complete":
            outcomes[index] = RunOutcome(
                spec,
                Status.SKIPPED,
                note=complete_note(spec),
                ended_diverged=divergence(spec) is not None,
            )
        elif RunLock(spec.folder).is_live():
            outcomes[index] = RunOutcome(spec, Status.SKIPPED, note=ELSEWHERE)
        else:
            partial += status == "partial"
            todo.append((index, spec))
    # Longest runs first: a long run started last would leave the other workers idle.
    todo.sort(key=lambda item: -_estimated_cost(item[1]))
    elsewhere = sum(o.elsewhere for o in outcomes.values())
    held = f" ({elsewhere} {ELSEWHERE})" if elsewhere else ""
    echo(
        f"sweep: {len(specs)} runs: {len(specs) - len(todo)} skipped{held}, {partial} to resume, "
        f"{len(todo) - partial} new; backend {backend}"
    )
    to_run = [spec for _, spec in todo]
    if wait:  # runs held elsewhere may end up running here too
        to_run += [o.spec for o in outcomes.values() if o.elsewhere]
    notice = cpu_notice(to_run, backend)
    if notice:
        echo(notice)
    prepare_data(to_run, backend, echo)  # once here, so that no run downloads

    def report(index: int, outcome: RunOutcome) -> None:
        outcome.spec = specs[index]  # the caller's spec, even if a backend shipped a variant
        outcomes[index] = outcome
        finished = sum(not o.elsewhere for o in outcomes.values())
        extra = outcome.error if outcome.status is Status.FAILED else outcome.note
        echo(
            f"[{finished:>{len(str(len(specs)))}}/{len(specs)}] {outcome.status:<8}"
            f"{outcome.seconds:>8.1f} s  {outcome.folder}  {extra}".rstrip()
        )

    runner = {
        "serial": backends.run_serial,
        "process": backends.run_process,
        "ray": backends.run_ray,
        "slurm": backends.run_slurm,
    }

    def run(items: list[tuple[int, RunSpec]]) -> None:
        runner[backend](items, workers, options, report, echo)

    interrupted = False
    try:
        if todo:
            run(todo)
        if wait:
            poll_s = float(options.get("wait_poll_s", WAIT_POLL_S))
            _wait_for_elsewhere(specs, outcomes, run, report, echo, poll_s)
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


def _wait_for_elsewhere(specs, outcomes, run, report, echo, poll_s: float) -> None:
    """Until no run is "running elsewhere": collect those whose holder completed them, and
    run those whose lock went free or stale (they resume from their checkpoints)."""
    waiting = sorted(i for i, o in outcomes.items() if o.elsewhere)
    if waiting:
        echo(f"sweep: waiting for {len(waiting)} run(s) running elsewhere (every {poll_s:g} s)")
    while waiting:
        free = []
        for index in waiting:
            spec = specs[index]
            if run_status(spec) == "complete":
                note = "completed elsewhere" + (DIVERGED_SUFFIX if divergence(spec) else "")
                diverged = divergence(spec) is not None
                report(index, RunOutcome(spec, Status.SKIPPED, note=note, ended_diverged=diverged))
            elif not RunLock(spec.folder).is_live():
                free.append((index, spec))
        if free:
            run(free)
        waiting = sorted(i for i, o in outcomes.items() if o.elsewhere)
        if waiting:
            time.sleep(poll_s)


def _print(text: str) -> None:
    print(text, flush=True)
