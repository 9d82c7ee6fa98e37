"""Trainability probes: how much a network can still learn, measured on a fixed batch.

The plasticity score (in the spirit of Lyle et al., "Understanding Plasticity in Neural
Networks", ICML 2023, who measure how well a network can still fit a fresh target): a copy of
the network takes ``steps`` plain SGD steps on a fixed probe batch (x, y), and::

    score = 1 - L_after / L_before

with L the probe batch's mean loss before and after those steps. A network that can still
learn drives its loss down (score towards 1); one that has lost plasticity barely moves it
(score near 0); a score below 0 means the steps made the loss worse (lr too large). The
network itself is never changed: the probe trains a deep copy, in train mode, and the
global RNG is untouched.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["plasticity_score", "sgd_steps"]

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``steps(model, x, y, n, lr)``: n full-batch SGD steps on (x, y), in place (the default:
#: autograd and ``torch.optim.SGD``; a compiled engine's pass, ``training.full_batch``).
Steps = Callable[[nn.Module, torch.Tensor, torch.Tensor, int, float], None]


def _mean_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Loss) -> float:
    with torch.no_grad():
        return float(loss_fn(model(x), y))


def plasticity_score(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int = 100,
    lr: float = 0.01,
    loss_fn: Loss = F.cross_entropy,
    train: Steps | None = None,
) -> dict[str, float]:
    """``{"plasticity_score", "probe_loss_before", "probe_loss_after"}`` (see the module).

    Every step is a full-batch SGD step on (x, y) with ``loss_fn`` (cross-entropy for
    classifiers; pass ``F.mse_loss`` for regression), taken by autograd (:func:`sgd_steps`)
    or by ``train`` (the same steps of the cross-entropy in a compiled engine). Losses are
    measured in the mode the network is in (so BatchNorm uses the same statistics before
    and after).
    """
    if steps < 0 or lr < 0:
        raise ValueError(f"steps and lr must be >= 0; got steps={steps}, lr={lr}")
    probe = copy.deepcopy(model)
    before = _mean_loss(probe, x, y, loss_fn)
    with torch.random.fork_rng(devices=[]):  # dropout etc. must not move the caller's RNG
        (train or partial(sgd_steps, loss_fn=loss_fn))(probe, x, y, steps, lr)
    after = _mean_loss(probe, x, y, loss_fn)
    score = 1.0 - after / before if before > 0 else 0.0
    return {"plasticity_score": score, "probe_loss_before": before, "probe_loss_after": after}


def sgd_steps(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float,
    loss_fn: Loss = F.cross_entropy,
) -> None:  # fmt: skip
    """``steps`` full-batch steps of ``torch.optim.SGD`` (lr) on ``loss_fn(model(x), y)``."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
