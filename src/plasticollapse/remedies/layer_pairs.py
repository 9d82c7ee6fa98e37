"""Hidden units of any model, named as pairs of layers: what ReDo and Continual Backprop
act on outside the package's MLP.

A unit is one output feature of a producing ``nn.Linear`` or one output channel of a
producing ``nn.Conv2d``. Recycling it touches exactly:

- its incoming weights (the producer's row ``W[i]`` or filter ``W[i, :, :, :]``) and bias;
- the normalisation between, where there is one (``BatchNorm1d/2d``: affine weight and bias
  at ``i``, running mean and variance at ``i``; ``LayerNorm``: affine weight and bias);
- its outgoing weights in the consuming layer: ``W[:, i]`` of a Linear or a Conv2d, or, for
  a Conv2d feeding a Linear through a flatten, the block of columns ``W[:, i P : (i + 1) P]``
  that hold channel i's P positions (``x.flatten(1)`` of an N x C x H x W tensor is
  channel-major in PyTorch);
- the optimizer's per-element state of those weights.

The pattern is that of lop/algos/cbp_linear.py and lop/algos/cbp_conv.py of
github.com/shibhansh/loss-of-plasticity (a ``CBPLinear``/``CBPConv`` holds ``in_layer``,
``bn_layer``/``ln_layer`` and ``out_layer``). A :class:`LayerPair` names these modules by
their ``named_modules()`` names, plus the module whose output is the units' activation h.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import torch
from torch import nn

from plasticollapse.metrics.layers import ACTIVATION_TYPES

__all__ = ["LayerPair", "find_layer_pairs", "remove_recorder_hooks", "reset_optimizer_state"]

#: Layers whose output units a pair recycles, and layers that may consume them.
WEIGHT_TYPES = (nn.Linear, nn.Conv2d)
#: Normalisations that may sit between producer and activation.
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)
#: Modules that may sit between an activation and the consumer in an ``nn.Sequential``
#: without mixing units (pooling acts per channel; a flatten keeps channel blocks).
PASS_TYPES = (
    nn.Dropout,
    nn.Dropout2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Flatten,
    nn.Identity,
)


@dataclasses.dataclass(frozen=True)
class LayerPair:
    """One hidden layer's units: ``producer`` (Linear/Conv2d) -> [``norm``] -> activation
    -> ... -> ``consumer`` (Linear/Conv2d), by module names of ``model.named_modules()``.

    ``activation`` names the module whose output is the units' activation h (N x C, N x C x
    H x W, or a flattened N x (C P)); ``call`` says which call of it in one forward, when
    the module runs more than once (a ResNet block's one ``relu`` runs twice: call 0 is the
    inner one). Forward hooks read it, so the activation must be a module, not ``F.relu``.
    """

    producer: str
    consumer: str
    activation: str
    norm: str | None = None
    call: int = 0


@dataclasses.dataclass
class BoundPair:
    """A :class:`LayerPair` resolved to modules, with its unit count and layout."""

    pair: LayerPair
    producer: nn.Module
    consumer: nn.Module
    activation: nn.Module
    norm: nn.Module | None
    units: int  # C
    positions: int  # P: consumer inputs per unit (1 unless a Conv2d feeds a Linear)

    def outgoing_index(self, units: torch.Tensor) -> tuple:
        """Index of the consumer's weight entries that read ``units``."""
        if self.positions == 1:
            return (slice(None), units)
        offsets = torch.arange(self.positions, device=units.device)
        return (slice(None), (units[:, None] * self.positions + offsets).flatten())

    def unit_view(self, h: torch.Tensor) -> torch.Tensor:
        """h as N x C x (positions per unit). A Linear's units are its last dimension (N x
        ... x C: tokens count as positions, as cbp_linear.py averages all leading dims); a
        Conv2d's are dimension 1 (N x C x H x W, or flattened channel-major N x (C P))."""
        if isinstance(self.producer, nn.Linear):
            if h.ndim < 2 or h.shape[-1] != self.units:
                raise ValueError(
                    f"the output of {self.pair.activation!r} has shape {tuple(h.shape)}, not "
                    f"(..., {self.units}) for the units of {self.pair.producer!r}; name the "
                    "module whose output holds exactly those units"
                )
            return h.reshape(h.shape[0], -1, self.units).transpose(1, 2)
        if h.ndim < 2 or h[0].numel() % self.units:
            raise ValueError(
                f"the output of {self.pair.activation!r} has shape {tuple(h.shape)}, which does "
                f"not split into the {self.units} units of {self.pair.producer!r}; name the "
                "module whose output holds exactly those units (the activation after it)"
            )
        return h.reshape(h.shape[0], self.units, -1)


