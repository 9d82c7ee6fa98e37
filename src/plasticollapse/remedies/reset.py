"""Resets at every new task: a fresh classifier (``reset_head``) or a fresh network
(``reset_all``, the upper baseline of plasticity: nothing learnt carries over)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from plasticollapse.remedies.base import Remedy


@dataclasses.dataclass
class ResetAll(Remedy):
    """Before every task t >= 1, every trainable parameter takes the value of a freshly
    initialised network's (:func:`~plasticollapse.remedies.functional.fresh_like`, drawn
    from ``generator_for(seed, name, t)``): each task is learnt from scratch, the
    plasticity of a new network by construction. Compared with it, a method's accuracy
    tells how much of a fresh network's plasticity it keeps (Dohare et al. 2024 plot
    "a network reinitialised at each task" the same way).

    - Permuted study: at every task start.
    - Warm start: every probe starts from the fresh network (the warm-up is plain): the
      fresh-network baseline of the probe.

    Frozen parameters (a fixed ``etf_head`` classifier) are kept; the optimizer's state of
    the reset parameters (momentum) is cleared.
    """

    name: ClassVar[str] = "reset_all"

    def reset(self, model, optimizer, index: int) -> None:
        from plasticollapse.remedies.functional import fresh_like, load_trainable
        from plasticollapse.runs.runtime import generator_for

        fresh = fresh_like(model, generator_for(self.context.seed, self.name, index))
        load_trainable(model, fresh, optimizer, self.parameter_names(model))

    def parameter_names(self, model) -> set[str] | None:
        """The parameters a reset replaces (None: all)."""
        return None

    def at_task_start(self, model, optimizer, task: int, inputs) -> dict[str, Any]:
        self.reset(model, optimizer, task)
        return {}

    def at_probe_start(self, model, epoch: int) -> None:
        self.reset(model, None, epoch)


@dataclasses.dataclass
class ResetHead(ResetAll):
    """As ``reset_all``, but only the classifier (``model.classifier``: weight and bias)
    is reset: the features learnt so far are kept, the readout relearnt (Nikishin et al.
    2022, "The Primacy Bias in Deep Reinforcement Learning", reset the last layers)."""

    name: ClassVar[str] = "reset_head"

    def parameter_names(self, model) -> set[str] | None:
        return {"classifier.weight", "classifier.bias"}
