"""Weight decay: SGD's L2 pull of every parameter towards zero."""

from __future__ import annotations

import dataclasses
from typing import Any

from plasticollapse.remedies.base import Remedy, StepTerms, require

#: The decay of the ``weight_decay`` remedy when the ``weight_decay`` field is left unset.
DEFAULT_WEIGHT_DECAY = 0.01


@dataclasses.dataclass
class WeightDecay(Remedy):
    """SGD with weight decay ``lambda``: each step's gradient gets ``+ lambda * theta``, i.e.
    the objective gets ``lambda / 2 * ||theta||^2`` (``torch.optim.SGD(weight_decay=...)``).

    A classic guard against growing weights, one of the paper's remedies (0.001, 0.01 and
    0.1 in the warm start; Lyle et al. 2023 and Dohare et al. 2024 find L2 regularisation
    keeps plasticity in continual learning). In the warm start it applies to the warm-up
    only: probes never decay. The fast engine folds the decay into its compiled update.

    From a config: the ``weight_decay`` field, or :data:`DEFAULT_WEIGHT_DECAY` when it is
    unset. (A ``weight_decay`` set explicitly applies whatever the remedies: see
    :func:`plasticollapse.remedies.remedy_names`.)
    """

    name = "weight_decay"
    decay: float  # the config's weight_decay field

    def __post_init__(self):
        require(self.decay >= 0, f"weight_decay must be >= 0, got {self.decay}")

    @classmethod
    def from_config(cls, config: Any) -> WeightDecay:
        value = config.weight_decay
        return cls(DEFAULT_WEIGHT_DECAY if value is None else value)

    @classmethod
    def check(cls, config: Any) -> None:
        require(
            config.weight_decay != 0,
            "the weight_decay remedy needs weight_decay > 0 (the paper: 0.001, 0.01, 0.1), "
            f"or leave weight_decay unset for {DEFAULT_WEIGHT_DECAY}",
        )

    def weight_decay(self) -> float:
        return self.decay

    def step_terms(self) -> StepTerms:
        return StepTerms(decay=self.decay)
