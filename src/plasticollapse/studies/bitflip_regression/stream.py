"""The slowly-changing regression problem (Dohare et al., "Loss of plasticity in deep
continual learning", Nature 2024; the "bit-flipping" problem of their public code,
lop/slowly_changing_regression/slowly_changing_regression.py and lop/nets/fix_ltu_net.py in
github.com/shibhansh/loss-of-plasticity). Written from their description, not their code.

The target is a fixed random network of linear threshold units (LTUs)::

    W1 in {-1, +1}^(H x m), b1 in {-1, +1}^H, W2 in {-1, +1}^(n x H), b2 in {-1, +1}^n
    S_i   = (m - sum_j W1_ij + b1_i) / 2          (their formula: about the -1 weights of unit i)
    tau_i = beta (m + 1) - S_i                      (unit i's threshold)
    f_i(x) = 1 if (W1 x + b1)_i > tau_i else 0
    y(x)  = W2 f(x) + b2

with m inputs, H target units (100), n outputs (1 in the source) and beta 0.7. An input
x in {0, 1}^m has two parts: its first ``f`` bits (15) are the *flipping bits*, constant
for ``flip_after`` (10,000) steps and then changed; the other m - f bits are fresh
uniform random bits at every step. Each flip period is one *task*: its input distribution
has only 2^(m - f) points (32 in the source), and the target function is the same fixed
network throughout, so what changes is which region of input space the learner sees.

How the flipping bits change: the source's default (``flip_one`` false) draws all f bits
afresh, uniformly, at every period (``mode = "redraw"``); its ``flip_one`` variant flips one
uniformly chosen bit of the previous period's (``mode = "one"``, the Nature paper's text).

Randomness: the target from ``generator_for(seed, "target")``; period t's flipping bits
from ``generator_for(seed, "flip", t)``; its training inputs' random bits from
``generator_for(seed, "bits", t)`` and its evaluation inputs' from
``generator_for(seed, "eval", t)``, so a resumed run redraws exactly the same stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from plasticollapse.runs.runtime import generator_for

FLIP_MODES = ("redraw", "one")


@dataclass(frozen=True)
class TargetNetwork:
    """The fixed LTU network y(x) = W2 f(x) + b2 (see the module docstring)."""

    w1: torch.Tensor  # (H, m), entries +-1
    b1: torch.Tensor  # (H,)
    tau: torch.Tensor  # (H,) thresholds
    w2: torch.Tensor  # (n, H)
    b2: torch.Tensor  # (n,)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """f(x): 1 where unit i's pre-activation exceeds its threshold tau_i, else 0."""
        return (x @ self.w1.T + self.b1 > self.tau).to(x.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x) @ self.w2.T + self.b2


def target_network(seed: int, inputs: int, hidden: int, outputs: int, beta: float) -> TargetNetwork:
    """The run's target: every weight and bias +-1 with probability 1/2, thresholds from beta."""
    generator = generator_for(seed, "target")

    def signs(*shape: int) -> torch.Tensor:
        return torch.randint(0, 2, shape, generator=generator).float() * 2 - 1

    w1, b1, w2, b2 = signs(hidden, inputs), signs(hidden), signs(outputs, hidden), signs(outputs)
    s = (inputs - w1.sum(dim=1) + b1) / 2
    return TargetNetwork(w1, b1, beta * (inputs + 1) - s, w2, b2)


def flipping_bits(seed: int, task: int, count: int, mode: str) -> torch.Tensor:
    """The ``count`` flipping bits of period ``task`` (float 0/1), from scratch (resumable)."""
    if mode not in FLIP_MODES:
        raise ValueError(f"mode must be one of {', '.join(FLIP_MODES)}; got {mode!r}")
    first = task if mode == "redraw" else 0
    bits = torch.randint(0, 2, (count,), generator=generator_for(seed, "flip", first)).float()
    if mode == "one" and count:
        for t in range(1, task + 1):
            j = int(torch.randint(count, (1,), generator=generator_for(seed, "flip", t)))
            bits[j] = 1 - bits[j]
    return bits


def task_inputs(
    seed: int, task: int, n: int, inputs: int, flipping: int, mode: str, purpose: str = "bits"
) -> torch.Tensor:
    """``n`` inputs (n x m float 0/1) of period ``task``: its flipping bits, then fresh bits
    drawn from ``generator_for(seed, purpose, task)``."""
    flip = flipping_bits(seed, task, flipping, mode).expand(n, flipping)
    generator = generator_for(seed, purpose, task)
    rest = torch.randint(0, 2, (n, inputs - flipping), generator=generator).float()
    return torch.cat([flip, rest], dim=1)
