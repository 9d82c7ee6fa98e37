"""The remedies' math, as functions of a model that any training loop can call.

The objects in this package (:mod:`plasticollapse.remedies`) decide when and with which
parameters; these functions do the arithmetic. Each class's docstring has the formula and
its paper.

- :func:`fresh_like`: a freshly initialised network of the same architecture, drawn from a
  seeded generator (what Shrink & Perturb and ReDo take their fresh weights from).
- :func:`shrink_perturb`: theta <- shrink * theta + perturb * theta_fresh
  (:class:`~plasticollapse.remedies.shrink_perturb.ShrinkPerturb`).
- :func:`nc1_term` and :func:`nc1_regularised_loss`: - lambda * min(NC1_batch, clip)
  (:class:`~plasticollapse.remedies.nc1_reg.NC1Regulariser`).
- :func:`l2_init_penalty`: lambda/2 * ||theta - theta_0||^2
  (:class:`~plasticollapse.remedies.l2_init.L2Init`).
- :func:`redo_reset`: re-initialise tau-dormant units (:class:`~plasticollapse.remedies.redo.ReDo`).
- :func:`load_trainable`: a fresh network's values into the trainable parameters
  (:mod:`~plasticollapse.remedies.reset`).

Frozen parameters (``requires_grad=False``: the fixed classifier of
:class:`~plasticollapse.remedies.etf_head.ETFHead`) are left alone by all of them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)

__all__ = [
    "fresh_like",
    "load_trainable",
    "l2_init_penalty",
    "nc1_regularised_loss",
    "nc1_term",
    "redo_reset",
    "shrink_perturb",
]


# --------------------------------------------------------------------------- fresh weights


def fresh_like(model: ModuleT, generator: torch.Generator | None = None) -> ModuleT:
    """A freshly initialised network of ``model``'s architecture, on its device and dtype.

    The package's :class:`~plasticollapse.models.MLP` and
    :class:`~plasticollapse.models.ResNet18` are rebuilt with their own constructors, so the
    fresh weights follow the same initialisation as the original network (Kaiming-uniform
    with zero biases, Kaiming-normal convolutions). Any other module is deep-copied and
    every submodule's ``reset_parameters()`` is called (PyTorch's default initialisation).

    ``generator`` seeds the draw (one 63-bit integer is taken from it and the global RNG is
    forked around the construction), so the result is reproducible and leaves the global
    RNG untouched. Without it the global RNG is used.
    """
    reference = next(iter(model.parameters()), None)
    if generator is None:
        fresh = _construct_like(model)
    else:
        seed = int(torch.randint(0, 2**63 - 1, (), generator=generator))
        with torch.random.fork_rng(devices=[]):
            # The CPU generator alone (the construction runs on the CPU): torch.manual_seed
            # would also queue a lazy CUDA seeding that records a stack trace, ~1 ms a call.
            torch.default_generator.manual_seed(seed)
            fresh = _construct_like(model)
    if reference is not None:
        fresh = fresh.to(device=reference.device, dtype=reference.dtype)
    # _construct_like builds the model's own class (MLP, ResNet18 or a deep copy's).
    return cast(ModuleT, fresh.train(model.training))


def _construct_like(model: nn.Module) -> nn.Module:
    from plasticollapse.models import MLP, ResNet18

    if type(model) is MLP:
        first = model.hidden_linears[0]
        hidden = [layer.out_features for layer in model.hidden_linears]
        return MLP(
            first.in_features,
            hidden,
            model.classifier.out_features,
            layer_norm=model.layer_norm,
            crelu=model.crelu,
        )
    if type(model) is ResNet18:
        conv = model.stem[0]
        assert isinstance(conv, nn.Conv2d)  # ResNet18's stem opens with its convolution
        return ResNet18(
            num_classes=model.classifier.out_features,
            in_channels=conv.in_channels,
            width=conv.out_channels,
            maxpool=isinstance(model.stem[3], nn.MaxPool2d),
        )
    fresh = copy.deepcopy(model)
    for module in fresh.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
    return fresh


# --------------------------------------------------------------------------- shrink & perturb


@torch.no_grad()
def shrink_perturb(
    model: nn.Module,
    shrink: float = 0.6,
    perturb: float = 0.01,
    generator: torch.Generator | None = None,
    fresh: nn.Module | None = None,
) -> nn.Module:
    """Shrink & Perturb, in place: for every parameter ``theta <- shrink * theta + perturb *
    theta_fresh``, with ``theta_fresh`` the matching parameter of ``fresh``, or of
    :func:`fresh_like(model, generator) <fresh_like>`.

    All parameters are shrunk, BatchNorm's affine weight and bias included, as Ash & Adams
    shrink the whole parameter vector. Buffers (BatchNorm running mean/var, batch counts)
    are left as they are: they are statistics of the data rather than parameters, and the
    training that follows re-estimates them within a few dozen steps (momentum 0.1).

    Returns ``model``.
    """
    if fresh is None:
        fresh = fresh_like(model, generator)
    fresh_params = dict(fresh.named_parameters())
    for name, param in model.named_parameters():
        if name not in fresh_params or fresh_params[name].shape != param.shape:
            raise ValueError(f"fresh network does not match the model at parameter {name!r}")
        if param.requires_grad:  # a frozen (fixed ETF) head is not trained: not shrunk
            param.mul_(shrink).add_(fresh_params[name].to(param), alpha=perturb)
    return model


@torch.no_grad()
def load_trainable(
    model: nn.Module,
    fresh: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    names: set[str] | None = None,
) -> None:
    """Copy ``fresh``'s values into ``model``'s trainable parameters (those in ``names``,
    or all), in place, and clear their optimizer state. Buffers are left as they are."""
    fresh_params = dict(fresh.named_parameters())
    for name, param in model.named_parameters():
        if (names is None or name in names) and param.requires_grad:
            param.copy_(fresh_params[name].to(param))
            if optimizer is not None:
                optimizer.state.pop(param, None)


# --------------------------------------------------------------------------- NC1 regulariser


def nc1_term(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    lam: float = 0.05,
    clip: float = 200.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The regulariser's term ``- lam * min(NC1_batch, clip)`` of one mini-batch, and NC1_batch.

    NC1_batch = Tr(Sigma_W Sigma_B^+) / C of the batch's penultimate ``features``, with
    gradients (:func:`plasticollapse.metrics.collapse.nc1_loss`). Above the clip the term's
    gradient is zero (``min`` passes no gradient to the branch it does not take). The
    features are cast to float32 first, so the pseudo-inverse stays accurate under a bf16
    autocast.
    """
    from plasticollapse.metrics.collapse import nc1_loss

    nc1 = nc1_loss(features.float(), labels, num_classes)
    return -lam * torch.clamp(nc1, max=clip), nc1


