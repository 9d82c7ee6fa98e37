"""L2 Init (Kumar et al., "Maintaining Plasticity in Continual Learning via Regenerative
Regularization", 2023): a pull towards the initial weights instead of towards zero."""

from __future__ import annotations

import dataclasses

from plasticollapse.remedies.base import Remedy, RemedyContext, StepTerms, require


@dataclasses.dataclass
class L2Init(Remedy):
    """Add to the loss the squared distance from the network's initial parameters::

        penalty = l2_init_lambda / 2 * sum_p ||theta_p - theta_p(0)||^2
        d penalty / d theta = l2_init_lambda * (theta - theta_0)

    theta_0 is recorded when the remedy is bound to the freshly initialised network (so a
    resumed run, which binds before loading its checkpoint, has the same theta_0). Every
    parameter counts, biases and normalisation parameters included. Unlike weight decay,
    which pulls towards zero and so shrinks the weights' scale, it pulls towards a point
    known to be trainable. The fast engine folds the pull into its compiled update
    (:class:`~plasticollapse.remedies.base.StepTerms`).
    """

    name = "l2_init"
    l2_init_lambda: float

    def __post_init__(self):
        require(self.l2_init_lambda >= 0, f"l2_init_lambda must be >= 0, got {self.l2_init_lambda}")

    def bind(self, model, context: RemedyContext) -> None:
        super().bind(model, context)
        self.initial = [p.detach().clone() for p in model.parameters()]

    def loss(self, model, logits, features, labels):
        from plasticollapse.remedies.functional import l2_init_penalty

        return l2_init_penalty(model, self.initial, self.l2_init_lambda)

    def step_terms(self) -> StepTerms:
        # Before bind (a config's check) theta_0 is not known yet: an empty anchor.
        return StepTerms(pull=self.l2_init_lambda, anchor=tuple(getattr(self, "initial", ())))
