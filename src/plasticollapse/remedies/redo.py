"""ReDo, Recycling Dormant neurons (Sokar et al., "The Dormant Neuron Phenomenon in Deep
Reinforcement Learning", ICML 2023)."""

from __future__ import annotations

import dataclasses
from typing import Any

from plasticollapse.remedies.base import Remedy, require


@dataclasses.dataclass
class ReDo(Remedy):
    """Re-initialise the hidden units that have gone (almost) silent.

    Unit i of hidden layer l is tau-dormant on a set of inputs when its score::

        s_i = E_x |h_i(x)| / ((1/H) sum_k E_x |h_k(x)|)  <=  redo_tau

    Each dormant unit gets fresh incoming weights and bias (from a freshly initialised
    network) and zero outgoing weights, so it can learn again without perturbing the
    network's output (:func:`~plasticollapse.remedies.functional.redo_reset`). Sokar et al.
    use tau 0.1 (0 in their ReLU experiments: exactly silent units).

    - Permuted study: before every task t >= 1, scored on a sample of the new task's inputs,
      fresh weights from ``generator_for(seed, "redo", t)``.
    - Warm start: at every checkpoint, as part of the warm-up and before measuring, scored
      on the warm-up set, fresh weights from ``generator_for(seed, "redo", epoch)``; the
      optimizer's momentum of the recycled weights is cleared.

    Rows get ``redo_units_reset``: the number of units recycled. MLPs only.
    """

    name = "redo"
    redo_tau: float

    def __post_init__(self):
        require(self.redo_tau >= 0, f"redo_tau must be >= 0, got {self.redo_tau}")

    @classmethod
    def check(cls, config: Any) -> None:
        model = getattr(config, "model", "mlp")
        require(
            model == "mlp",
            f"the redo remedy resets MLP units only; got model {model!r} (use --model mlp)",
        )

    def recycle(self, model, optimizer, index: int, inputs) -> dict[str, Any]:
        from plasticollapse.remedies.functional import redo_reset
        from plasticollapse.runs.runtime import generator_for

        generator = generator_for(self.context.seed, "redo", index)
        counts = redo_reset(model, inputs, self.redo_tau, generator=generator, optimizer=optimizer)
        return {"redo_units_reset": sum(counts)}

    def at_task_start(self, model, optimizer, task: int, inputs) -> dict[str, Any]:
        return self.recycle(model, optimizer, task, inputs)

    def at_checkpoint(self, model, optimizer, epoch: int, inputs) -> dict[str, Any]:
        return self.recycle(model, optimizer, epoch, inputs)
