"""Sweeps: seeds, skip/resume, failure isolation, locks, and each backend on a toy experiment.

The toy experiment (tests/toy_experiment.py) runs in milliseconds, logs each call of its
``run`` to ``calls.log`` in the run folder, and fails (``fail``) or kills its own process
(``die``) on request. Workers in other processes import it from ``tests/`` (on ``sys.path``
for spawned processes, on PYTHONPATH for Ray workers and submitit jobs). One test kills and
restarts the real command on a tiny Permuted-digits study instead.
"""

import dataclasses
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import toy_experiment

from plasticollapse import cli, studies
from plasticollapse.runs import lock as run_lock
from plasticollapse.runs import sweep as sweep_module
from plasticollapse.runs.config import ConfigError, Study
from plasticollapse.runs.lock import LOCK, STALE_AFTER_S, RunLock, _pid_alive
from plasticollapse.runs.sweep import EXIT_ELSEWHERE, parse_seeds, run_sweep
from plasticollapse.studies import base as experiments

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"


@pytest.fixture
def toy(monkeypatch):
    """Register the toy experiment under the name ``toy``; return its module."""
    monkeypatch.setitem(studies.REGISTRY, "toy", "toy_experiment:STUDY")
    return toy_experiment


@pytest.fixture
def pythonpath(monkeypatch):
    """Let processes that do not inherit our sys.path (Ray, submitit) import the toy."""
    paths = [str(TESTS), str(SRC), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))


def specs_for(out, *settings):
    """One RunSpec per settings dict (each a toy config, all under ``out``)."""
    return [
        spec
        for fields in settings
        for spec in experiments.plan(
            "toy", Study(toy_experiment.Config, {"out": str(out), **fields}, {})
        )
    ]


def calls(spec):
    path = Path(spec.folder) / "calls.log"
    return path.read_text().splitlines() if path.exists() else []


def statuses(result):
    return [o.status for o in result.outcomes]


def quiet(_line):
    pass


# --------------------------------------------------------------------------- seeds


@pytest.mark.parametrize(
    ("text", "seeds"),
    [("0-4", [0, 1, 2, 3, 4]), ("0,2,5", [0, 2, 5]), ("3", [3]), ("0-1,7", [0, 1, 7])],
)
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a", "not a seed"),
        ("4-1", "goes down"),
        ("1,1", "repeats"),
        ("", "not a seed"),
        ("-1", "not a seed"),
    ],
)
def test_parse_seeds_rejects_bad_text(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_seeds(text)


# --------------------------------------------------------------------------- serial


def test_serial_sweep_skips_complete_runs_and_resumes_partial_ones(toy, tmp_path):
    specs = specs_for(tmp_path, {"seed": 0}, {"seed": 1}, {"seed": 2})
    first = run_sweep(specs, echo=quiet)
    assert first.ok and statuses(first) == ["done"] * 3
    assert first.counts == {"done": 3, "resumed": 0, "skipped": 0, "failed": 0, "diverged": 0}

    # Make seed 1 look killed after its first checkpoint: no summary, one row.
    folder = Path(specs[1].folder)
    (folder / "summary.json").unlink()
    again = run_sweep(specs, echo=quiet)
    assert statuses(again) == ["skipped", "resumed", "skipped"]
    assert [o.note for o in again.outcomes] == ["complete", "", "complete"]
    assert [len(calls(s)) for s in specs] == [1, 2, 1]  # nothing complete was recomputed
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]


def test_a_failing_run_is_reported_while_the_others_finish(toy, tmp_path):
    specs = specs_for(tmp_path, {"seed": 0}, {"seed": 1, "fail": True}, {"seed": 2})
    lines = []
    result = run_sweep(specs, echo=lines.append)
    assert not result.ok
    assert statuses(result) == ["done", "failed", "done"]
    failed = result.failed[0]
    assert failed.error == "RuntimeError: toy failure on request"
    assert "toy failure on request" in (Path(failed.folder) / "error.txt").read_text()
    table = lines[-1]
    assert failed.folder in table and "error.txt" in table
    assert "2 done, 0 resumed, 0 skipped, 1 failed of 3 runs" in table