def nc1_regularised_loss(
    logits: torch.Tensor,
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    lam: float = 0.05,
    clip: float = 200.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The paper's anti-collapse objective on one mini-batch::

        L = CE(logits, y) - lam * min(NC1_batch(features, y), clip)

    Returns ``(L, CE, NC1_batch)``; the last two are for logging. (``CE + term`` equals
    ``CE - lam * min(...)`` bit for bit: IEEE subtraction is addition of the negation.)
    """
    ce = F.cross_entropy(logits.float(), labels)
    term, nc1 = nc1_term(features, labels, num_classes, lam, clip)
    return ce + term, ce, nc1


# --------------------------------------------------------------------------- L2 Init


def l2_init_penalty(
    model: nn.Module,
    initial_params: Mapping[str, torch.Tensor] | Iterable[torch.Tensor],
    lam: float,
) -> torch.Tensor:
    """L2 Init's penalty ``lam / 2 * sum_p ||theta_p - theta_p(0)||^2`` (its gradient is the
    weight-decay-like ``lam (theta - theta_0)``).

    ``initial_params`` maps parameter names to their initial values (``{n: p.detach().clone()
    for n, p in model.named_parameters()}``) or lists them in ``model.parameters()`` order.
    Every parameter counts, biases and normalisation parameters included. Add the result to
    the loss.
    """
    params = list(model.parameters())
    if isinstance(initial_params, Mapping):
        initial = [initial_params[name] for name, _ in model.named_parameters()]
    else:
        initial = list(initial_params)
    if len(initial) != len(params):
        raise ValueError(f"{len(initial)} initial tensors for {len(params)} parameters")
    total = params[0].new_zeros((), dtype=torch.float32)
    for p, p0 in zip(params, initial, strict=True):
        total = total + (p.float() - p0.to(p.device).float()).pow(2).sum()
    return 0.5 * lam * total


# --------------------------------------------------------------------------- ReDo


@torch.no_grad()
def redo_reset(
    model: nn.Module,
    inputs: torch.Tensor,
    tau: float = 0.1,
    generator: torch.Generator | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    batch_size: int = 1024,
) -> list[int]:
    """ReDo's reset for the package's ReLU :class:`~plasticollapse.models.MLP`, in place.

    For every hidden layer l (each ``nn.Linear`` of ``model.hidden_linears``, whose ReLU
    output feeds the next linear layer; the last hidden layer feeds the classifier), unit i
    is tau-dormant on ``inputs`` when its score::

        s_i = E_x |h_i(x)| / ((1/H) sum_k E_x |h_k(x)|)  <=  tau

    (:func:`plasticollapse.metrics.plasticity.dormant_units`). Each dormant unit is recycled:

    - its incoming weights W_l[i, :] and bias b_l[i] are set to those of a freshly
      initialised network (:func:`fresh_like` with ``generator``), and
    - its outgoing weights W_{l+1}[:, i] are set to zero, so the recycled unit does not
      perturb the network's output until training gives it a use.

    All layers are scored before any is reset (Sokar et al. score on one batch, then
    reset); where a recycled unit feeds another recycled unit, the zero outgoing weight
    wins. With ``optimizer``, the momentum buffers of the reset weights are zeroed too
    (Sokar et al. reset Adam's moments of recycled weights). Other units, and the
    classifier's bias, are untouched.

    Returns the number of units reset per hidden layer.
    """
    from plasticollapse.metrics.plasticity import capture_activations, dormant_units
    from plasticollapse.models import MLP

    if not isinstance(model, MLP):
        raise TypeError(f"redo_reset supports the package's MLP, not {type(model).__name__}")
    relus = [m for m in model.body if isinstance(m, nn.ReLU)]
    activations = capture_activations(model, inputs, modules=relus, batch_size=batch_size)
    masks = [dormant_units(a, tau).to(model.classifier.weight.device) for a in activations]
    fresh_layers = fresh_like(model, generator).linears
    layers = model.linears
    # Incoming resets first, then outgoing zeros: where a recycled unit feeds another
    # recycled unit, the zero wins, so every recycled unit starts silent downstream.
    for l, mask in enumerate(masks):
        layers[l].weight[mask] = fresh_layers[l].weight[mask]
        layers[l].bias[mask] = fresh_layers[l].bias[mask]
        if optimizer is not None:
            zero_momentum(optimizer, layers[l].weight, (mask,))
            zero_momentum(optimizer, layers[l].bias, (mask,))
    for l, mask in enumerate(masks):
        if not layers[l + 1].weight.requires_grad:  # a fixed (etf_head) classifier
            continue
        layers[l + 1].weight[:, mask] = 0.0
        if optimizer is not None:
            zero_momentum(optimizer, layers[l + 1].weight, (slice(None), mask))
    return [int(mask.sum()) for mask in masks]


def zero_momentum(optimizer: torch.optim.Optimizer, param: torch.Tensor, index: tuple) -> None:
    """Zero ``param``'s SGD momentum buffer at ``index`` (no buffer: nothing to do)."""
    state = optimizer.state.get(param, {})
    buffer = state.get("momentum_buffer")
    if buffer is not None:
        buffer[index] = 0.0
