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
      ``generator_for(seed, "shrink_perturb", t)``; or, with ``shrink_perturb_every`` = k
      > 0, after every k steps of each pass instead (the n-th time from
      ``generator_for(seed, "shrink_perturb", "step", n)``), as Dohare et al. 2024 apply
      it continually.
    - Warm start: the warm-up itself is plain; each checkpoint's probe starts from the
      shrunk and perturbed copy (fresh weights from ``generator_for(seed,
      "shrink_perturb", epoch)``), so the rows' warm-up measurements are the plain ones.

    All trainable parameters are shrunk, BatchNorm's affine ones included; buffers
    (BatchNorm's running statistics) and frozen parameters are not.
    """

    name = "shrink_perturb"
    reads_interval_inputs = False
    shrink: float
    perturb: float
    shrink_perturb_every: int = 0

    def __post_init__(self):
        require(self.shrink >= 0, f"shrink must be >= 0, got {self.shrink}")
        require(self.perturb >= 0, f"perturb must be >= 0, got {self.perturb}")
        every = self.shrink_perturb_every
        require(every >= 0, f"shrink_perturb_every must be >= 0 (0: per task), got {every}")
        self.count = 0

    def apply(self, model, *keys: Any) -> None:
        """Shrink and perturb ``model`` in place, fresh weights drawn for ``keys``."""
        from plasticollapse.remedies.functional import shrink_perturb
        from plasticollapse.runs.runtime import generator_for

        generator = generator_for(self.context.seed, "shrink_perturb", *keys)
        shrink_perturb(model, self.shrink, self.perturb, generator=generator)

    def interval(self) -> int:
        return self.shrink_perturb_every

    def at_interval(self, model, optimizer, inputs) -> dict[str, float]:
        self.count += 1
        self.apply(model, "step", self.count)
        return {}

    def at_task_start(self, model, optimizer, task: int, inputs) -> dict[str, Any]:
        if self.shrink_perturb_every == 0:
            self.apply(model, task)
        return {}

    def at_probe_start(self, model, epoch: int) -> None:
        self.apply(model, epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count} if self.shrink_perturb_every else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = int(state.get("count", 0))
