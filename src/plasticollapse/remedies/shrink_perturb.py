"""Shrink & Perturb (Ash & Adams, "On Warm-Starting Neural Network Training", NeurIPS 2020)."""

from __future__ import annotations

import dataclasses
from typing import Any

from plasticollapse.remedies.base import Remedy, require


@dataclasses.dataclass
class ShrinkPerturb(Remedy):
    """Before new data, every parameter moves towards a fresh initialisation::

        theta <- shrink * theta + perturb * theta_fresh

    with ``theta_fresh`` the matching parameter of a freshly initialised network of the
    same architecture (:func:`~plasticollapse.remedies.functional.fresh_like`). Ash & Adams
    use shrink 0.6 and perturb 0.01. Shrinking keeps what the network learnt (up to scale,
    which the softmax partly undoes) while restoring the small-weight, high-gradient regime
    of a fresh network; the perturbation breaks the symmetry that shrinking alone keeps.

    - Permuted study: at the start of every task t >= 1, fresh weights drawn from
      ``generator_for(seed, "shrink_perturb", t)``.
    - Warm start: the warm-up itself is plain; each checkpoint's probe starts from the
      shrunk and perturbed copy (fresh weights from ``generator_for(seed,
      "shrink_perturb", epoch)``), so the rows' warm-up measurements are the plain ones.

    All parameters are shrunk, BatchNorm's affine ones included; buffers (BatchNorm's
    running statistics) are not.
    """

    name = "shrink_perturb"
    shrink: float
    perturb: float

    def __post_init__(self):
        require(self.shrink >= 0, f"shrink must be >= 0, got {self.shrink}")
        require(self.perturb >= 0, f"perturb must be >= 0, got {self.perturb}")

    def apply(self, model, index: int) -> None:
        """Shrink and perturb ``model`` in place, fresh weights drawn for ``index``."""
        from plasticollapse.remedies.functional import shrink_perturb
        from plasticollapse.runs.runtime import generator_for

        generator = generator_for(self.context.seed, "shrink_perturb", index)
        shrink_perturb(model, self.shrink, self.perturb, generator=generator)

    def at_task_start(self, model, optimizer, task: int, inputs) -> dict[str, Any]:
        self.apply(model, task)
        return {}

    def at_probe_start(self, model, epoch: int) -> None:
        self.apply(model, epoch)