def test_a_run_that_cannot_even_start_keeps_its_traceback(tmp_path, monkeypatch):
    monkeypatch.setitem(studies.REGISTRY, "toy", "toy_experiment:STUDY")
    (spec,) = specs_for(tmp_path, {"seed": 0})
    # the worker imports the study from the spec's target, which here does not import
    spec = dataclasses.replace(spec, study="no_such_module_here:STUDY")
    result = run_sweep([spec], echo=quiet)
    assert statuses(result) == ["failed"]
    assert "ModuleNotFoundError" in (Path(spec.folder) / "error.txt").read_text()


# --------------------------------------------------------------------------- locks


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(spec, host, pid, age_s=0.0):
    path = Path(spec.folder) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "since": time.time()}))
    if age_s:
        stamp = time.time() - age_s
        os.utime(path, (stamp, stamp))
    return path


def test_a_run_locked_by_a_live_process_is_skipped_not_run_twice(toy, tmp_path):
    here, remote = specs_for(tmp_path, {"seed": 0}, {"seed": 1})
    write_lock(here, socket.gethostname(), os.getpid())  # a live pid on this host
    write_lock(remote, "another-host", 1)  # fresh heartbeat on another host
    lines = []
    result = run_sweep([here, remote], echo=lines.append)
    assert statuses(result) == ["skipped", "skipped"]
    assert {o.note for o in result.outcomes} == {"running elsewhere"}
    assert calls(here) == calls(remote) == []
    # Nothing failed, but nothing is complete either: an exit status of its own.
    assert result.ok and not result.complete and result.exit_code == EXIT_ELSEWHERE == 3
    assert lines[-1].splitlines()[-1] == (
        "2 runs are still running elsewhere: rerun, or pass --wait to wait for them"
    )


def test_stale_locks_are_broken(toy, tmp_path):
    dead, silent = specs_for(tmp_path, {"seed": 0}, {"seed": 1})
    write_lock(dead, socket.gethostname(), dead_pid())
    write_lock(silent, "another-host", 1, age_s=STALE_AFTER_S + 60)  # heartbeat stopped
    result = run_sweep([dead, silent], echo=quiet)
    assert statuses(result) == ["done", "done"]
    assert not (Path(dead.folder) / LOCK).exists()  # released after the run


def process_state(pid):
    """The state letters of a process as the system reports them ("" when it is gone)."""
    if Path("/proc/self/stat").exists():
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return ""
    ps = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
    return ps.stdout.strip()