def bind_pairs(model: nn.Module, pairs: Sequence[LayerPair] | None) -> list[BoundPair]:
    """Resolve and check ``pairs`` (None: :func:`find_layer_pairs`)."""
    if pairs is None:
        pairs = find_layer_pairs(model)
    if not pairs:
        raise ValueError("no layer pairs given: pass pairs=[LayerPair(...), ...]")
    named = dict(model.named_modules())
    bound = []
    for pair in pairs:
        if not isinstance(pair, LayerPair):
            raise TypeError(f"pairs holds LayerPair objects, got {type(pair).__name__}")
        modules = {}
        for role in ("producer", "consumer", "activation", "norm"):
            name = getattr(pair, role)
            if name is None:
                continue
            if name not in named:
                raise ValueError(
                    f"{role} {name!r} of {pair} is not a module of the model; choose from "
                    f"{[n for n in named if n]}"
                )
            modules[role] = named[name]
        bound.append(_check(pair, modules))
    producers = [p.pair.producer for p in bound]
    if len(set(producers)) != len(producers):
        raise ValueError(f"a producer appears in two pairs: {producers}")
    return bound


def _check(pair: LayerPair, modules: dict[str, nn.Module]) -> BoundPair:
    producer, consumer = modules["producer"], modules["consumer"]
    for role, m in (("producer", producer), ("consumer", consumer)):
        if not isinstance(m, WEIGHT_TYPES):
            raise TypeError(f"{role} {getattr(pair, role)!r} must be nn.Linear or nn.Conv2d")
        if isinstance(m, nn.Conv2d) and m.groups != 1:
            raise TypeError(
                f"{role} {getattr(pair, role)!r}: grouped convolutions are not supported"
            )
    assert isinstance(producer, WEIGHT_TYPES) and isinstance(consumer, WEIGHT_TYPES)  # above
    units: int = producer.weight.shape[0]
    fan: int = consumer.weight.shape[1]
    if isinstance(consumer, nn.Conv2d) or isinstance(producer, nn.Linear):
        if fan != units:
            raise ValueError(
                f"{pair.consumer!r} reads {fan} inputs but {pair.producer!r} has {units} units: "
                "they are not a pair"
            )
        positions = 1
    else:  # Conv2d -> flatten -> Linear
        if fan % units:
            raise ValueError(
                f"{pair.consumer!r} reads {fan} inputs, not a multiple of the {units} channels of "
                f"{pair.producer!r}: they are not a pair through a flatten"
            )
        positions = fan // units
    norm = modules.get("norm")
    if norm is not None:
        if not isinstance(norm, NORM_TYPES):
            raise TypeError(f"norm {pair.norm!r} must be BatchNorm1d/2d or LayerNorm")
        if isinstance(norm, nn.LayerNorm):
            size = math.prod(norm.normalized_shape)
        else:
            size = norm.num_features
        if size != units:
            raise ValueError(f"norm {pair.norm!r} has {size} features for {units} units")
        if isinstance(norm, nn.LayerNorm) and len(norm.normalized_shape) != 1:
            raise TypeError(f"norm {pair.norm!r}: only a LayerNorm over the unit dimension")
    return BoundPair(pair, producer, consumer, modules["activation"], norm, units, positions)


# --------------------------------------------------------------------------- inference


