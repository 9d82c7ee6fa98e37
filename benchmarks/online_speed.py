"""Online (batch size 1) training speed: reference engine vs fast engine, and the study.

Measures, for the paper's 784-100-100-100-10 MLP:

1. steps/s of the reference engine (autograd + torch.optim.SGD) and of the fast engine on
   the same data, one core (``torch.set_num_threads(1)``), best of ``--repeats``;
2. compile time of the fast engine's kernels, cold (empty Numba cache) and warm (loaded);
3. the cost of building a task's CSR rows (once per new data tensor, i.e. per task);
4. study-level throughput: ``--workers`` processes (default: all cores), each running the
   fast engine on one thread, total steps/s;
5. what a task costs besides training, timed: ``permuted.measure`` (every NC and
   plasticity metric on the task's 60k images, hidden layers included: one sweep of
   sufficient statistics, ``engines/fast_statistics.py``) beside the measurings it
   replaced (``measure_streamed``: ``measure_model``'s streaming accumulators over the
   sparse first layer; ``measure_before``: PyTorch's dense first layer through a
   column-permuted copy of the model), building x[:, P] (now only for the reference
   engine) and saving the row and checkpoint;
6. the projected wall time of the paper's full Permuted MNIST study: first-task epochs
   {1, 2, 5, 10, 50, 100} x 5 seeds x 200 tasks of 60,000 samples (~409M updates) at the
   measured multi-process throughput, plus the CSR rows (once per run), measuring and
   saving after each task x 200 tasks x 30 runs, spread over the workers; with the
   measuring before and after; target <= 30 min on 2 cores;
7. the whole ``--run-tasks``-task (20) Permuted run in a fresh process, end to end
   (start-up, data, training, measuring after every task, saving; ``whole_run.py``), as
   steps/s beside the autograd loop's (training alone) on Fashion-MNIST (the synthetic
   stand-in when it is not found); target >= 30x;
8. the remedies in the fast engine, one core, beside plain in the same run: weight decay,
   L2 Init, Continual Backprop (both utilities), the fixed ETF head, Shrink & Perturb and
   ReDo every 1,000 steps, as updates/s and their ratio to plain (targets: CBP >= 0.5,
   L2 Init and weight decay >= 0.7); and the reference engine's speed on the MLP with
   layer norm or CReLU, which only it runs.

Data: synthetic MNIST-like (784 inputs, ~81% zeros as in MNIST, 10 learnable classes) by
default; also the real Fashion-MNIST when it is found (``plasticollapse.data`` or the IDX
files in /usr/share/datasets/fashion-mnist). Fashion-MNIST is much denser (~50% nonzero)
than MNIST, so it is the slower case for the sparse first layer.

Timings on a shared machine are noisy: each figure is the best of several repeats, and
the one-core figures are also given in thread CPU time (less sensitive to other load).

Measured with ``--quick`` on an idle 2-core AVX-512 Xeon (Numba's ``rocketlake``),
2026-12-02, after the per-row sums were vectorised: measuring a task 0.172 s (MNIST-like;
0.195 s before in the same session) and 0.192 s (Fashion-MNIST; 0.226), of which the
first layer 0.074 / 0.083, the deeper layers 0.035, the hidden layers' grams 0.025, the
per-block sums 0.018 and the second sweep 0.024 (the breakdown the script prints). The
whole 20-task Fashion-MNIST run: 62,667 steps/s, 24.2x the autograd loop's 2,586 in that
run (27.5x against 2,217 in the run before: the loop's own figure moves most); the
projected full study 34 min (training alone 25 min at 269,219 steps/s on 2 processes).
The <= 0.1 s, >= 30x and <= 30 min targets are not met: the forward pass alone (the sparse
first layer ~0.07 s, the deeper layers' BLAS ~0.035 s) is above 0.1 s on one thread.

Measured with ``--quick`` on a 2-core AMD EPYC (Zen 3, AVX2), 2026-12-03, after the
sweep's rows were cut into fixed chunks that threads sweep side by side: measuring a task
0.146 s wall on 2 threads (a run alone on the machine) against 0.319 s on one (MNIST-like;
Fashion-MNIST 0.171 against 0.332); the whole 20-task Fashion-MNIST run 34.3x the
autograd loop; the projected full study 61 min (training alone 48 min at 142,330 steps/s
on 2 processes, a slow hour of that machine: 162,504 the day before). Still not met there:
<= 0.1 s a task, <= 30 min.

Usage: ``python benchmarks/online_speed.py [--quick] [--workers N]``
"""

