"""Full-batch SGD steps, compiled: the plasticity probe's training.

A probe (:func:`~plasticollapse.metrics.trainability.plasticity_score`) takes ``n`` plain
SGD steps on one fixed batch of B samples: each step's mean cross-entropy and update those
of ``torch.optim.SGD`` on ``F.cross_entropy``, float32 rounding apart. They run in
:mod:`plasticollapse.engines.fixed_batch`, the mini-batch engine's step with the first
layer kept in the batch's span (``W_1 = W_1(0) + E^T X``: one B x B product a step
instead of two B x d ones). On label_permuted's probe (256 samples, 784-300-150-10, 100
steps), one thread of a 2-core AMD EPYC: 0.20 s, against 0.54 s as one pass of the
mini-batch engine over the batch repeated and 0.69 s on autograd.
"""

from __future__ import annotations

import math

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
    """``steps`` full-batch SGD steps (lr) of the cross-entropy on (x, y), in place, compiled
    (check :func:`compiled_steps_apply` first; a masked head's classes are read from it).

    A batch of B < 2d samples of d inputs runs in the fixed-batch kernel (its B x B product
    a step is then less work than the two B x d ones it replaces); a larger one as one pass
    of the mini-batch engine over the batch repeated (``order = [0..B-1] * steps``)."""
    from plasticollapse.engines.fixed_batch import fixed_batch_steps

    if len(x) < 2 * math.prod(x.shape[1:]):
        fixed_batch_steps(model, x, y, steps, lr)
        return
    engine = make_engine("fast", model, lr, len(x), masked_head=masked_head)
    engine.train(x, y, torch.arange(len(x)).repeat(steps))