def find_layer_pairs(model: nn.Module) -> list[LayerPair]:
    """The layer pairs of the package's MLP and ResNet-18, or of an ``nn.Sequential``.

    - :class:`~plasticollapse.models.MLP` (ReLU, optionally LayerNorm): each hidden Linear
      with the next Linear (the last with ``classifier``), read at its ReLU. CReLU doubles
      the units and is refused.
    - :class:`~plasticollapse.models.ResNet18`: the inner channels of each basic block,
      ``conv1 -> bn1 -> relu -> conv2`` (8 pairs). The stem's and ``conv2``'s channels feed
      the residual sums, which no single consumer reads: they are left out.
    - an ``nn.Sequential`` (nested ones are walked in order): every Linear/Conv2d, an
      optional BatchNorm/LayerNorm, an activation module, any of dropout, pooling, flatten
      and identity, then the next Linear/Conv2d. A Conv2d pair with a Linear consumer is read
      at the last of those modules before the consumer other than dropout (the flattened
      channel blocks the Linear reads, as lop/nets/conv_net.py passes them to convGnT.py);
      other pairs at the activation.

    Any other model: build the pairs yourself (``LayerPair(producer=, norm=, activation=,
    consumer=)``); the error says so.
    """
    from plasticollapse.models import MLP, ResNet18

    if isinstance(model, MLP):
        if model.crelu:
            raise TypeError("a CReLU MLP's units are doubled after the activation: not a pair")
        return _mlp_pairs(model)
    if isinstance(model, ResNet18):
        return [
            LayerPair(
                f"stages.{k}.conv1", f"stages.{k}.conv2", f"stages.{k}.relu", f"stages.{k}.bn1"
            )
            for k in range(len(model.stages))
        ]
    if isinstance(model, nn.Sequential):
        pairs = _sequential_pairs(model)
        if pairs:
            return pairs
        raise ValueError(
            "found no Linear/Conv2d -> [norm] -> activation module -> Linear/Conv2d pattern in "
            "this nn.Sequential; pass pairs=[LayerPair(producer=..., activation=..., "
            "consumer=...)]"
        )
    raise TypeError(
        f"cannot infer the layer pairs of a {type(model).__name__} (only the package's MLP and "
        "ResNet18 and nn.Sequential models): pass pairs=[LayerPair(producer='conv1', "
        "norm='bn1', activation='act1', consumer='conv2'), ...] with your modules' names"
    )


def _mlp_pairs(model) -> list[LayerPair]:
    names = [(f"body.{i}", m) for i, m in enumerate(model.body)]
    linears = [n for n, m in names if isinstance(m, nn.Linear)]
    norms = [n for n, m in names if isinstance(m, nn.LayerNorm)]
    acts = [n for n, m in names if isinstance(m, nn.ReLU)]
    consumers = [*linears[1:], "classifier"]
    return [
        LayerPair(p, c, a, norms[i] if norms else None)
        for i, (p, c, a) in enumerate(zip(linears, consumers, acts, strict=True))
    ]


def _sequential_pairs(model: nn.Sequential) -> list[LayerPair]:
    leaves = [(n, m) for n, m in model.named_modules() if n and not isinstance(m, nn.Sequential)]
    pairs = []
    for start, (name, module) in enumerate(leaves):
        if not isinstance(module, WEIGHT_TYPES):
            continue
        rest = leaves[start + 1 :]
        norm = None
        if rest and isinstance(rest[0][1], NORM_TYPES):
            norm, rest = rest[0][0], rest[1:]
        if not (rest and isinstance(rest[0][1], ACTIVATION_TYPES)):
            continue
        activation, read, rest = rest[0][0], rest[0][0], rest[1:]
        while rest and isinstance(rest[0][1], PASS_TYPES):
            if not isinstance(rest[0][1], (nn.Dropout, nn.Dropout2d)):
                read = rest[0][0]
            rest = rest[1:]
        if rest and isinstance(rest[0][1], WEIGHT_TYPES):
            consumer = rest[0][1]
            through_flatten = isinstance(module, nn.Conv2d) and isinstance(consumer, nn.Linear)
            pairs.append(LayerPair(name, rest[0][0], read if through_flatten else activation, norm))
    return pairs


# --------------------------------------------------------------------------- activations


