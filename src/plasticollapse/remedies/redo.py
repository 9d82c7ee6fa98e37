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
      fresh weights from ``generator_for(seed, "redo", t)``; or, with ``redo_every`` = k
      > 0, after every k steps of each pass instead (Sokar et al. recycle every 1,000
      gradient steps), scored on the pass's last min(k, 2048) samples, the n-th time
      from ``generator_for(seed, "redo", "step", n)``.
    - Warm start: at every checkpoint, as part of the warm-up and before measuring, scored
      on the warm-up set, fresh weights from ``generator_for(seed, "redo", epoch)``; the
      optimizer's momentum of the recycled weights is cleared.

    Rows get ``redo_units_reset``: the number of units recycled (during the task, with
    ``redo_every``). The ReLU MLP (not CReLU) in both studies; in the warm start also the
    ResNet-18, whose units are the inner channels of each basic block (conv1 -> bn1 ->
    relu -> conv2: :func:`~plasticollapse.remedies.layer_pairs.find_layer_pairs`), reset by
    :func:`~plasticollapse.remedies.pair_remedies.redo_reset_pairs` (fresh filters, bn1's
    affine and running statistics of the channel reset, conv2's input slices zeroed).
    """

    name = "redo"
    redo_tau: float
    redo_every: int = 0

    def __post_init__(self):
        require(self.redo_tau >= 0, f"redo_tau must be >= 0, got {self.redo_tau}")
        require(
            self.redo_every >= 0, f"redo_every must be >= 0 (0: per task), got {self.redo_every}"
        )
        self.count = 0

    @classmethod
    def check(cls, config: Any) -> None:
        model = getattr(config, "model", "mlp")
        require(
            model in ("mlp", "resnet18"),
            f"the redo remedy resets MLP or ResNet-18 units; got model {model!r}",
        )
        require(
            not getattr(config, "crelu", False),
            "the redo remedy scores ReLU units; turn off crelu",
        )

    def recycle(self, model, optimizer, inputs, *keys: Any) -> dict[str, Any]:
        from plasticollapse.models import MLP
        from plasticollapse.remedies.functional import redo_reset
        from plasticollapse.remedies.pair_remedies import redo_reset_pairs
        from plasticollapse.runs.runtime import generator_for

        generator = generator_for(self.context.seed, "redo", *keys)
        if isinstance(model, MLP):
            counts = redo_reset(model, inputs, self.redo_tau, generator, optimizer)
        else:  # the ResNet-18: its blocks' inner channels
            counts = redo_reset_pairs(model, None, inputs, self.redo_tau, generator, optimizer)
        return {"redo_units_reset": sum(counts)}

    def interval(self) -> int:
        return self.redo_every

    def at_interval(self, model, optimizer, inputs) -> dict[str, float]:
        self.count += 1
        return self.recycle(model, optimizer, inputs, "step", self.count)

    def at_task_start(self, model, optimizer, task: int, inputs) -> dict[str, Any]:
        if self.redo_every:
            return {}
        return self.recycle(model, optimizer, inputs, task)

    def at_checkpoint(self, model, optimizer, epoch: int, inputs) -> dict[str, Any]:
        return self.recycle(model, optimizer, inputs, epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count} if self.redo_every else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = int(state.get("count", 0))
