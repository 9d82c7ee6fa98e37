"""The plasticity probe's full-batch SGD steps, three ways, one thread, in one run.

A probe trains a copy of the network ``steps`` full-batch SGD steps on one fixed batch
(``metrics/trainability.py``). Timed here on the streams' full-preset probes (256 samples,
100 steps, lr 0.01; random inputs in [-1, 1], as label_permuted's symmetric pixels):

- ``autograd``: ``torch.optim.SGD`` on ``F.cross_entropy`` (``trainability.sgd_steps``),
  what a run with ``engine = "auto"`` or ``"reference"`` takes;
- ``mini-batch pass``: one pass of the compiled mini-batch engine over the batch repeated
  (``order = [0..B-1] * steps``), the compiled probe before the fixed-batch kernel;
- ``fixed batch``: ``engines/fixed_batch.py`` (the first layer kept in the batch's span:
  one B x B x h_1 product a step instead of two B x d x h_1), what ``engine = "fast"`` runs.

Each is the best of ``--repeats`` in thread CPU time (less sensitive to other load than
wall time), printed with its ratio to autograd and to the mini-batch pass.

Usage: ``python benchmarks/probe_speed.py [--repeats 5]``
"""

from __future__ import annotations

import argparse
import copy
import os
import time

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread; set before torch/numba load

import torch  # noqa: E402

from plasticollapse.engines.fixed_batch import fixed_batch_steps  # noqa: E402
from plasticollapse.metrics.trainability import sgd_steps  # noqa: E402
from plasticollapse.models import MLP  # noqa: E402
from plasticollapse.training.engine_choice import make_engine  # noqa: E402

#: The streams' full presets that probe: (name, hidden widths).
PROBES = (("label_permuted", (300, 150)), ("random_labels", (100, 100)))
SAMPLES, STEPS, LR = 256, 100, 0.01


def minibatch_pass(model, x, y, steps, lr):
    engine = make_engine("fast", model, lr, len(x))
    engine.train(x, y, torch.arange(len(x)).repeat(steps))


def best_cpu_seconds(fn, model, x, y, repeats: int) -> float:
    fn(copy.deepcopy(model), x, y, STEPS, LR)  # compiled kernels loaded, caches warm
    best = float("inf")
    for _ in range(repeats):
        probe = copy.deepcopy(model)
        start = time.thread_time()
        fn(probe, x, y, STEPS, LR)
        best = min(best, time.thread_time() - start)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}; {SAMPLES} samples x 784, {STEPS} steps, one thread")
    for name, hidden in PROBES:
        torch.manual_seed(0)
        model = MLP(784, hidden, 10)
        for linear in model.linears:
            linear.reset_parameters()
        x = torch.rand(SAMPLES, 784) * 2 - 1
        y = torch.randint(0, 10, (SAMPLES,))
        ways = {"autograd": sgd_steps, "mini-batch pass": minibatch_pass}
        ways["fixed batch"] = fixed_batch_steps
        seconds = {way: best_cpu_seconds(fn, model, x, y, args.repeats) for way, fn in ways.items()}
        print(f"  {name} (784-{'-'.join(map(str, hidden))}-10):")
        for way, s in seconds.items():
            print(
                f"    {way:<16} {s:.3f} s  {seconds['autograd'] / s:5.2f}x autograd, "
                f"{seconds['mini-batch pass'] / s:5.2f}x the mini-batch pass"
            )


if __name__ == "__main__":
    main()