@pytest.fixture
def zombie():
    """The pid of a child that has exited and is not reaped (yet): a zombie."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 30
    while not process_state(proc.pid).startswith("Z"):
        assert time.time() < deadline, f"child {proc.pid} never became a zombie"
        time.sleep(0.01)
    yield proc.pid
    proc.wait()


@pytest.mark.parametrize("proc_fs", [True, False], ids=["proc", "ps"])
def test_a_zombie_holder_is_dead(zombie, monkeypatch, proc_fs):
    """A killed worker stays a zombie until reaped; kill(pid, 0) still finds it."""
    if proc_fs and not run_lock._proc_usable():
        pytest.skip("no /proc here")
    monkeypatch.setattr(run_lock, "_proc_usable", lambda: proc_fs)
    os.kill(zombie, 0)  # exists...
    assert not _pid_alive(zombie)  # ...but is not alive
    assert _pid_alive(os.getpid())
    assert not _pid_alive(dead_pid())


def test_a_lock_whose_holder_is_a_zombie_is_broken(toy, tmp_path, zombie):
    (spec,) = specs_for(tmp_path, {"seed": 0})
    write_lock(spec, socket.gethostname(), zombie)
    assert not RunLock(spec.folder).is_live()
    result = run_sweep([spec], echo=quiet)
    assert statuses(result) == ["done"] and result.complete and result.exit_code == 0


@pytest.mark.skipif(not run_lock._proc_usable(), reason="start times come from /proc")
def test_a_pid_reused_by_a_newer_process_does_not_hold_the_lock(tmp_path):
    lock = RunLock(tmp_path / "run")
    assert lock.acquire()
    record = lock.holder()
    lock.release()
    assert record["pid"] == os.getpid() and isinstance(record["start"], int)
    assert _pid_alive(os.getpid(), record["start"])
    # A lock taken by an earlier process that had our pid: we are not its holder.
    earlier = {**record, "start": record["start"] - 1}
    (tmp_path / "run" / LOCK).write_text(json.dumps(earlier))
    assert not _pid_alive(os.getpid(), earlier["start"])
    assert not RunLock(tmp_path / "run").is_live()


def test_lock_is_exclusive_and_released(tmp_path):
    first, second = RunLock(tmp_path / "run"), RunLock(tmp_path / "run")
    assert first.acquire()
    assert not second.acquire()
    assert first.is_live()
    first.release()
    assert second.acquire()
    second.release()
    assert not (tmp_path / "run" / LOCK).exists()


def test_two_concurrent_sweeps_never_run_one_folder_twice(toy, tmp_path):
    specs = specs_for(tmp_path, *({"seed": s, "sleep": 0.02} for s in range(4)))
    results = []
    sweeps = [
        threading.Thread(target=lambda: results.append(run_sweep(specs, echo=quiet)))
        for _ in range(2)
    ]
    for t in sweeps:
        t.start()
    for t in sweeps:
        t.join()
    assert all(len(calls(s)) == 1 for s in specs)
    assert all((Path(s.folder) / "summary.json").exists() for s in specs)
    ran = sum(r.counts["done"] for r in results)
    assert ran == len(specs) and all(r.ok for r in results)


# --------------------------------------------------------------------------- --wait


def test_wait_runs_a_run_whose_holder_died(toy, tmp_path):
    held, free = specs_for(tmp_path, {"seed": 0}, {"seed": 1})
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    write_lock(held, socket.gethostname(), holder.pid)
    lines = []
    try:  # holder is not reaped before the sweep ends: it dies into a zombie
        result = run_sweep([held, free], echo=lines.append, wait=True, options={"wait_poll_s": 0.1})
    finally:
        holder.wait()
    assert any("waiting for 1 run(s) running elsewhere" in line for line in lines)
    assert statuses(result) == ["done", "done"]
    assert result.complete and result.exit_code == 0
    assert len(calls(held)) == len(calls(free)) == 1
    assert not (Path(held.folder) / LOCK).exists()


def test_wait_counts_a_run_its_holder_completed(toy, tmp_path):
    (spec,) = specs_for(tmp_path, {"seed": 0})
    lock = write_lock(spec, socket.gethostname(), os.getpid())  # a live holder: "elsewhere"

    def the_other_holder():
        time.sleep(0.3)
        experiments.execute(spec)
        lock.unlink()

    other = threading.Thread(target=the_other_holder)
    other.start()
    try:
        result = run_sweep([spec], echo=quiet, wait=True, options={"wait_poll_s": 0.05})
    finally:
        other.join()
    assert statuses(result) == ["skipped"]
    assert result.outcomes[0].note == "completed elsewhere"
    assert result.complete and result.exit_code == 0
    assert len(calls(spec)) == 1  # run once, by its holder


# --------------------------------------------------------------------------- kill + rerun


@pytest.mark.slow
def test_a_killed_sweep_reruns_without_recomputing_complete_runs(toy, tmp_path):
    """Kill a real sweep process mid-run, rerun it: complete runs are skipped."""
    config = tmp_path / "toy.toml"
    config.write_text('experiment = "toy"\nsteps = 4\nsleep = 0.2\n')
    argv = ["sweep", str(config), "--seeds", "0-2", "--out", str(tmp_path / "runs")]
    argv += ["--backend", "serial"]  # the kill must hit the process that runs the runs
    script = (
        f"import sys; sys.path[:0] = [{str(TESTS)!r}]; import toy_experiment; "
        "toy_experiment.register(); from plasticollapse.cli import main; "
        f"sys.exit(main({argv!r}))"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL)
    specs = specs_for(tmp_path / "runs", *({"seed": s, "steps": 4, "sleep": 0.2} for s in range(3)))
    deadline = time.time() + 60
    # Wait until seed 0 is complete and seed 1 has checkpointed, then kill without warning.
    while not (
        (Path(specs[0].folder) / "summary.json").exists()
        and (Path(specs[1].folder) / "checkpoint.pt").exists()
    ):
        assert proc.poll() is None and time.time() < deadline, "sweep ended before the kill"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (Path(specs[1].folder) / LOCK).exists()  # left behind by the killed sweep

    assert cli.main(argv) == 0
    assert len(calls(specs[0])) == 1  # seed 0: computed once, not again
    assert len(calls(specs[1])) == 2 and not calls(specs[1])[1].startswith("start=0")
    assert len(calls(specs[2])) == 1
    rows = [
        json.loads(x) for x in (Path(specs[1].folder) / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]


#: A tiny Permuted-digits study: 4 runs of 6 tasks, a few seconds on 2 workers.
TINY_PERMUTED = [
    *("--dataset", "digits", "--tasks", "6", "--hidden", "16", "16", "--engine", "reference"),
    *("--train_samples", "300", "--measure_samples", "150", "--first_task_epochs", "1", "3"),
    *("--seeds", "0", "1", "--threads", "1", "--progress", "false"),
]


def start_permuted_sweep(out, log):
    """The real command, process backend with 2 workers, in a process group of its own."""
    argv = [sys.executable, "-m", "plasticollapse", "permuted", *TINY_PERMUTED]
    argv += ["--out", str(out), "--backend", "process", "--workers", "2"]
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )


def lock_taken_since(out, since):
    """True when a run folder under ``out`` has a lock taken at ``since`` or later."""
    for lock in Path(out).glob(f"*/{LOCK}"):
        try:
            if json.loads(lock.read_text())["since"] >= since:
                return True
        except (OSError, ValueError, KeyError):
            pass
    return False


def rows_written(out):
    return sum(len(p.read_text().splitlines()) for p in Path(out).glob("*/metrics.jsonl"))


def final_rows(out):
    """{run folder name: (metrics rows, summary)} without the wall-clock ``seconds``."""

    def timeless(row):
        return {k: v for k, v in row.items() if k != "seconds"}

    found = {}
    for folder in sorted(p for p in Path(out).iterdir() if p.is_dir()):
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        summary = json.loads((folder / "summary.json").read_text())
        found[folder.name] = ([timeless(json.loads(x)) for x in lines], timeless(summary))
    return found


def all_complete(out, n):
    return len(list(Path(out).glob("*/summary.json"))) == n


@pytest.mark.slow
def test_a_sweep_killed_at_random_and_restarted_at_once_ends_as_if_uninterrupted(tmp_path):
    """SIGKILL a process-backend sweep's whole group, restart it at once, several times.

    The killed workers stay zombies for a second or two after the kill, while the restart
    already looks at their locks: those must count as stale, not as runs running elsewhere.
    The uninterrupted reference runs in this process on the serial backend, which saves a
    process start and checks on the way that the two backends give identical rows
    (docs/reproducibility.md).
    """
    rng = random.Random(15)
    runs = 4
    reference_argv = ["permuted", *TINY_PERMUTED, "--out", str(tmp_path / "reference")]
    assert cli.main([*reference_argv, "--backend", "serial"]) == 0
    reference = final_rows(tmp_path / "reference")
    assert len(reference) == runs

    out, kills, logs = tmp_path / "killed", [], []
    for attempt in range(4):  # 3 kills at random moments, then one run to the end
        logs.append(tmp_path / f"attempt{attempt}.log")
        with logs[-1].open("w") as log:
            started, before = time.time(), rows_written(out)
            proc = start_permuted_sweep(out, log)
            if attempt < 3:
                # Kill once a worker of this sweep holds a run and 0-3 more rows are written
                # (from its warm-up to mid-training), a random 0-0.5 s later.
                more, deadline = rng.randint(0, 3), started + 120
                while proc.poll() is None and not (
                    lock_taken_since(out, started) and rows_written(out) >= before + more
                ):
                    assert time.time() < deadline, "the sweep made no progress"
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 0.5))
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)  # the sweep, its workers, forkserver
                    kills.append(rows_written(out))
            code = proc.wait(timeout=300)
        output = logs[-1].read_text()
        # Nobody else runs these folders: a run "running elsewhere" (said in the first line,
        # killed or not) is a dead holder misjudged alive.
        assert "running elsewhere" not in output
        if code == -signal.SIGKILL:
            continue  # restart at once, no sleep: the killed workers are still zombies
        assert code in (0, EXIT_ELSEWHERE), output
        assert (code == 0) == all_complete(out, runs), output  # 0 only when all is done
    assert len(kills) >= 2, kills
    assert code == 0 and all_complete(out, runs), output
    assert final_rows(out) == reference


# --------------------------------------------------------------------------- cli


def test_cli_sweep_expands_grid_and_seeds_and_exits_non_zero_on_failure(toy, tmp_path, capsys):
    config = tmp_path / "toy.toml"
    config.write_text('experiment = "toy"\nsteps = 2\n')
    out = tmp_path / "runs"
    argv = ["sweep", str(config), "--grid", "steps=2,3", "--seeds", "0-1", "--backend", "serial"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    assert len(list(out.glob("*/summary.json"))) == 4
    printed = capsys.readouterr().out
    assert "4 done, 0 resumed, 0 skipped, 0 failed of 4 runs" in printed

    assert cli.main([*argv, "--out", str(out)]) == 0  # all complete: nothing runs
    assert "0 done, 0 resumed, 4 skipped, 0 failed" in capsys.readouterr().out

    assert cli.main([*argv, "--out", str(out), "--grid", "fail=true"]) == 1
    assert "failed" in capsys.readouterr().out
    assert cli.main(["sweep", str(config), "--seeds", "2-1"]) == 2  # clear error, no traceback


def test_cli_sweep_exits_3_while_runs_are_running_elsewhere_and_waits_with_wait(
    toy, tmp_path, capsys, monkeypatch
):
    config = tmp_path / "toy.toml"
    config.write_text('experiment = "toy"\nsteps = 2\n')
    out = tmp_path / "runs"
    argv = ["sweep", str(config), "--seeds", "0-1", "--backend", "serial", "--out", str(out)]
    specs = specs_for(out, *({"seed": s, "steps": 2} for s in range(2)))
    lock = write_lock(specs[1], socket.gethostname(), os.getpid())
    assert cli.main(argv) == 3
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == "1 run is still running elsewhere: rerun, or pass --wait to wait for them"
    assert calls(specs[0]) and not calls(specs[1])

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid}))
    monkeypatch.setattr(sweep_module, "WAIT_POLL_S", 0.1)
    try:
        assert cli.main([*argv, "--wait"]) == 0
    finally:
        holder.wait()
    assert "running elsewhere: rerun" not in capsys.readouterr().out
    assert len(calls(specs[0])) == len(calls(specs[1])) == 1


# --------------------------------------------------------------------------- process


def test_process_backend_isolates_a_dying_worker(toy, tmp_path):
    """Spawned workers, one thread each on 2 cores; a SIGKILLed worker fails only its run."""
    specs = specs_for(
        tmp_path,
        {"seed": 0, "die": True},
        {"seed": 1, "sleep": 0.3},
        {"seed": 2, "fail": True},
        {"seed": 3},
    )
    result = run_sweep(specs, backend="process", workers=2, echo=quiet)
    assert not result.ok
    by_seed = {o.spec.config["seed"]: o for o in result.outcomes}
    assert by_seed[0].status == "failed" and "died" in by_seed[0].error
    assert "No traceback exists" in (Path(specs[0].folder) / "error.txt").read_text()
    assert not (Path(specs[0].folder) / LOCK).exists()
    assert by_seed[1].status in ("done", "resumed")  # killed with the pool, rerun alone
    assert by_seed[2].status == "failed" and "toy failure" in by_seed[2].error
    assert by_seed[3].status == "done"
    summary = json.loads((Path(specs[3].folder) / "summary.json").read_text())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, cores // 2)
    assert summary["torch_threads"] == threads and summary["omp_threads"] == str(threads)
    assert summary["pid"] != os.getpid()


# --------------------------------------------------------------------------- ray


@pytest.mark.slow  # starting Ray takes 10-20 s on a busy 2-core machine
def test_ray_backend(toy, tmp_path, pythonpath):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        specs = specs_for(tmp_path, {"seed": 0}, {"seed": 1, "fail": True}, {"seed": 2})
        result = run_sweep(specs, backend="ray", options={"cpus": 1, "gpus": 0}, echo=quiet)
    finally:
        ray.shutdown()
    assert statuses(result) == ["done", "failed", "done"]
    assert "toy failure" in (Path(specs[1].folder) / "error.txt").read_text()
    assert json.loads((Path(specs[0].folder) / "summary.json").read_text())["torch_threads"] == 1


def test_a_missing_extra_is_named(toy, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "submitit", None)
    specs = specs_for(tmp_path, {"seed": 0})
    with pytest.raises(ImportError, match=r"plasticollapse\[ray\]"):
        run_sweep(specs, backend="ray", echo=quiet)
    with pytest.raises(ImportError, match=r"plasticollapse\[slurm\]"):
        run_sweep(specs, backend="slurm", echo=quiet)
    assert calls(specs[0]) == []


# --------------------------------------------------------------------------- slurm


@pytest.mark.parametrize("cluster", ["debug", pytest.param("local", marks=pytest.mark.slow)])
def test_slurm_backend_through_submitit(toy, tmp_path, pythonpath, cluster):
    pytest.importorskip("submitit")
    specs = specs_for(tmp_path, {"seed": 0}, {"seed": 1, "fail": True})
    options = {"slurm_cluster": cluster, "poll_s": 0.2, "time_min": 5, "cpus": 1}
    result = run_sweep(specs, backend="slurm", options=options, echo=quiet)
    assert statuses(result) == ["done", "failed"]
    assert "toy failure" in (Path(specs[1].folder) / "error.txt").read_text()
    assert (tmp_path / "slurm_logs").is_dir()


def test_longest_runs_start_first(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(toy, "estimated_cost", lambda config: config["steps"], raising=False)
    specs = specs_for(tmp_path, *({"seed": s, "steps": steps} for s, steps in enumerate((1, 3, 2))))
    lines: list[str] = []
    run_sweep(specs, echo=lines.append)
    finished = [line for line in lines if line.startswith("[")]
    order = [next(i for i, s in enumerate(specs) if s.folder in line) for line in finished]
    assert order == [1, 2, 0]


def test_a_summary_note_follows_the_complete_note_without_hiding_a_divergence(tmp_path):
    spec = experiments.RunSpec("toy", {}, str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    summary = {"status": "diverged", "diverged": {"metric": "loss", "value": "nan", "step": 3}}
    summary["note"] = "stopped at the safety cap of 2 epochs, nc1 3.5 above its threshold 0.1"
    (tmp_path / "run" / "summary.json").write_text(json.dumps(summary))
    note = sweep_module.complete_note(spec)
    assert note == f"complete, diverged; {summary['note']}"
    # whether it diverged is read from the summary, not from the note's words
    diverged = sweep_module.divergence(spec) is not None
    assert sweep_module.RunOutcome(spec, "skipped", note=note, ended_diverged=diverged).diverged
    assert not sweep_module.RunOutcome(spec, "skipped", note="complete; diverged later").diverged


# --------------------------------------------------------------------------- the spec protocol


def test_a_planned_spec_names_its_study_and_runs_without_the_registry(toy, tmp_path, monkeypatch):
    (spec,) = specs_for(tmp_path, {"seed": 0})
    assert spec.study == "toy_experiment:STUDY"
    monkeypatch.delitem(studies.REGISTRY, "toy")  # as in a worker that never registered it
    from plasticollapse.runs.execute import execute

    assert execute(spec) == "done"
    record = json.loads((Path(spec.folder) / "config.json").read_text())
    # the folder says how to read its rows (analysis/tidy.py reads these, not the registry)
    assert record["step_key"] == toy_experiment.STUDY.step_key
    assert record["setting_keys"] == list(toy_experiment.STUDY.setting_keys)
    assert set(record["setting_fields"]) == {"seed", "steps", "sleep", "fail", "die"}


def test_a_sweep_refuses_specs_that_name_no_study(tmp_path):
    spec = experiments.RunSpec("toy", {}, str(tmp_path / "run"))
    with pytest.raises(ValueError, match="names? no study target"):
        run_sweep([spec], echo=quiet)
    assert not (tmp_path / "run").exists()


def test_a_spec_pickled_before_specs_named_their_study_still_loads_and_runs(toy, tmp_path):
    import pickle

    (new,) = specs_for(tmp_path, {"seed": 0})
    # What a SLURM job's pickle of before held: the class by its old path, no ``study``.
    old = experiments.RunSpec.__new__(experiments.RunSpec)
    for name in ("experiment", "config", "folder"):
        object.__setattr__(old, name, getattr(new, name))
    blob = pickle.dumps(old, protocol=0).replace(
        b"plasticollapse.runs.spec", b"plasticollapse.studies.base"
    )
    assert b"plasticollapse.studies.base" in blob and b"study" not in blob.replace(b"studies", b"")
    loaded = pickle.loads(blob)
    assert loaded.study == "" and loaded.folder == new.folder
    # a requeued job calls with the arguments it was submitted with, the registry among them
    from plasticollapse.runs.backends import SlurmRun

    status, *_ = SlurmRun()(loaded, 1, {"toy": "toy_experiment:STUDY"})
    assert status == "done"
    assert experiments.execute(loaded) == "skipped"  # studies.base.execute looks it up