from __future__ import annotations

import argparse
import copy
import gzip
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread per process; set before torch/numba load

import numpy as np  # noqa: E402
import torch  # noqa: E402

# The synthetic data generator lives with the tests (it is test data, not part of the
# package), so this script reads it from the repository's tests/ folder; fast_layouts sits
# beside this script, whose folder Python puts on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fast_layouts import GatheredFastEngine, check_same_training  # noqa: E402
from synthetic import mnist_like  # noqa: E402
from whole_run import whole_run  # noqa: E402

from plasticollapse.engines import fast  # noqa: E402
from plasticollapse.engines.reference import ReferenceEngine  # noqa: E402
from plasticollapse.models import MLP  # noqa: E402

HIDDEN = (100, 100, 100)
FIRST_TASK_EPOCHS = (1, 2, 5, 10, 50, 100)
SEEDS = 5
TASKS = 200
TASK_SIZE = 60_000
RUNS = len(FIRST_TASK_EPOCHS) * SEEDS
STUDY_STEPS = sum((e + TASKS - 1) * TASK_SIZE for e in FIRST_TASK_EPOCHS) * SEEDS
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


def _read_idx_gz(path: Path) -> np.ndarray:
    """A minimal IDX reader (big-endian header: magic with the rank in its last byte)."""
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist():
    """Fashion-MNIST training set as (60000, 784) float32 in [0, 1], or None."""
    try:
        from plasticollapse.data import load_dataset

        return load_dataset("fashion-mnist").flat("train")
    except Exception:  # noqa: BLE001 - data.py absent or no files: try the IDX files
        pass
    images = FASHION_DIR / "train-images-idx3-ubyte.gz"
    labels = FASHION_DIR / "train-labels-idx1-ubyte.gz"
    if not (images.exists() and labels.exists()):
        return None
    x = torch.from_numpy(_read_idx_gz(images).reshape(-1, 784).astype(np.float32) / 255.0)
    y = torch.from_numpy(_read_idx_gz(labels).astype(np.int64))
    return x, y


# --------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------


def best_of(fn, repeats: int) -> tuple[float, float]:
    """Best wall and best thread-CPU seconds of ``fn()`` over ``repeats`` runs."""
    wall = cpu = float("inf")
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.thread_time()
        fn()
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.thread_time() - c0)
    return wall, cpu


