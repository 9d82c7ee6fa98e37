"""The projected CPU-hours of ``full/matrix``, every study and setting measured end to end.

Each (study, setting) runs as the matrix plans its seed-0 cell (the study's preset, the
matrix's overrides, the setting as ``--remedies``), truncated, in fresh one-thread
processes (``plasticollapse <study> ... --tasks k``): start-up, data, training, the
measuring after every task, probes, baselines and saving are all in the wall time.
A run's cost is modelled as::

    T(k tasks, e epochs per task) = S + k a + b e sum_{t < k} n_t

with S the start-up, a what a task costs besides its epochs (measuring, probe), b the
seconds per trained sample of an epoch (the retrained baseline's included), n_t the
samples of task t. Where every task is the same work (the batch-1 studies; random_labels,
400 epochs of 1,200 images) a run is ``T = S + k c`` at the preset's epochs, and two
lengths k1 < k2 give ``c = (T(k2) - T(k1)) / (k2 - k1)``; class_incremental's tasks grow
(2, 4, ... classes, 200 epochs each) and run at (1 task, e1), (2 tasks, e1) and (2 tasks,
e2) epochs, which give b, a and S. As in the matrix, the settings of a study write into
one output folder, so the retrained baselines (which no remedy changes) are trained by
the first setting measured and read by the others (studies/streams/shared_baseline.py).
Each setting first runs once untimed, so that Numba's
cache holds its kernels (a cold compile would count as start-up). The full run is then extrapolated
to its preset's tasks and epochs, times its seeds.

Permuted MNIST needs MNIST; where it is not on disk it runs on Fashion-MNIST (the same
60,000 x 784, but ~50% nonzero against MNIST's ~19%: the sparse first layer's work is
~2.5x, so the figure is an upper bound), and says so. The matrix's mini-batch studies ask
for the compiled engine (``engine = "fast"`` in their tables).

Usage: ``python benchmarks/matrix_cost.py [--studies a,b] [--settings plain,cbp]``
(about 10 minutes for the whole matrix on one core).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from plasticollapse.matrix.config import load_matrix
from plasticollapse.matrix.plan import plan_study, study_argv

MATRIX = "full/matrix"
#: The studies whose tasks are all alike, run at their own epochs: two truncated lengths.
LENGTHS = {
    "permuted": (1, 3), "label_permuted": (2, 6), "bitflip_regression": (1, 3),
    "random_labels": (1, 3),
}  # fmt: skip
#: class_incremental (tasks growing by classes, 200 epochs each): its truncated epochs.
EPOCHS = (2, 22)
#: Training images per class of Fashion-MNIST (class_incremental's tasks grow by classes).
PER_CLASS = 6000


def mnist_on_disk() -> bool:
    from plasticollapse.data import load_dataset

    try:
        load_dataset("mnist", download=False)
    except Exception:  # noqa: BLE001 - any failure means: not usable offline
        return False
    return True


def timed_run(study: str, argv: list[str]) -> float:
    """Wall seconds of ``plasticollapse study *argv`` in a fresh one-thread process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "plasticollapse", study, *argv],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{study} {' '.join(argv)} failed:\n{out.stderr[-2000:]}")
    return seconds


def task_samples(study: str, config: dict, t: int) -> int:
    """n_t: the samples one epoch of class_incremental's task t trains on."""
    return (int(config["initial_classes"]) + t * int(config["classes_per_task"])) * PER_CLASS


def batch1_cost(study: str, base: list[str], config: dict, scratch: str) -> tuple[float, float]:
    """(seconds of a full run, seconds per task) from two truncated lengths."""
    k1, k2 = LENGTHS[study]
    timed_run(study, [*base, "--tasks", str(k1), "--out", f"{scratch}/warm"])  # compiles
    t1 = timed_run(study, [*base, "--tasks", str(k1), "--out", f"{scratch}/a"])
    t2 = timed_run(study, [*base, "--tasks", str(k2), "--out", f"{scratch}/b"])
    per_task = (t2 - t1) / (k2 - k1)
    startup = t1 - k1 * per_task
    return startup + int(config["tasks"]) * per_task, per_task


def minibatch_cost(study: str, base: list[str], config: dict, scratch: str) -> tuple[float, float]:
    """(seconds of a full run, seconds per trained sample b) from three truncated runs."""
    e1, e2 = EPOCHS

    def run(tasks: int, epochs: int, name: str) -> float:
        argv = ["--tasks", str(tasks), "--epochs_per_task", str(epochs)]
        return timed_run(study, [*base, *argv, "--out", f"{scratch}/{name}"])

    run(1, e1, "warm")  # compiles the kernels into Numba's cache
    t11, t21, t22 = run(1, e1, "a"), run(2, e1, "b"), run(2, e2, "c")
    n0, n1 = task_samples(study, config, 0), task_samples(study, config, 1)
    b = (t22 - t21) / ((e2 - e1) * (n0 + n1))
    a = t21 - t11 - b * e1 * n1
    startup = t11 - a - b * e1 * n0
    tasks, epochs = int(config["tasks"]), int(config["epochs_per_task"])
    trained = sum(task_samples(study, config, t) for t in range(tasks))
    return startup + tasks * a + b * epochs * trained, b


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", default="", help="comma-separated (default: all)")
    parser.add_argument("--settings", default="", help="comma-separated (default: all)")
    args = parser.parse_args(argv)
    matrix = load_matrix(MATRIX)
    studies = [s for s in args.studies.split(",") if s] or [e.name for e in matrix.studies]
    settings = [s for s in args.settings.split(",") if s] or list(matrix.remedies)
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    mnist = mnist_on_disk()
    total_hours, started = 0.0, time.perf_counter()
    for entry in matrix.studies:
        if entry.name not in studies:
            continue
        cells = {c.remedy: c for c in plan_study(matrix, entry) if c.seed == matrix.seeds[0]}
        extra = []
        if entry.name == "permuted" and not mnist:
            extra = ["--dataset", "fashion-mnist", "--download", "false"]
            print("permuted: MNIST is not on disk; Fashion-MNIST instead (denser: an upper bound)")
        study_seconds, applicable = 0.0, 0
        # one scratch out per study, as the matrix has: the settings' runs of one length
        # share their retrained baselines (the first setting trains them)
        with tempfile.TemporaryDirectory() as scratch:
            for setting in settings:
                cell = cells.get(setting)
                if cell is None or cell.spec is None:
                    print(f"  {entry.name:18s} {setting:15s} not applicable")
                    continue
                config = cell.spec.config
                base = [
                    "--config", entry.preset, *study_argv(entry, setting, (cell.seed,), "unused"),
                    *extra,
                ]  # fmt: skip
                if entry.name in LENGTHS:
                    seconds, per_task = batch1_cost(entry.name, base, config, scratch)
                    detail = f"{per_task:.3f} s a task"
                else:
                    seconds, b = minibatch_cost(entry.name, base, config, scratch)
                    detail = f"{1 / b:,.0f} samples/s trained"
                study_seconds += seconds * len(matrix.seeds)
                applicable += 1
                print(f"  {entry.name:18s} {setting:15s} {seconds / 60:6.1f} min a run ({detail})")
        hours = study_seconds / 3600
        total_hours += hours
        print(f"{entry.name}: {len(matrix.seeds)} seeds x {applicable} settings: {hours:.2f} h")
    print(
        f"{MATRIX} projected: {total_hours:.1f} CPU-hours ({total_hours / 2:.1f} h on 2 cores); "
        f"measured in {(time.perf_counter() - started) / 60:.1f} min"
    )
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
