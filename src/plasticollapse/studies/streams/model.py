"""The streams' network: the package's ReLU MLP, initialised as the stream's source did, and
for class-incremental streams a head restricted to the classes presented so far.

Masking the head (:class:`~plasticollapse.models.MaskedLinear`) follows the
loss-of-plasticity code's incremental CIFAR experiment (Dohare et al. 2024;
shibhansh/loss-of-plasticity, lop/incremental_cifar/incremental_cifar_experiment.py): the
network has all C outputs from the start, and its loss and prediction use only the columns
of the classes seen so far (``net(x)[:, all_classes[:current_num_classes]]``). Setting the
other logits to the most negative float is the same computation: their softmax probability
is exactly 0, so the cross-entropy, its gradient and the argmax equal those of the sliced
logits, and the rows of the absent classes receive no gradient.
"""

from __future__ import annotations

import torch
from torch import nn

from plasticollapse.models import MLP, MaskedLinear
from plasticollapse.studies.streams.config import StreamConfig


def build_model(
    config: StreamConfig, input_dim: int, num_classes: int, masked: bool = False
) -> MLP:
    """The MLP ``input_dim -> config.hidden -> num_classes``, drawn from torch's global RNG.

    ``init = "pytorch"``: every layer's ``reset_parameters`` (weights and biases
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), what UPGD's and L2 Init's networks use);
    ``"kaiming"``: :class:`~plasticollapse.models.MLP`'s own (the paper's). ``masked``: the
    classifier is a :class:`MaskedLinear`.
    """
    model = MLP(input_dim, config.hidden, num_classes)
    if masked:
        head = MaskedLinear(model.classifier.in_features, num_classes)
        head.load_state_dict(model.classifier.state_dict(), strict=False)
        model.classifier = head
    if config.init == "pytorch":
        for linear in model.linears:
            linear.reset_parameters()
    return model


def set_classes(model: nn.Module, classes: torch.Tensor) -> None:
    """Restrict a masked head to ``classes``; nothing for any other head."""
    head = getattr(model, "classifier", None)
    if isinstance(head, MaskedLinear):
        head.set_classes(classes)
