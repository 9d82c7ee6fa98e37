"""How an online run is trained: engines behind one :class:`Engine` protocol.

Every engine has ``train(x, y, order, columns=None) -> OnlineStats``: one prequential pass
over ``x[order]`` (with ``columns``, a permutation P of the inputs: over ``x[order][:, P]``)
that updates the model's parameters in place.

- ``reference``: PyTorch autograd + ``torch.optim.SGD``; any model, batch size, device, and
  any remedy (:mod:`plasticollapse.remedies`): their loss terms, weight decay and
  ``after_step`` hooks run inside its loop.
- ``fast`` at batch size > 1 (or with a class-incremental masked head): the compiled
  mini-batch step (:mod:`plasticollapse.engines.minibatch`), with the remedies
  :func:`~plasticollapse.engines.minibatch.minibatch_supports` accepts (not Continual
  Backprop).
- ``fast`` at batch size 1: a fused, compiled per-sample SGD step for ReLU MLPs on the CPU
  (:mod:`plasticollapse.engines.fast`). It runs the per-step work of the remedies that
  declare a compiled form (weight decay, L2 Init, Continual Backprop; a fixed ETF head),
  those acting every k steps between segments of a pass, and those acting between passes
  (at a task boundary: Shrink & Perturb, ReDo, resets), which change the model's
  parameters that every pass reads afresh. Not the NC1 regulariser (a loss term through
  autograd), nor the MLP's layer norm or CReLU: ``auto`` then takes ``reference`` and says
  so once.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from torch import Tensor, nn

from plasticollapse.engines.reference import ReferenceEngine
from plasticollapse.engines.stats import OnlineStats

if TYPE_CHECKING:
    from plasticollapse.remedies.base import Remedy

ENGINES = ("auto", "fast", "reference")

__all__ = [
    "ENGINES",
    "Engine",
    "OnlineStats",
    "ReferenceEngine",
    "make_engine",
    "remedies_reason",
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


def make_engine(
    name: str,
    model: nn.Module,
    lr: float,
    batch_size: int,
    remedies: Sequence[Remedy] = (),
) -> Engine:
    """Build an engine. ``auto`` takes ``fast`` whenever it applies, else ``reference``.

    Batch size > 1 or a masked head takes the mini-batch engine. Asking for ``fast`` where
    it cannot apply (GPU, not a plain ReLU MLP, a remedy without a compiled form) raises a
    ValueError that says why; ``auto`` falls back to ``reference`` and, where the fast
    engine would otherwise have been expected (batch size 1 on the CPU), says why once per
    process on stderr.
    """
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    if name == "reference":
        return ReferenceEngine(model, lr, batch_size, remedies)
    from plasticollapse.engines import fast, minibatch

    if minibatch.routes_here(model, batch_size):  # batch > 1 or a masked head
        reason = minibatch.minibatch_supports(model, batch_size, remedies)
        if reason is None:
            return minibatch.MiniBatchEngine(model, lr, batch_size, remedies)
    else:
        reason = fast.unsupported_reason(model, batch_size) or remedies_reason(remedies)
        if reason is None:
            return fast.FastEngine(model, lr, remedies)
    if name == "fast":
        raise ValueError(f"the fast engine does not apply: {reason}; use --engine reference")
    if batch_size == 1 and not next(model.parameters()).is_cuda:
        say_once(f"engine auto: the reference engine (autograd) runs this, since {reason}")
    return ReferenceEngine(model, lr, batch_size, remedies)


def remedies_reason(remedies: Sequence[Remedy]) -> str | None:
    """Why the fast engine cannot run these remedies (None: it can)."""
    from plasticollapse.engines.fast_plan import merge_terms

    merged = merge_terms(remedies)
    return merged if isinstance(merged, str) else None


_SAID: set[str] = set()


def say_once(message: str) -> None:
    """Print ``message`` to stderr the first time this process asks (a sweep of many runs
    in one process says it once)."""
    if message not in _SAID:
        _SAID.add(message)
        print(message, file=sys.stderr)
