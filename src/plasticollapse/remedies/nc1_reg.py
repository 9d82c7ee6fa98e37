"""The paper's anti-collapse regulariser: reward within-class spread of the features."""

from __future__ import annotations

import dataclasses
from typing import Any

from plasticollapse.remedies.base import Remedy, require


@dataclasses.dataclass
class NC1Regulariser(Remedy):
    """Subtract the mini-batch's (clipped) NC1 from the loss::

        L = CE(logits, y) - nc1_lambda * min(NC1_batch(features, y), nc1_clip)

    NC1_batch = Tr(Sigma_W Sigma_B^+) / C of the batch's penultimate features, with
    gradients (:func:`plasticollapse.metrics.collapse.nc1_loss`). Subtracting it rewards
    within-class spread, i.e. resists neural collapse; the clip (200 in the authors' code)
    bounds the reward, and above it the term's gradient is zero (``min`` passes no gradient
    to the branch it does not take), so only the cross-entropy trains. Paper values
    ("Can We Understand Plasticity Through Neural Collapse?", warm start): lambda 0.05,
    clip 200, batch 128.

    A batch needs two classes for a nonzero NC1, so the remedy needs ``batch_size >= 2``
    (the Permuted study's default of 1 is refused).
    """

    name = "nc1_reg"
    nc1_lambda: float
    nc1_clip: float

    def __post_init__(self):
        require(self.nc1_lambda >= 0, f"nc1_lambda must be >= 0, got {self.nc1_lambda}")
        require(self.nc1_clip > 0, f"nc1_clip must be > 0, got {self.nc1_clip}")

    @classmethod
    def check(cls, config: Any) -> None:
        batch_size = getattr(config, "batch_size", None)
        require(
            batch_size is None or batch_size >= 2,
            f"the nc1_reg remedy needs batch_size >= 2 (a batch's NC1 compares classes), "
            f"got {batch_size}",
        )

    def loss(self, model, logits, features, labels):
        from plasticollapse.remedies.functional import nc1_term

        term, _ = nc1_term(
            features, labels, self.context.num_classes, self.nc1_lambda, self.nc1_clip
        )
        return term
