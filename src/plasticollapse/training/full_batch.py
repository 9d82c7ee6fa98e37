"""Full-batch SGD steps in the compiled mini-batch engine: the plasticity probe's training.

A probe (:func:`~plasticollapse.metrics.trainability.plasticity_score`) takes ``n`` SGD
steps on one fixed batch of B samples. That is one pass of the mini-batch engine with
mini-batches of B over the batch's indices repeated n times (``order = [0..B-1] * n``):
each mini-batch is the whole batch, its mean cross-entropy and SGD update those of
``torch.optim.SGD`` on ``F.cross_entropy`` (engines/minibatch_kernels.py), float32
rounding apart. On label_permuted's probe (256 samples, 784-300-150-10, 100 steps)
autograd spent ~0.55 s a task, most of such a run's time.
"""

from __future__ import annotations

import torch
from torch import nn

from plasticollapse.training.engine_choice import RunFacts, fast_reason, make_engine


def compiled_steps_apply(model: nn.Module, batch: int, masked_head: bool = False) -> bool:
    """Whether :func:`full_batch_steps` runs ``model`` on a batch of ``batch`` samples."""
    facts = RunFacts(batch, "cross_entropy", masked_head, (), ())
    return batch > 1 and fast_reason(facts, model) is None


def full_batch_steps(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float,
    masked_head: bool = False,
) -> None:  # fmt: skip
    """``steps`` full-batch SGD steps (lr) of the cross-entropy on (x, y), in place, in the
    compiled mini-batch engine (check :func:`compiled_steps_apply` first)."""
    engine = make_engine("fast", model, lr, len(x), masked_head=masked_head)
    engine.train(x, y, torch.arange(len(x)).repeat(steps))
