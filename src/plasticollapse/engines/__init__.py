"""How an online run is trained: engines behind one :class:`Engine` protocol.

Every engine has ``train(x, y, order, columns=None) -> OnlineStats``: one prequential pass
over ``x[order]`` (with ``columns``, a permutation P of the inputs: over ``x[order][:, P]``)
that updates the model's parameters in place.

- ``reference``: PyTorch autograd + ``torch.optim.SGD``; any model, batch size, device, and
  any remedy (:mod:`plasticollapse.remedies`): their loss terms, weight decay and
  ``after_step`` hooks run inside its loop.
- ``fast``: a fused, compiled per-sample SGD step for ReLU MLPs at batch size 1 on the CPU
  (:mod:`plasticollapse.engines.fast`). Its step is plain SGD on the cross-entropy, so it
  runs no remedy that acts at every step; remedies acting between passes (at a task
  boundary: Shrink & Perturb, ReDo) work with it, since they change the model's
  parameters, which every pass reads afresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from torch import Tensor, nn

from plasticollapse.engines.reference import ReferenceEngine
from plasticollapse.engines.stats import OnlineStats

if TYPE_CHECKING:
    from plasticollapse.remedies.base import Remedy

ENGINES = ("auto", "fast", "reference")

__all__ = ["ENGINES", "Engine", "OnlineStats", "ReferenceEngine", "make_engine"]


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

    Asking for ``fast`` where it cannot apply (GPU, batch size > 1, not a ReLU MLP, a
    remedy acting at every step) raises a ValueError that says why.
    """
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    if name == "reference":
        return ReferenceEngine(model, lr, batch_size, remedies)
    from plasticollapse.engines import fast

    reason = fast.unsupported_reason(model, batch_size) or _per_step_reason(remedies)
    if reason is None:
        return fast.FastEngine(model, lr)
    if name == "fast":
        raise ValueError(f"the fast engine does not apply: {reason}; use --engine reference")
    return ReferenceEngine(model, lr, batch_size, remedies)


def _per_step_reason(remedies: Sequence[Remedy]) -> str | None:
    """Why the fast engine cannot run these remedies (None: it can)."""
    for remedy in remedies:
        hooks = remedy.per_step_hooks()
        if hooks:
            return (
                f"remedy {remedy.name!r} acts at every step ({', '.join(hooks)}), "
                "which only the reference engine runs"
            )
    return None
