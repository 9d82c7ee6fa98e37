"""How an online run is trained: engines behind one :class:`Engine` protocol.

Every engine has ``train(x, y, order, columns=None) -> OnlineStats``: one prequential pass
over ``x[order]`` (with ``columns``, a permutation P of the inputs: over ``x[order][:, P]``)
that updates the model's parameters in place.

- ``reference``: PyTorch autograd + ``torch.optim.SGD``; any model, batch size, device, and
  any remedy (:mod:`plasticollapse.remedies`): their loss terms, weight decay and
  ``after_step`` hooks run inside its loop.
- ``fast``: a fused, compiled per-sample SGD step for ReLU MLPs at batch size 1 on the CPU
  (:mod:`plasticollapse.engines.fast`). It runs the per-step work of the remedies that
  declare a compiled form (weight decay, L2 Init, Continual Backprop; a fixed ETF head),
  those acting every k steps between segments of a pass, and those acting between passes
  (at a task boundary: Shrink & Perturb, ReDo, resets), which change the model's
  parameters that every pass reads afresh. Not the NC1 regulariser (a loss term through
  autograd), nor the MLP's layer norm or CReLU.

Which engine runs a run is chosen in one place, above this floor:
:func:`plasticollapse.training.choose_engine` (and ``training.make_engine`` builds it).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from plasticollapse.engines.reference import ReferenceEngine
from plasticollapse.engines.stats import OnlineStats

__all__ = [
    "Engine",
    "OnlineStats",
    "ReferenceEngine",
]


@runtime_checkable
class Engine(Protocol):
    """What the online study needs of an engine."""

    name: str

    def train(
        self, x: Tensor, y: Tensor, order: Tensor, columns: Tensor | None = None
    ) -> OnlineStats:
        """One prequential pass over ``x[order]`` (columns permuted by ``columns``):
        each sample is scored before the update it causes."""