def one_core(x, y, ref_steps: int, fast_steps: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = MLP(x.shape[1], HIDDEN, 10)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    fast_order = order.repeat(-(-fast_steps // len(order)))[:fast_steps]
    ref = ReferenceEngine(copy.deepcopy(model), 0.01)
    ref.train(x, y, order[:50])  # first-call overheads out of the timing
    ref_wall, ref_cpu = best_of(lambda: ref.train(x, y, order[:ref_steps]), repeats)
    eng = fast.FastEngine(copy.deepcopy(model), 0.01)
    eng.train(x, y, order[:50])  # compiles or loads the kernel, builds the CSR rows
    fast_wall, fast_cpu = best_of(lambda: eng.train(x, y, fast_order), repeats)
    check_same_training(model, x, y, order[:2000])  # else the ratio would mislead
    gathered = GatheredFastEngine(copy.deepcopy(model), 0.01)
    gathered.train(x, y, order[:50])
    n_gathered = max(fast_steps // 4, 1000)
    gathered_wall, gathered_cpu = best_of(
        lambda: gathered.train(x, y, fast_order[:n_gathered]), repeats
    )

    def build_rows():
        eng.clear_cache()
        eng._rows(x, x.shape[1])

    csr_wall, csr_cpu = best_of(build_rows, repeats)
    return {
        "density": float((x != 0).float().mean()),
        "ref": ref_steps / ref_wall,
        "ref_cpu": ref_steps / ref_cpu,
        "fast": fast_steps / fast_wall,
        "fast_cpu": fast_steps / fast_cpu,
        "fast_gathered": n_gathered / gathered_wall,
        "fast_gathered_cpu": n_gathered / gathered_cpu,
        "csr_us_per_row": csr_wall / len(x) * 1e6,
    }


def _task_data(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if len(x) < TASK_SIZE:
        reps = -(-TASK_SIZE // len(x))
        x, y = x.repeat(reps, 1), y.repeat(reps)
    return x[:TASK_SIZE].contiguous(), y[:TASK_SIZE]


def per_task_seconds(x: torch.Tensor, y: torch.Tensor, repeats: int) -> dict:
    """What a task costs besides its training pass, one thread, best of ``repeats``:

    - ``measure``: ``permuted.measure`` as the run calls it (``measure_model`` with
      ``hidden_layers=True`` on all 60k images, the task's permutation P applied through
      the first layer's columns, so x[:, P] is never built; the first layer from the
      engine's CSR rows; one sweep of sufficient statistics), in thread CPU time;
      ``measure_cores``: the same on every core's thread (wall), as a run alone on the
      machine measures (its torch threads at the default; a worker of a full sweep has one);
      ``measure_streamed``: the same metrics from ``measure_model``'s streaming
      accumulators (float64 grams) over the same first layer, the previous path;
      ``measure_before``: as before the sparse first layer, PyTorch's dense first layer
      on a column-permuted copy;
    - ``measure_built``: the same metrics on a built x[:, P] (what a run with the
      reference engine does), and ``gather``: building x[:, P] itself;
    - ``forward``: one eval-mode forward pass over 60k (the least any measuring costs);
    - ``checkpoint``: appending the task's row to metrics.jsonl and saving the checkpoint,
      late in a run (199 rows already written).
    """
    from plasticollapse.engines import fast_measure
    from plasticollapse.metrics.measure import measure_model, mlp_forward
    from plasticollapse.runs.folder import RunFolder
    from plasticollapse.studies.permuted import run as permuted
    from plasticollapse.training.loop import fresh_state

    x, y = _task_data(x, y)
    torch.manual_seed(0)
    model = MLP(x.shape[1], HIDDEN, 10)
    perm = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(3))
    x_t = permuted.permute_pixels(x, perm)

    def forward():
        with torch.no_grad():
            for chunk in x.split(1024):
                model(chunk)

    def measure_streamed():  # permuted.measure before the one sweep (issue 19, part 4)
        first = fast_measure.first_layer_outputs(model, x, perm)
        twin = model if first is not None else permuted.reading_unpermuted(model, perm)
        forward = mlp_forward(twin, x, first)
        return measure_model(twin, x, y, 10, hidden_layers=True, forward=forward)

    def measure_before():  # permuted.measure before the sparse first layer
        twin = permuted.reading_unpermuted(model, perm)
        return measure_model(twin, x, y, 10, hidden_layers=True)

    def measure_on_every_core():  # the sweep's threads follow torch's count
        before = torch.get_num_threads()
        torch.set_num_threads(os.cpu_count() or 1)
        try:
            return permuted.measure(model, x, y, 10, perm)
        finally:
            torch.set_num_threads(before)

    permuted.measure(model, x, y, 10, perm)  # compiles the kernel, builds the rows
    out = {
        "measure": best_of(lambda: permuted.measure(model, x, y, 10, perm), repeats)[1],
        "measure_wall": best_of(lambda: permuted.measure(model, x, y, 10, perm), repeats)[0],
        "measure_streamed": best_of(measure_streamed, repeats)[1],
        "measure_before": best_of(measure_before, repeats)[1],
        "measure_built": best_of(
            lambda: measure_model(model, x_t, y, 10, hidden_layers=True), repeats
        )[0],
        "measure_cores": best_of(measure_on_every_core, repeats)[0],
        "gather": best_of(lambda: permuted.permute_pixels(x, perm), repeats)[0],
        "forward": best_of(forward, repeats)[0],
    }
    row = {"task": 0, "accuracy": 0.9, "loss": 0.3, **permuted.measure(model, x, y, 10, perm)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = RunFolder(tmp)
        for task in range(TASKS - 1):
            folder.append_metrics({**row, "task": task})
        state = {**fresh_state(), "model": model.state_dict()}

        def checkpoint():
            folder.append_metrics(row)
            folder.save_checkpoint(state)

        out["checkpoint"] = best_of(checkpoint, repeats)[0]
    return out


def measure_pieces(x: torch.Tensor, y: torch.Tensor, repeats: int) -> dict[str, float]:
    """Where ``permuted.measure``'s time goes: each stage of
    :func:`~plasticollapse.engines.fast_statistics.mlp_metrics` run alone over the task's
    60k rows in its blocks, one thread, best of ``repeats`` (wall): the first layer (the
    sparse rows or the dense product, as the measuring chooses), the deeper layers, the
    two hidden layers' grams, the per-block unit, class and cross-entropy sums, and the
    second sweep over the features (centring, the within-class scatter, NC4)."""
    from plasticollapse.engines import fast
    from plasticollapse.engines import fast_statistics as fs
    from plasticollapse.engines.fast_measure import SPARSE_DENSITY, first_layer_rows

    x, y = _task_data(x, y)
    torch.manual_seed(0)
    model = MLP(x.shape[1], HIDDEN, 10)
    perm = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(3))
    n, block = len(x), fs.BLOCK
    starts = range(0, n, block)
    rows = fast.shared_rows(x, x.shape[1])
    w1t = fs._first_weights(model, perm)
    b1 = np.ascontiguousarray(model.hidden_linears[0].bias.detach().numpy())
    deeper = [fs._transposed(layer) for layer in model.hidden_linears[1:]]
    head_t, head_b = fs._transposed(model.classifier)
    labels = np.ascontiguousarray(y.numpy(), dtype=np.int64)
    acts = [np.empty((n, w), np.float32) for w in HIDDEN]
    x_dense, w1 = x.reshape(n, -1).contiguous(), torch.from_numpy(w1t)
    unit_buffers = [(np.zeros(w), np.zeros(1)) for w in HIDDEN]  # the layers' unit sums

    def first():
        for s in starts:
            if rows.density > SPARSE_DENSITY:
                fs._dense_first_layer(
                    x_dense[s : s + block], w1, b1, acts[0][s : s + block], *unit_buffers[0]
                )
            else:
                first_layer_rows(
                    w1t, b1, True, rows.indptr[s : s + block + 1], rows.indices,
                    rows.values, rows.xd, acts[0][s : s + block],
                )  # fmt: skip

    def layers():
        for s in starts:
            for k, (wt, b) in enumerate(deeper):
                fs._relu_layer(
                    acts[k][s : s + block], wt, b, acts[k + 1][s : s + block], *unit_buffers[k + 1]
                )

    def grams():
        for a in acts[:-1]:
            gram = np.zeros((a.shape[1], a.shape[1]))
            for s in starts:
                fs.add_block_gram(gram, a[s : s + block])

    def sums():
        sums_, counts = np.zeros((10, HIDDEN[-1])), np.zeros(10, np.int64)
        predictions, logits = np.empty(n, np.int64), np.empty((block, 10), np.float32)
        for s in starts:
            if rows.density <= SPARSE_DENSITY:  # else the dense first layer sums its block
                fs.unit_sums(acts[0][s : s + block], *unit_buffers[0])
            z = np.dot(acts[-1][s : s + block], head_t, out=logits[: len(labels[s : s + block])])
            fs.cross_entropy_sums(z + head_b, labels[s : s + block], predictions[s : s + block])
            fs.class_sums(acts[-1][s : s + block], labels[s : s + block], sums_, counts)
        return predictions, sums_, counts

    first()
    layers()
    predictions, class_sums, counts = sums()
    out = {
        "first layer": best_of(first, repeats)[0],
        "deeper layers": best_of(layers, repeats)[0],
        "grams": best_of(grams, repeats)[0],
        "sums": best_of(sums, repeats)[0],
        "second sweep": best_of(
            lambda: fs._class_statistics(acts[-1], labels, predictions, class_sums, counts),
            repeats,
        )[0],
    }
    out["whole"] = best_of(lambda: fs.mlp_metrics(model, x, y, 10, columns=perm), repeats)[0]
    return out


def remedy_cases():
    """(label, remedies factory) of the remedies timed beside plain."""
    from plasticollapse.remedies.cbp import ContinualBackprop
    from plasticollapse.remedies.etf_head import ETFHead
    from plasticollapse.remedies.l2_init import L2Init
    from plasticollapse.remedies.redo import ReDo
    from plasticollapse.remedies.shrink_perturb import ShrinkPerturb
    from plasticollapse.remedies.weight_decay import WeightDecay

    return [
        ("plain", lambda: []),
        ("weight_decay", lambda: [WeightDecay(1e-3)]),
        ("l2_init", lambda: [L2Init(1e-3)]),
        ("cbp", lambda: [ContinualBackprop(1e-4, 0.99, 100, "adaptable_contribution")]),
        ("cbp (contribution)", lambda: [ContinualBackprop(1e-4, 0.99, 100, "contribution")]),
        ("etf_head", lambda: [ETFHead(1.0)]),
        ("shrink_perturb every 1000", lambda: [ShrinkPerturb(0.8, 0.01, 1000)]),
        ("redo every 1000", lambda: [ReDo(0.1, 1000)]),
    ]


def remedies_one_core(x, y, steps: int, repeats: int) -> dict[str, float]:
    """Fast-engine updates/s (thread CPU time, best of ``repeats``) with each remedy, on
    the same data and order; all cases are timed in turn within each repeat, so that
    load on the machine hits them alike."""
    from plasticollapse.remedies import RemedyContext

    torch.manual_seed(0)
    base = MLP(x.shape[1], HIDDEN, 10)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    order = order.repeat(-(-steps // len(order)))[:steps]
    columns = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(2))
    rates: dict[str, float] = {}
    for _ in range(repeats):
        for label, make in remedy_cases():
            model, remedies = copy.deepcopy(base), make()
            for remedy in remedies:
                remedy.bind(model, RemedyContext(seed=0, num_classes=10))
            engine = fast.FastEngine(model, 0.01, remedies)
            engine.train(x, y, order[:200], columns=columns)  # compile / load, CSR rows
            cpu = time.thread_time()
            engine.train(x, y, order, columns=columns)
            rates[label] = max(rates.get(label, 0.0), steps / (time.thread_time() - cpu))
    return rates


def reference_architectures(x, y, steps: int, repeats: int) -> dict[str, float]:
    """Reference-engine updates/s of the plain MLP and of its layer-norm and CReLU
    variants (which the fast engine does not run), thread CPU time."""
    rates = {}
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))[:steps]
    for label, options in (
        ("plain", {}),
        ("layer_norm", {"layer_norm": True}),
        ("crelu", {"crelu": True}),
    ):
        torch.manual_seed(0)
        engine = ReferenceEngine(MLP(x.shape[1], HIDDEN, 10, **options), 0.01)
        engine.train(x, y, order[:50])
        rates[label] = steps / best_of(lambda e=engine: e.train(x, y, order), repeats)[1]
    return rates


def compile_seconds() -> tuple[float, float]:
    """(cold, warm) seconds to get the paper MLP's kernels, in fresh processes."""
    code = "from plasticollapse.engines import fast; print(fast.warmup(3))"
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        times = []
        for _ in range(2):  # first: empty cache (compile); second: load from the cache
            out = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            )
            times.append(float(out.stdout.strip().splitlines()[-1]))
    return times[0], times[1]


def _worker(rank: int, steps: int, rounds: int, barrier, queue) -> None:
    torch.set_num_threads(1)
    fast.warmup(len(HIDDEN))
    x, y = mnist_like(TASK_SIZE, density=0.19, seed=10 + rank)
    torch.manual_seed(rank)
    eng = fast.FastEngine(MLP(784, HIDDEN, 10), 0.01)
    order = torch.randperm(TASK_SIZE)
    order = order.repeat(-(-steps // TASK_SIZE))[:steps]
    eng.train(x, y, order[:10])  # build the CSR rows before the clock starts
    for rnd in range(rounds):
        barrier.wait()  # all workers start each round together
        start, cpu = time.perf_counter(), time.thread_time()
        eng.train(x, y, order)
        queue.put((rnd, steps, start, time.perf_counter(), time.thread_time() - cpu))


def study_throughput(workers: int, steps: int, rounds: int) -> tuple[float, float]:
    """Total steps/s of ``workers`` processes, one fast-engine run each, one thread each.

    Returns (wall, cpu): the best round's total steps over its wall time (first start to
    last end), and the total of each worker's steps over its own thread CPU time (what the
    cores deliver when nothing else runs on them).
    """
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(workers), ctx.Queue()
    args = (steps, rounds, barrier, queue)
    procs = [ctx.Process(target=_worker, args=(r, *args)) for r in range(workers)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in range(workers * rounds)]
    for p in procs:
        p.join()
    wall = cpu = 0.0
    for rnd in range(rounds):
        rows = [r for r in results if r[0] == rnd]
        span = max(r[3] for r in rows) - min(r[2] for r in rows)
        wall = max(wall, sum(r[1] for r in rows) / span)
        cpu = max(cpu, sum(r[1] / r[4] for r in rows))
    return wall, cpu


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h ({seconds / 60:.0f} min)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ref-steps", type=int, default=2000)
    parser.add_argument("--fast-steps", type=int, default=120_000)
    parser.add_argument("--study-steps", type=int, default=120_000, help="per worker, round")
    parser.add_argument("--remedy-steps", type=int, default=60_000, help="per remedy, repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--run-tasks", type=int, default=20, help="tasks of the whole run")
    parser.add_argument("--quick", action="store_true", help="fewer steps, for a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.ref_steps, args.fast_steps, args.study_steps = 300, 20_000, 30_000
        args.remedy_steps = 10_000
        args.repeats = 2
    torch.set_num_threads(1)

    print(f"torch {torch.__version__}, {os.cpu_count()} cores; MLP 784-100-100-100-10, lr 0.01")
    cold, warm = compile_seconds()
    print(f"fast engine compile: {cold:.1f} s cold (empty cache), {warm:.2f} s from the cache")
    fast.warmup(len(HIDDEN))

    datasets = {"synthetic MNIST-like": mnist_like(TASK_SIZE, density=0.19)}
    fm = fashion_mnist()
    if fm is not None:
        datasets["Fashion-MNIST (real)"] = fm
    else:
        print("Fashion-MNIST not found; synthetic data only")

    results = {}
    print("\nOne core (steps/s; best of repeats; wall | thread CPU):")
    for name, (x, y) in datasets.items():
        r = one_core(x, y, args.ref_steps, args.fast_steps, args.repeats)
        results[name] = r
        print(f"  {name}: {100 * (1 - r['density']):.0f}% zero inputs")
        print(f"    reference          {r['ref']:>9,.0f} | {r['ref_cpu']:>9,.0f}")
        print(f"    fast               {r['fast']:>9,.0f} | {r['fast_cpu']:>9,.0f}")
        print(
            f"    fast, gathered W1  {r['fast_gathered']:>9,.0f} | {r['fast_gathered_cpu']:>9,.0f}"
        )
        print(
            f"    speed-up fast/reference: {r['fast'] / r['ref']:.0f}x wall, "
            f"{r['fast_cpu'] / r['ref_cpu']:.0f}x CPU; transposed W1 (the package's) is "
            f"{r['fast'] / r['fast_gathered']:.1f}x a gathered one (fast_layouts.py)"
        )
        print(f"    CSR rows of a task: {r['csr_us_per_row']:.2f} us/sample (once per task)")

    base = results["synthetic MNIST-like"]
    target = base["fast"] >= 100_000 and base["fast"] >= 30 * base["ref"]
    print(
        f"  target (>= 100,000 steps/s and >= 30x, MNIST-like): "
        f"{'met' if target else 'NOT met'} ({base['fast']:,.0f} steps/s, "
        f"{base['fast'] / base['ref']:.0f}x)"
    )

    print("\nRemedies in the fast engine, one core (updates/s, thread CPU, best of repeats):")
    for name, (x, y) in datasets.items():
        rates = remedies_one_core(x, y, args.remedy_steps, args.repeats)
        print(f"  {name}:")
        for label, rate in rates.items():
            print(f"    {label:<26} {rate:>9,.0f}  {rate / rates['plain']:.2f} x plain")
        targets = {"cbp": 0.5, "l2_init": 0.7, "weight_decay": 0.7}
        verdicts = []
        for label, target in targets.items():
            ratio = rates[label] / rates["plain"]
            verdicts.append(f"{label} {ratio:.2f} {'met' if ratio >= target else 'NOT met'}")
            verdicts[-1] += f" (>= {target})"
        print(f"    targets: {', '.join(verdicts)}")
    x, y = datasets["synthetic MNIST-like"]
    ref = reference_architectures(x, y, args.ref_steps, args.repeats)
    print(
        "  reference engine (what runs layer_norm / crelu), synthetic MNIST-like: "
        + ", ".join(f"{k} {v:,.0f}" for k, v in ref.items())
        + f" updates/s; the fast engine's plain: {results['synthetic MNIST-like']['fast_cpu']:,.0f}"
    )

    print("\nPer task besides training, one thread (s; best of repeats):")
    task_costs = {}
    for name, (x, y) in datasets.items():
        c = per_task_seconds(x, y, args.repeats)
        task_costs[name] = c
        print(
            f"  {name}: measure {c['measure']:.3f} s CPU, {c['measure_wall']:.3f} s wall "
            f"(target <= 0.1 s; on {os.cpu_count()} threads {c['measure_cores']:.3f} s wall, "
            f"{c['measure_wall'] / c['measure_cores']:.2f}x; streamed accumulators: "
            f"{c['measure_streamed']:.3f}, "
            f"{c['measure_streamed'] / c['measure']:.2f}x; before the sparse first layer: "
            f"{c['measure_before']:.3f}, {c['measure_before'] / c['measure']:.2f}x; on a built "
            f"x[:, P]: {c['measure_built']:.3f} + gather {c['gather']:.3f}); forward alone "
            f"{c['forward']:.3f}; row + checkpoint {c['checkpoint']:.3f}"
        )
        pieces = measure_pieces(x, y, args.repeats)
        whole_measure = pieces.pop("whole")
        print(
            "    where the one sweep's time goes (wall): "
            + ", ".join(f"{k} {v:.3f}" for k, v in pieces.items())
            + f"; sum {sum(pieces.values()):.3f} vs the whole sweep {whole_measure:.3f}"
        )
    fashion_name = "Fashion-MNIST (real)" if "Fashion-MNIST (real)" in results else None
    whole = whole_run(args.run_tasks)
    ref_name = fashion_name or "synthetic MNIST-like"
    ref_rate, ref_cpu_rate = results[ref_name]["ref"], results[ref_name]["ref_cpu"]
    print(
        f"\nThe whole {whole['tasks']}-task Permuted run in a fresh process ({whole['data']} "
        f"Fashion-MNIST-sized data; start-up, data, training, measuring every task, saving):"
    )
    print(
        f"  {whole['wall']:.1f} s wall, {whole['cpu']:.1f} s CPU (imports "
        f"{whole['cpu_imports']:.1f}, data {whole['cpu_data']:.1f}); measuring "
        f"{whole['measuring']:.1f} s wall"
    )
    ratio, ratio_cpu = whole["steps_per_s"] / ref_rate, whole["steps_per_cpu_s"] / ref_cpu_rate
    print(
        f"  {whole['steps_per_s']:,.0f} steps/s vs the autograd loop's {ref_rate:,.0f} ({ref_name}"
        f", training only): {ratio:.1f}x wall, {ratio_cpu:.1f}x CPU (target >= 30x: "
        f"{'met' if ratio >= 30 else 'NOT met'})"
    )
    workers = args.workers
    rounds = max(args.repeats // 2, 1)
    study, study_cpu = study_throughput(workers, args.study_steps, rounds)
    print(
        f"\nStudy throughput, {workers} processes x 1 thread (synthetic MNIST-like, "
        f"best of {rounds} rounds of {args.study_steps:,} steps each):"
    )
    print(f"  total {study:,.0f} steps/s wall ({study / workers:,.0f} per process)")
    print(f"  total {study_cpu:,.0f} steps/s by thread CPU time (if nothing else ran)")

    print(f"\nProjected full Permuted MNIST study ({STUDY_STEPS / 1e6:.1f}M steps, {RUNS} runs):")
    cost = task_costs["synthetic MNIST-like"]
    per_task = cost["measure"] + cost["checkpoint"]
    train_s = STUDY_STEPS / study
    # The fast engine takes each task's permutation itself: the CSR rows of the training
    # set are built once per run, not per task (before: once per task, on a built x[:, P]).
    csr_s = base["csr_us_per_row"] * 1e-6 * TASK_SIZE * RUNS / workers
    csr_per_task_s = csr_s * TASKS
    measure_s = per_task * TASKS * RUNS / workers
    before_s = (cost["measure_built"] + cost["gather"] + cost["checkpoint"]) * TASKS * RUNS
    before_s = before_s / workers + csr_per_task_s
    print(f"  training            {hours(train_s)}  (at {study:,.0f} steps/s, {workers} processes)")
    print(f"  CSR rows, once/run  {hours(csr_s)}  (once per task: {hours(csr_per_task_s)})")
    print(
        f"  measuring + saving  {hours(measure_s)} ({per_task:.3f} s x {TASKS} tasks x "
        f"{RUNS} runs / {workers}; building x[:, P] and its CSR rows each task instead: "
        f"{hours(before_s)})"
    )
    ref_s = STUDY_STEPS / base["ref"] / workers
    total = train_s + csr_s + measure_s
    print(
        f"  total               {hours(total)}  (target <= 30 min: "
        f"{'met' if total <= 1800 else 'NOT met'})"
    )
    streamed = (cost["measure_streamed"] + cost["checkpoint"]) * TASKS * RUNS / workers
    print(
        f"  with the streamed accumulators' measuring ({cost['measure_streamed']:.3f} s a task): "
        f"{hours(train_s + csr_s + streamed)}"
    )
    before = (cost["measure_before"] + cost["checkpoint"]) * TASKS * RUNS / workers
    print(
        f"  with the measuring before the sparse first layer ({cost['measure_before']:.3f} s "
        f"a task): {hours(train_s + csr_s + before)}"
    )
    total_cpu = STUDY_STEPS / study_cpu + csr_s + measure_s
    print(f"  total at the CPU-time throughput: {hours(total_cpu)}")
    for name, c in task_costs.items():
        if name != "synthetic MNIST-like":
            extra = (c["measure"] - cost["measure"]) * TASKS * RUNS / workers
            print(f"  with {name}'s measuring cost instead: {extra / 60:+.1f} min")
    print(f"  reference engine, same {workers} cores: {hours(ref_s)} training alone")


if __name__ == "__main__":
    main()
