"""How an online run is trained.

Every engine has ``train(x, y, order) -> OnlineStats``: one prequential pass over
``x[order]`` that updates the model's parameters in place.

- ``reference``: PyTorch autograd + ``torch.optim.SGD``; any model, batch size, device.
- ``fast``: a fused, compiled per-sample SGD step for ReLU MLPs at batch size 1 on the CPU
  (:mod:`plasticollapse.engines.fast`).
"""

from __future__ import annotations

from torch import nn

from plasticollapse.engines.reference import ReferenceEngine
from plasticollapse.engines.stats import OnlineStats

ENGINES = ("auto", "fast", "reference")

__all__ = ["ENGINES", "OnlineStats", "ReferenceEngine", "make_engine"]


def make_engine(name: str, model: nn.Module, lr: float, batch_size: int):
    """Build an engine. ``auto`` takes ``fast`` whenever it applies, else ``reference``.

    Asking for ``fast`` where it cannot apply (GPU, batch size > 1, not a ReLU MLP) raises a
    ValueError that says why.
    """
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    if name == "reference":
        return ReferenceEngine(model, lr, batch_size)
    from plasticollapse.engines import fast

    reason = fast.unsupported_reason(model, batch_size)
    if reason is None:
        return fast.FastEngine(model, lr)
    if name == "fast":
        raise ValueError(f"the fast engine does not apply: {reason}; use --engine reference")
    return ReferenceEngine(model, lr, batch_size)
