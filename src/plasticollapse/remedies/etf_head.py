"""A fixed simplex-ETF classifier: the head neural collapse converges to, never trained."""

from __future__ import annotations

import dataclasses

from plasticollapse.remedies.base import Remedy, RemedyContext, require


@dataclasses.dataclass
class ETFHead(Remedy):
    """Replace the classifier by a fixed simplex equiangular tight frame (Zhu et al. 2021,
    "A Geometric Analysis of Neural Collapse with Unconstrained Features"; Yang et al.
    2022, "Inducing Neural Collapse in Imbalanced Learning")::

        W = etf_scale * sqrt(C / (C - 1)) * (I_C - 1 1^T / C) U^T,    b = 0

    (:func:`~plasticollapse.models.simplex_etf`; U a random D x C orthonormal basis drawn
    from ``generator_for(seed, "etf_head")``). Weight and bias are frozen
    (``requires_grad=False``): no engine trains or decays them, and the other remedies
    leave them alone.

    Scale: every row has norm ``etf_scale``; the default 1 is the expected row norm of
    the Kaiming-uniform (linear gain) classifier the MLP starts from (each entry has
    variance 1/D, so E||w_c||^2 = 1), so the logits start at the scale of a trained-from-
    scratch network's. Usable in both studies (on ``model.classifier``, which needs
    D >= C features).
    """

    name = "etf_head"
    etf_scale: float

    def __post_init__(self):
        require(self.etf_scale > 0, f"etf_scale must be > 0, got {self.etf_scale}")

    def bind(self, model, context: RemedyContext) -> None:
        import torch

        from plasticollapse.models import simplex_etf
        from plasticollapse.runs.runtime import generator_for

        super().bind(model, context)
        head = model.classifier
        generator = generator_for(context.seed, "etf_head")
        weight = simplex_etf(head.out_features, head.in_features, self.etf_scale, generator)
        with torch.no_grad():
            head.weight.copy_(weight)
            if head.bias is not None:
                head.bias.zero_()
        for p in head.parameters():
            p.requires_grad_(False)
