"""The bit-flipping study's config: one online regression run (see :mod:`.run`).

Every default is the source's: Dohare et al.'s public code, github.com/shibhansh/
loss-of-plasticity, files lop/slowly_changing_regression/cfg/prob.json (the problem: 20
inputs, 15 flipping bits, a flip every 10,000 steps, a 100-unit LTU target with beta 0.7)
and lop/slowly_changing_regression/cfg/sgd/bp/relu.json (the learner: one hidden layer of
5 ReLU units, SGD, 1e6 steps; step sizes 0.01, 0.003 and 0.001, of which 0.01 is the one
their weight-decay and shrink-and-perturb configs use). :data:`SOURCE` records them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from plasticollapse.remedies import remedy_names
from plasticollapse.remedies.fields import RemedyFields
from plasticollapse.runs.config import ConfigError, field
from plasticollapse.runs.loggers import LoggerFields
from plasticollapse.training.engine_choice import check_engine

NAME = "bitflip_regression"

#: The source's constants (lop/slowly_changing_regression/cfg/prob.json and
#: cfg/sgd/bp/relu.json): the defaults below must equal them (tests/test_bitflip.py).
SOURCE = {
    "num_inputs": 20,
    "num_flipping_bits": 15,
    "flip_after": 10000,
    "num_target_features": 100,
    "beta": 0.7,
    "num_features": 5,
    "hidden_activation": "relu",
    "opt": "sgd",
    "step_size": [0.01, 0.003, 0.001],
    "num_data_points": 1e6,
}

#: Remedies whose training signal needs class labels: refused here, with the reason.
NEEDS_CLASSES = {
    "nc1_reg": "its NC1 term compares classes",
    "etf_head": "a simplex-ETF head needs classes",
}


@dataclasses.dataclass(frozen=True)
class Config(RemedyFields, LoggerFields):
    """One online run on the slowly-changing regression problem.

    A *task* is one flip period (``flip_after`` steps with the same flipping bits); the
    run trains ``tasks`` of them, one sample per step. ``probe_steps``, ``retrained`` and
    ``forgetting`` switch on measurements that cost extra compute (see :mod:`.run`).
    """

    STUDY: ClassVar[str] = "bitflip_regression"
    #: Trained on the squared error (the engine choice reads it: auto keeps autograd).
    LOSS: ClassVar[str] = "squared_error"

    inputs: int = field(20, help="input bits m (the source: 20)")
    flipping_bits: int = field(15, help="slowly-changing input bits f among them (15)")
    flip_after: int = field(10000, help="steps between flips of the flipping bits (10000)")
    flip: Literal["redraw", "one"] = field(
        "redraw", help="redraw: all f bits afresh at a flip (the source); one: flip one bit"
    )
    target_hidden: int = field(100, help="LTU units of the fixed target network (100)")
    beta: float = field(0.7, help="LTU threshold parameter beta of the target (0.7)")
    outputs: int = field(1, help="regression targets n (the source: 1; NRC3 needs n >= 2)")
    hidden: tuple[int, ...] = field((5,), help="the learner's ReLU hidden layer widths (5)")
    lr: float = field(0.01, help="SGD step size (the source: 0.01, 0.003, 0.001)")
    tasks: int = field(100, help="flip periods to train (the source: 1e6 steps / 10000)")
    measure_every: int = field(1, help="measure after every k-th period (and the last)")
    eval_samples: int = field(
        2000, help="inputs of the current period that metrics are measured on"
    )
    probe_steps: int = field(
        0, help="plasticity score: SGD steps of a copy on the new period's batch (0: off)"
    )
    retrained: bool = field(
        False, help="also train a fresh network on each period: retrained_loss (2x cost)"
    )
    forgetting: bool = field(False, help="measure the squared error on period 0's inputs")
    seed: int = field(0, help="fixes the target, the stream and the initialisation")
    out: str = field("runs/bitflip_regression", help="folder of the run folders")
    device: str = field("cpu", help="cpu (a batch-1 net this small is fastest there), cuda")
    threads: int = field(1, help="torch threads (0: torch's default)")
    engine: Literal["auto", "fast", "reference"] = field(
        "auto", help="auto/reference: autograd; fast: the compiled batch-1 squared error"
    )
    progress: bool = field(True, help="show a progress bar")
    loggers: tuple[str, ...] = field((), help="loggers besides metrics.jsonl: tensorboard, wandb")

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.flip not in ("redraw", "one"):
            raise ConfigError(f"flip must be one of redraw, one; got {self.flip!r}")
        positive = ("inputs", "flip_after", "target_hidden", "outputs", "tasks", "eval_samples")
        for name in (*positive, "measure_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {getattr(self, name)}")
        if not 0 <= self.flipping_bits <= self.inputs:
            raise ConfigError(
                f"flipping_bits must be between 0 and inputs ({self.inputs}), "
                f"got {self.flipping_bits}"
            )
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"hidden must be one or more widths >= 1, got {self.hidden}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a finite number > 0, got {self.lr}")
        if not math.isfinite(self.beta):
            raise ConfigError(f"beta must be a finite number, got {self.beta}")
        for name in ("probe_steps", "threads", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        super().__post_init__()
        check_engine(self)  # the one engine choice (training/engine_choice.py)
        for name in remedy_names(self):
            if name in NEEDS_CLASSES:
                raise ConfigError(
                    f"remedies: {name} does not apply to {NAME} ({NEEDS_CLASSES[name]}); "
                    "this study regresses"
                )


def run_label(config: Config) -> str:
    """``lr0.01``, with the remedies joined by ``+`` (``lr0.01_shrink_perturb``)."""
    label = f"lr{config.lr:g}"
    if remedy_names(config):
        label += "_" + "+".join(remedy_names(config))
    return label


def estimated_cost(config: Mapping[str, Any]) -> float:
    """Training steps, in units of 10,000 (a retrained baseline doubles them)."""
    steps = config["tasks"] * config["flip_after"] / 1e4
    return steps * (2 if config.get("retrained") else 1)


def is_measured(config: Config, task: int) -> bool:
    """Metrics after every ``measure_every``-th period (0, k, 2k, ...) and the last."""
    return task % config.measure_every == 0 or task == config.tasks - 1
