"""The reference engine: online training with PyTorch autograd and ``torch.optim.SGD``.

This is the authors' loop (forward, cross-entropy, backward, SGD step per mini-batch) and
works for any model, batch size and device. With batch size 1 it is dominated by per-step
overhead; :mod:`plasticollapse.engines.fast` is the fused alternative for ReLU MLPs.

Remedies (:mod:`plasticollapse.remedies`) act at every step here: the objective is::

    L = CE(logits, y) + sum_r remedy_r.loss(model, logits, features, y)

(with ``loss="squared_error"``, the mean squared error of the outputs against real-valued
targets in place of CE: bitflip regression; no accuracy is counted then)

minimised by SGD with weight decay ``sum_r remedy_r.weight_decay()``, and every remedy's
``after_step`` follows each update (with the step's hidden activations for those that
need them: Continual Backprop). A remedy with an ``interval()`` k acts after every k steps
(``at_interval``, on the pass's last samples); every remedy's ``pass_summary`` ends the
pass. Without remedies this is the plain loop, bit for bit.

It is the ground truth that the fast engine's compiled remedies are tested against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plasticollapse.engines.stats import OnlineStats, add_counts, recent_samples

if TYPE_CHECKING:
    from plasticollapse.models import HasHidden
    from plasticollapse.remedies.base import Remedy


#: The training losses by name: the classifiers' and bitflip regression's.
LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "cross_entropy": F.cross_entropy,
    "squared_error": F.mse_loss,
}


class ReferenceEngine:
    """Prequential SGD: every mini-batch is scored *before* the update it causes.

    The online loss and accuracy it reports are the cross-entropy's (or squared error's)
    and the prediction's; remedies' loss terms are trained on but not included in the
    reported loss.
    """

    name = "reference"

    def __init__(
        self,
        model: nn.Module,
        lr: float,
        batch_size: int = 1,
        remedies: Sequence[Remedy] = (),
        loss: str = "cross_entropy",
    ):
        from plasticollapse.remedies import weight_decay_of

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {loss!r}")
        self.classifies = loss == "cross_entropy"
        self.criterion = LOSSES[loss]
        self.model = model
        self.batch_size = batch_size
        self.remedies = list(remedies)
        # Only remedies with a loss term need the penultimate features, and a model
        # without ``features``/``classifier`` can still train plainly.
        self.loss_terms = [r for r in self.remedies if "loss" in r.per_step_hooks()]
        self.hidden = any(r.needs_activations for r in self.remedies)
        self.periodic = [r for r in self.remedies if r.interval() > 0]
        self.optimizer = torch.optim.SGD(
            model.parameters(), lr=lr, weight_decay=weight_decay_of(self.remedies)
        )

    def _forward(self, xb: Tensor) -> tuple[Tensor, Tensor | None, list[Tensor] | None]:
        """(logits, penultimate features or None, hidden activations or None)."""
        # Remedies that read activations or add a loss term need such a network (the MLP).
        network = cast("HasHidden", self.model)
        if self.hidden:
            logits, hidden = network.forward_hidden(xb)
            return logits, hidden[-1], hidden
        if self.loss_terms:
            features = network.features(xb)
            return network.classifier(features), features, None
        return self.model(xb), None, None

    def train(
        self, x: Tensor, y: Tensor, order: Tensor, columns: Tensor | None = None
    ) -> OnlineStats:
        """One pass over ``x[order]`` (with ``columns`` = P: over ``x[order][:, P]``, each
        batch's columns gathered as it is drawn); returns online accuracy and mean loss."""
        self.model.train()
        device = next(self.model.parameters()).device
        if columns is not None:
            columns = columns.to(device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        extra: dict[str, float] = {}
        for step, start in enumerate(range(0, len(order), self.batch_size)):
            idx = order[start : start + self.batch_size]
            xb, yb = x[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True)
            if columns is not None:
                xb = xb.index_select(1, columns)  # xb[:, columns]
            logits, features, hidden = self._forward(xb)
            loss = self.criterion(logits, yb)
            objective = loss
            for remedy in self.loss_terms:
                assert features is not None  # _forward returns them when loss terms exist
                term = remedy.loss(self.model, logits, features, yb)
                if term is not None:
                    objective = objective + term
            if self.classifies:
                correct += (logits.argmax(1) == yb).sum()
            loss_sum += loss.detach().double() * len(idx)
            self.optimizer.zero_grad(set_to_none=True)
            objective.backward()
            self.optimizer.step()
            for remedy in self.remedies:
                if remedy.needs_activations:
                    remedy.after_step(self.model, self.optimizer, step, hidden)
                else:
                    remedy.after_step(self.model, self.optimizer, step)
            due = [r for r in self.periodic if (step + 1) % r.interval() == 0]
            if due:
                inputs = None
                if any(r.reads_interval_inputs for r in due):
                    steps = max(r.interval() for r in due)
                    recent = recent_samples(order, start + len(idx), steps, self.batch_size)
                    inputs = x[recent].to(device)
                    if columns is not None:
                        inputs = inputs.index_select(1, columns)
                add_counts(extra, (r.at_interval(self.model, self.optimizer, inputs) for r in due))
        add_counts(extra, (r.pass_summary() for r in self.remedies))
        return OnlineStats(
            correct=int(correct), count=len(order), loss_sum=float(loss_sum), extra=extra
        )
