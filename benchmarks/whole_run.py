"""The whole Permuted run timed end to end in a fresh process: start-up, data, training,
measuring after every task, saving.

:func:`whole_run` starts ``python -c CHILD``, which imports the package, loads the task
data, and runs :func:`plasticollapse.studies.permuted.run.run` for ``tasks`` tasks of 60,000
samples (fast engine, one thread, NC and plasticity metrics after every task, metrics.jsonl
and the checkpoint written), and times it from outside (wall, interpreter start included)
and inside (the child's process CPU time, and its measuring time from the rows' order).
Its steps/s (tasks x 60,000 / wall) is what a user sees, to set beside the autograd loop's
training-only steps/s. The data is the real Fashion-MNIST when the package finds it,
otherwise a synthetic Fashion-MNIST-sized stand-in (60,000 x 784, ~50% nonzero, as dense
as Fashion-MNIST; generated in the child, so its time counts as the data's).

Used by ``online_speed.py``; alone: ``python benchmarks/whole_run.py [--tasks 20]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
TASK_SIZE = 60_000

CHILD = r"""
import json, sys, tempfile, time
sys.path.insert(0, sys.argv[3])
from plasticollapse.runs.folder import RunFolder
from plasticollapse.studies.permuted import run as permuted
from plasticollapse.studies.permuted.config import Config

tasks, data = int(sys.argv[1]), sys.argv[2]
cpu = {"imports": time.process_time()}
load = permuted.load_task_data
if data == "synthetic":
    from synthetic import mnist_like

    def load(config, device):
        x, y = mnist_like(60_000, density=0.5, seed=0)
        return x.to(device), y.to(device), 10

def timed_load(config, device):
    out = load(config, device)
    cpu["data"] = time.process_time() - cpu["imports"]
    return out

permuted.load_task_data = timed_load
measuring = []
real_measure = permuted.measure

def timed_measure(*args, **kwargs):
    start = time.perf_counter()
    out = real_measure(*args, **kwargs)
    measuring.append(time.perf_counter() - start)
    return out

permuted.measure = timed_measure
with tempfile.TemporaryDirectory() as tmp:
    config = Config(
        dataset="fashion-mnist", tasks=tasks, threads=1, engine="fast", progress=False, out=tmp
    )
    permuted.run(config, RunFolder(tmp))
    rows = len(RunFolder(tmp).read_metrics())
cpu["total"] = time.process_time()
print(json.dumps({"cpu": cpu, "rows": rows, "measuring": measuring}))
"""


def fashion_available() -> bool:
    """Whether the package's loader finds Fashion-MNIST (no download)."""
    try:
        from plasticollapse.data import load_dataset

        load_dataset("fashion-mnist").flat("train")
        return True
    except Exception:  # noqa: BLE001 - any failure means: use the synthetic stand-in
        return False


def _child(tasks: int, data: str) -> tuple[float, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(tasks), data, str(TESTS)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - start, out.stdout


def whole_run(tasks: int = 20) -> dict:
    """Steps/s and seconds of a ``tasks``-task run in a fresh one-thread process, after a
    one-task run that fills Numba's cache (a user's runs after their first load the
    compiled kernels; the cold compile is ``online_speed.py``'s own figure)."""
    data = "real" if fashion_available() else "synthetic"
    _child(1, data)
    wall, stdout = _child(tasks, data)
    child = json.loads(stdout.strip().splitlines()[-1])
    if child["rows"] != tasks:
        raise RuntimeError(f"the run wrote {child['rows']} rows, expected {tasks}")
    steps = tasks * TASK_SIZE
    return {
        "data": data,
        "tasks": tasks,
        "wall": wall,
        "cpu": child["cpu"]["total"],
        "cpu_imports": child["cpu"]["imports"],
        "cpu_data": child["cpu"]["data"],
        "measuring": sum(child["measuring"]),
        "measure_per_task": min(child["measuring"]),
        "steps_per_s": steps / wall,
        "steps_per_cpu_s": steps / child["cpu"]["total"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    r = whole_run(parser.parse_args().tasks)
    print(
        f"{r['tasks']}-task run ({r['data']} Fashion-MNIST-sized data): {r['wall']:.1f} s wall, "
        f"{r['cpu']:.1f} s CPU (imports {r['cpu_imports']:.1f}, data {r['cpu_data']:.1f}); "
        f"measuring {r['measuring']:.1f} s wall (best task {r['measure_per_task']:.3f} s); "
        f"{r['steps_per_s']:,.0f} steps/s wall, {r['steps_per_cpu_s']:,.0f} by CPU time"
    )


if __name__ == "__main__":
    main()
