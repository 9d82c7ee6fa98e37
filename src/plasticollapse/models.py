"""The paper's two networks, each exposing ``features(x)`` and a final ``classifier``.

Every model here ends in one ``nn.Linear`` named ``classifier`` whose input is the
penultimate feature vector h(x) that neural-collapse metrics are computed on, so
:func:`plasticollapse.metrics.measure.measure_model` finds it without configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn


class HasFeatures(Protocol):
    """A network as engines and metrics read it beyond ``forward``: its penultimate
    features h(x) and the ``nn.Linear`` ``classifier`` that maps them to the logits
    (:class:`MLP`, :class:`ResNet18`, or a user's model of that shape). For the type checker
    only: ``torch`` types an ``nn.Module``'s attributes as ``Tensor | Module``."""

    classifier: nn.Linear

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def features(self, x: torch.Tensor) -> torch.Tensor: ...


class HasHidden(HasFeatures, Protocol):
    """A :class:`HasFeatures` network that also returns every hidden layer's output
    (:meth:`MLP.forward_hidden`): what remedies reading hidden activations train on."""

    def forward_hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]: ...


class CReLU(nn.ReLU):
    """Concatenated ReLU (Shang et al. 2016): ``[relu(z), relu(-z)]``, twice as wide as z.

    Abbas et al. ("Loss of Plasticity in Continual Deep Reinforcement Learning", 2023) find
    it keeps plasticity: one of each unit's two halves always passes gradient. A subclass
    of ``nn.ReLU`` so that metrics hooking ReLUs (``measure_model``'s hidden layers) see its
    output; engines that need a plain ReLU check the exact type.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((torch.relu(x), torch.relu(-x)), dim=-1)


class MLP(nn.Module):
    """ReLU MLP ``input -> hidden... -> classes`` (Setup A: 784-100-100-100-10).

    Initialisation follows the authors' code (Dohare et al.'s DeepFFNN): Kaiming-uniform
    weights (ReLU gain for hidden layers, linear gain for the classifier) and zero biases.
    Inputs of any shape are flattened, so images (N, 1, 28, 28) and vectors (N, 784) both work.

    Architecture options (both off: the paper's network):

    - ``layer_norm``: a ``nn.LayerNorm`` (elementwise affine, initialised to weight 1, bias
      0) between each hidden Linear and its activation (Lyle et al. 2023, "Understanding
      plasticity in neural networks", find normalisation keeps plasticity);
    - ``crelu``: :class:`CReLU` instead of ReLU, so each hidden layer of width h feeds
      2h values to the next layer (whose fan-in, and Kaiming bound, is 2h).
    """

    def __init__(
        self,
        input_dim: int,
        hidden: Sequence[int],
        num_classes: int,
        layer_norm: bool = False,
        crelu: bool = False,
    ):
        super().__init__()
        if not hidden:
            raise ValueError("MLP needs at least one hidden layer (hidden=(100, 100, 100), ...)")
        self.layer_norm, self.crelu = bool(layer_norm), bool(crelu)
        layers: list[nn.Module] = []
        width = input_dim
        for h in hidden:
            linear = nn.Linear(width, h)
            nn.init.kaiming_uniform_(linear.weight, nonlinearity="relu")
            nn.init.zeros_(linear.bias)
            layers.append(linear)
            if layer_norm:
                layers.append(nn.LayerNorm(h))
            layers.append(CReLU() if crelu else nn.ReLU())
            width = 2 * h if crelu else h
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)
        nn.init.kaiming_uniform_(self.classifier.weight, nonlinearity="linear")
        nn.init.zeros_(self.classifier.bias)

    @property
    def plain(self) -> bool:
        """True for the paper's architecture (no layer norm, ReLU activations)."""
        return not (self.layer_norm or self.crelu)

    @property
    def hidden_linears(self) -> list[nn.Linear]:
        return [m for m in self.body if isinstance(m, nn.Linear)]

    @property
    def linears(self) -> list[nn.Linear]:
        """All linear layers in forward order, the classifier last."""
        return [*self.hidden_linears, self.classifier]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def forward_hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The logits and every hidden layer's output (after its activation), in order: what
        Continual Backprop's utilities read (the same arithmetic as :meth:`forward`)."""
        hidden: list[torch.Tensor] = []
        a = x.flatten(1)
        for module in self.body:
            a = module(a)
            if isinstance(module, nn.ReLU):
                hidden.append(a)
        return self.classifier(a), hidden


class MaskedLinear(nn.Linear):
    """``nn.Linear`` whose outputs outside the present classes are set to the most
    negative finite value of their dtype (finite, so collapse metrics can read them): the
    head of class-incremental streams (:mod:`plasticollapse.studies.streams.model` says
    why this is the source's sliced-logits computation).

    ``present`` is a boolean buffer (saved in the state dict, so a checkpoint restores it);
    all classes are present until :meth:`set_classes` says otherwise.
    """

    present: torch.Tensor  # the buffer registered in __init__ (typed for the checker)

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features)
        self.register_buffer("present", torch.ones(out_features, dtype=torch.bool))

    def set_classes(self, classes: torch.Tensor) -> None:
        """Restrict the outputs to ``classes`` (class indices)."""
        present = torch.zeros_like(self.present)
        present[torch.as_tensor(classes, device=present.device)] = True
        self.present.copy_(present)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        logits = F.linear(h, self.weight, self.bias)
        return logits.masked_fill(~self.present, torch.finfo(logits.dtype).min)


def simplex_etf(
    num_classes: int, dim: int, scale: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A (num_classes, dim) simplex equiangular tight frame, rows of norm ``scale``::

        W = scale * sqrt(C / (C - 1)) * (I_C - 1 1^T / C) U^T

    with U a (dim, C) matrix of orthonormal columns (QR of a Gaussian drawn from
    ``generator``). Its rows have equal norms and pairwise cosines -1/(C-1): the classifier
    neural collapse converges to (Papyan, Han & Donoho 2020, NC2), fixed in advance as in
    Zhu et al. 2021 ("A Geometric Analysis of Neural Collapse with Unconstrained Features")
    and Yang et al. 2022. A random rotation U (not the first C coordinates) lets every
    feature dimension reach the logits. Needs dim >= C.
    """
    if num_classes < 2:
        raise ValueError(f"a simplex ETF needs at least 2 classes, got {num_classes}")
    if dim < num_classes:
        raise ValueError(
            f"a simplex ETF of {num_classes} classes needs features of dimension >= "
            f"{num_classes}, got {dim}; widen the last hidden layer"
        )
    gaussian = torch.randn(dim, num_classes, generator=generator, dtype=torch.float64)
    u, r = torch.linalg.qr(gaussian)
    u = u * torch.sign(torch.diagonal(r))  # a unique, sign-fixed Q
    c = num_classes
    centred = torch.eye(c, dtype=torch.float64) - 1.0 / c
    w = scale * (c / (c - 1)) ** 0.5 * centred @ u.T
    return w.float()


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with BatchNorm and an identity/1x1 shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18, CIFAR variant (Setup B): a 3x3 stride-1 stem instead of ImageNet's 7x7/2.

    ``maxpool=True`` keeps the 3x3/2 max-pool after the stem, as the authors did;
    ``width`` is the stem's channel count (64 in the paper; stages use width x 1, 2, 4, 8),
    so features are ``8 * width``-dimensional (512 for the paper). Kaiming-normal
    convolutions (fan-out, ReLU), BatchNorm weight 1 and bias 0.
    """

    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, width: int = 64, maxpool: bool = True
    ):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1) if maxpool else nn.Identity(),
        )
        stages = []
        in_planes = width
        for i, planes in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if i == 0 else 2
            stages += [BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)]
            in_planes = planes
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
