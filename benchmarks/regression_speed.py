"""Batch-1 squared-error training speed: the compiled engine vs the reference engine on the
bit-flipping regression's full-preset learner, and that study's share of ``full/matrix``.

Measures in one run, one thread (``torch.set_num_threads(1)``), on one period of the
study's own stream (``presets/full/bitflip_regression.toml``: 20 input bits, 15 of them
flipping, a 100-unit LTU target, the learner 20-5-1 ReLU, SGD at lr 0.01, 10,000 steps a
period), plain and with each remedy whose per-step work differs (weight decay, L2 Init,
Continual Backprop): steps/s of the reference engine (autograd + ``torch.optim.SGD``, the
loss ``F.mse_loss``) and of the compiled batch-1 engine (``FastEngine(loss=
"squared_error")``), best of ``--repeats`` passes in thread CPU time, and their ratio.

Projected training CPU-hours of the study in ``full/matrix`` (8 settings x 5 seeds, 1e6
steps a run) from those rates alone::

    hours = seeds * sum_settings steps_per_run / rate(setting) / 3600

with plain's rate for the settings that act at period boundaries only (Shrink & Perturb,
ReDo, the resets). The whole run, measuring and start-up included:
``benchmarks/matrix_cost.py --studies bitflip_regression``.

Usage: ``python benchmarks/regression_speed.py [--repeats N]``
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import time
from importlib import resources

import tomllib
import torch

from plasticollapse.engines.fast import FastEngine
from plasticollapse.engines.reference import ReferenceEngine
from plasticollapse.models import MLP
from plasticollapse.remedies import RemedyContext, build_remedies
from plasticollapse.studies.bitflip_regression import stream
from plasticollapse.studies.bitflip_regression.config import Config

#: Remedies whose per-step work differs from plain SGD's (the others act between periods).
PER_STEP = ("plain", "weight_decay", "l2_init", "cbp")
#: The matrix's settings of this study (etf_head does not apply to a regression).
SETTINGS = ("plain", "shrink_perturb", "l2_init", "redo", "weight_decay", "cbp",
            "reset_head", "reset_all")  # fmt: skip
SEEDS = 5


def preset() -> dict:
    path = resources.files("plasticollapse") / "presets" / "full" / "bitflip_regression.toml"
    return tomllib.loads(path.read_text())


def learner(config: Config, name: str):
    """A fresh 20-5-1 learner (seed 0) and the remedy ``name`` bound to it."""
    torch.manual_seed(0)
    model = MLP(config.inputs, config.hidden, config.outputs)
    chosen = () if name == "plain" else (name,)
    remedies = build_remedies(dataclasses.replace(config, remedies=chosen))
    for remedy in remedies:
        remedy.bind(model, RemedyContext(seed=0, num_classes=1))
    return model, remedies


def rate(make, x, y, repeats: int) -> float:
    """Best steps/s (thread CPU time) over ``repeats`` passes of a fresh engine, after one
    warm-up pass (which also compiles)."""
    order = torch.arange(len(x))
    make().train(x, y, order)
    best = float("inf")
    for _ in range(repeats):
        engine = make()
        c0 = time.thread_time()
        engine.train(x, y, order)
        best = min(best, time.thread_time() - c0)
    return len(x) / best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    cfg = preset()
    config = Config(lr=0.01, hidden=tuple(cfg["hidden"]), flip_after=cfg["flip_after"])
    target = stream.target_network(0, config.inputs, config.target_hidden, config.outputs,
                                   config.beta)  # fmt: skip
    x = stream.task_inputs(0, 0, config.flip_after, config.inputs, config.flipping_bits,
                           config.flip)  # fmt: skip
    y = target(x)
    print(f"bitflip_regression: learner {config.inputs}-{config.hidden}-{config.outputs}, "
          f"batch 1, {len(x):,} steps a pass, lr {config.lr}")  # fmt: skip
    rates = {}
    for name in PER_STEP:
        for engine in ("reference", "compiled"):

            def make(name=name, engine=engine):
                model, remedies = learner(config, name)
                if engine == "reference":
                    return ReferenceEngine(model, config.lr, 1, remedies, loss="squared_error")
                return FastEngine(model, config.lr, remedies, loss="squared_error")

            reps = max(1, args.repeats // 2) if engine == "reference" else args.repeats
            rates[(engine, name)] = rate(make, x, y, reps)
            print(f"  {engine:9s} {name:12s} {rates[(engine, name)]:12,.0f} steps/s CPU")
        ratio = rates[("compiled", name)] / rates[("reference", name)]
        print(f"  {name}: compiled / reference = {ratio:.0f}x")
    steps = int(cfg["flip_after"]) * int(cfg["tasks"])
    for engine in ("reference", "compiled"):
        seconds = sum(steps / rates[(engine, s if s in PER_STEP else "plain")] for s in SETTINGS)
        print(f"full/matrix's bitflip_regression ({SEEDS} seeds x {len(SETTINGS)} settings, "
              f"{steps:,} steps a run), training only, {engine}: "
              f"{SEEDS * seconds / 3600:.2f} CPU-hours")  # fmt: skip
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