class ActivationRecorder:
    """Forward hooks that keep, for each pair, the units' activation of the last forward.

    ``reduce(bound_pair, h)`` turns the hooked output into what is kept (default: a detached
    copy, so later in-place operations cannot change it). Only forwards with gradients
    enabled are recorded when ``training_only`` (a user's evaluation under ``no_grad`` does
    not replace the training step's activations). Call :meth:`remove` when done.
    """

    def __init__(self, model: nn.Module, bound: list[BoundPair], reduce=None, training_only=True):
        self.bound = bound
        self.reduce = reduce or (lambda _pair, h: h.detach().clone())
        self.training_only = training_only
        self.outputs: list = [None] * len(bound)
        self.calls: dict[int, int] = {}
        self.handles = []
        # A module's calls are counted from each start of its parent's forward (a ResNet
        # block's relu: 0 inside, 1 after the sum), so model.features(x) counts right too.
        children: dict[str, set[int]] = {}
        for p in bound:
            parent = p.pair.activation.rpartition(".")[0]
            children.setdefault(parent, set()).add(id(p.activation))
        for parent, ids in children.items():
            # a bound method (in a partial), not a closure: a deepcopy of the model then
            # carries a consistent copy of the recorder, which remove_recorder_hooks finds
            hook = functools.partial(self._new_forward, frozenset(ids))
            self.handles.append(model.get_submodule(parent).register_forward_pre_hook(hook))
        for module in {id(p.activation): p.activation for p in bound}.values():
            self.handles.append(module.register_forward_hook(self._record))

    def _new_forward(self, ids: frozenset[int], _module, _args) -> None:
        for i in ids:
            self.calls.pop(i, None)

    def _record(self, module, _args, output):
        if self.training_only and not torch.is_grad_enabled():
            return
        call = self.calls.get(id(module), 0)
        self.calls[id(module)] = call + 1
        for i, p in enumerate(self.bound):
            if p.activation is module and p.pair.call == call:
                self.outputs[i] = self.reduce(p, output)

    def clear(self) -> None:
        """Forget the recorded activations and the calls counted: the next forward is
        counted from its start even where no parent's forward runs (the MLP's
        ``forward_hidden`` calls its layers one by one)."""
        self.outputs = [None] * len(self.bound)
        self.calls.clear()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def _recorder_of(hook) -> ActivationRecorder | None:
    """The recorder a forward (pre-)hook belongs to, or None for any other hook."""
    if isinstance(hook, functools.partial):
        hook = hook.func
    owner = getattr(hook, "__self__", None)
    return owner if isinstance(owner, ActivationRecorder) else None


def remove_recorder_hooks(model: nn.Module) -> int:
    """Take every :class:`ActivationRecorder`'s hooks off ``model``; returns how many.

    For a ``copy.deepcopy`` of a recorded model: the copy carries copies of the hooks (and
    of their recorder), which would keep a copy of the activations of each of its training
    steps that nobody reads (the warm start's probes train such copies). Other hooks stay.
    """
    removed = 0
    for module in model.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            for key in [k for k, hook in hooks.items() if _recorder_of(hook) is not None]:
                del hooks[key]
                module._forward_hooks_with_kwargs.pop(key, None)
                module._forward_hooks_always_called.pop(key, None)
                module._forward_pre_hooks_with_kwargs.pop(key, None)
                removed += 1
    return removed


# --------------------------------------------------------------------------- optimizer state


@torch.no_grad()
def reset_optimizer_state(
    optimizer: torch.optim.Optimizer | None, param: torch.Tensor, index: tuple
) -> None:
    """Zero, at ``index``, every per-element state tensor the optimizer keeps for ``param``.

    That is each state entry of ``param``'s shape: SGD's ``momentum_buffer``; Adam's and
    AdamW's ``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq`` with amsgrad); a
    per-element ``step`` where the optimizer keeps one (lop/utils/AdamGnT.py, whose reset
    lop/algos/convGnT.py ``update_optim_params`` does). torch's Adam keeps one scalar
    ``step`` per parameter tensor, which cannot be reset for some elements: it is left, so
    a recycled weight's first Adam updates use the tensor's bias correction (near 1 late in
    training) with zeroed moments. Sokar et al. (2023) reset the moments the same way.
    """
    if optimizer is None:
        return
    for value in optimizer.state.get(param, {}).values():
        if torch.is_tensor(value) and value.shape == param.shape:
            value[index] = 0
