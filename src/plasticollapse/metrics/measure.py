"""One call that measures collapse and plasticity of any classifier on a data set.

Three lines in your own training loop are enough::

    from plasticollapse.metrics.measure import measure_model

    for task in range(num_tasks):
        train_one_task(model, x_train, y_train)                      # your loop
        metrics = measure_model(model, x_train, y_train, num_classes=10)
        print(task, metrics["nc1"], metrics["accuracy"], metrics["dormant_fraction"])

:func:`measure_model` runs the model once over the data (eval mode, no autograd, batches
moved to the model's device), captures the penultimate features h (the *input* of the final
``nn.Linear``) with a hook, streams them with the logits into a
:class:`~plasticollapse.metrics.collapse.CollapseAccumulator`, and returns one flat dict of floats.
A DataLoader works as well as tensors (``measure_model(model, loader, num_classes=10)``),
and ``layers="activations"`` adds every activation module's metrics under its name. For a
loop that measures every k steps and logs, see :class:`plasticollapse.metrics.monitor.Monitor`
(docs/own_loop.md).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from plasticollapse.metrics.batches import labelled_batches, rebatched
from plasticollapse.metrics.collapse import CollapseAccumulator
from plasticollapse.metrics.layers import (
    ACTIVATION_TYPES,
    FunctionalActivationSpy,
    LayerSpec,
    resolve_layers,
    unseen_activations_message,
)
from plasticollapse.metrics.plasticity import (
    DORMANT_TAU,
    UnitStatistics,
    batch_statistics,
    eval_mode,
    model_device,
    weight_magnitude,
)
from plasticollapse.metrics.threads import one_thread

#: Per-layer keys, suffixed ``_layer{k}`` (``hidden_layers=True``) or ``_<module name>``
#: (``layers=``).
LAYER_KEYS = ("dormant_fraction", "dead_fraction", "effective_rank", "srank", "feature_norm")
#: Per-layer collapse keys added by ``layer_collapse=True`` (suffixed as :data:`LAYER_KEYS`):
#: the NC metrics that need no classifier of that layer, and NC4 against the network's logits.
LAYER_COLLAPSE_KEYS = (
    "nc1",
    "nc1_quotient",
    "cdnv",
    "nc2_equinorm_means",
    "nc2_equiangularity",
    "nc2_etf_error_means",
    "nc4_agreement",
)


def find_classifier(model: nn.Module, layer: str | None = None) -> tuple[str, nn.Module]:
    """(name, module) whose input is the penultimate feature: the last ``nn.Linear`` in
    ``model.named_modules()`` order, or the module named ``layer``."""
    named = dict(model.named_modules())
    if layer is not None:
        if layer not in named:
            raise ValueError(f"model has no module named {layer!r}; choose from {list(named)}")
        return layer, named[layer]
    linears = [(n, m) for n, m in named.items() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            "the model has no nn.Linear; pass layer='name' of the module whose input is "
            "the penultimate feature"
        )
    return linears[-1]


def _classifier_parameters(head: nn.Module, num_classes: int):
    """(weight, bias) of the head when it is linear-like with a (num_classes, D) weight."""
    weight = getattr(head, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or len(weight) != num_classes:
        return None, None
    bias = getattr(head, "bias", None)
    return weight.detach(), bias.detach() if isinstance(bias, torch.Tensor) else None


#: ``forward(start, stop) -> (logits, penultimate features, [each ReLU's output])`` of
#: rows ``start:stop``: how :func:`measure_model` can be given a faster forward pass.
Forward = Callable[[int, int], tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]]
#: How BatchNorm layers normalise while measuring (``measure_model(..., batchnorm=...)``).
BATCHNORM_MODES = ("eval", "batch")
_UNSEEN_HINT = (
    "use activation modules there (nn.ReLU(), nn.GELU(), ...) instead of functions, or pass "
    "layers=[names of the modules whose outputs to measure]"
)


@dataclass
class _Call:
    """One call of a measured layer in a forward pass: its name, its output object (to
    recognise the penultimate features), its values, and whether they are known >= 0."""

    name: str
    output: torch.Tensor
    values: torch.Tensor
    nonnegative: bool


def measure_model(
    model: nn.Module,
    inputs,
    labels=None,
    num_classes: int | None = None,
    batch_size: int = 1024,
    layer: str | None = None,
    hidden_layers: bool = False,
    tau: float = DORMANT_TAU,
    layer_collapse: bool = False,
    forward: Forward | None = None,
    layers: LayerSpec | None = None,
    batchnorm: str = "eval",
    warn_unseen: bool = True,
) -> dict[str, float]:
    """Collapse and plasticity metrics of ``model`` on labelled data, one forward pass.

    The data is a tensor of ``inputs`` with its ``labels`` (cut into batches of
    ``batch_size``), or, with ``labels=None``, any iterable of ``(inputs, labels)`` batches
    such as a ``DataLoader`` (streamed: never the whole set in memory; in eval mode small
    batches are joined up to ``batch_size`` rows, which changes nothing but speed; the
    global RNG, which a DataLoader draws from, is restored after).

    The classifier is the model's last ``nn.Linear`` (in ``named_modules()`` order) unless
    ``layer`` names the module whose input is the penultimate feature. Its input (2-D, N x D)
    is h; the model's output is the logits (N x num_classes). Returns:

    * every key of :func:`~plasticollapse.metrics.collapse.collapse_metrics` with the classifier's
      weight and bias (NC2/NC3 weight keys only if the head has a (num_classes, D) weight)
      and NC4 from the model's logits;
    * ``accuracy`` (argmax logits == labels) and ``loss`` (mean cross-entropy);
    * of the penultimate features: ``dormant_fraction`` (ReDo, ``tau``), ``dead_fraction``,
      ``effective_rank``, ``srank``, ``stable_rank``, ``feature_norm`` (mean ||h||; see
      :mod:`plasticollapse.metrics.plasticity`);
    * ``weight_magnitude`` (mean |theta| over all parameters);
    * per layer, every key of :data:`LAYER_KEYS` suffixed ``_<layer>`` (conv activations:
      units are channels, see plasticity), where the layers are

      - ``layers=``: modules by name. ``"activations"`` picks every activation module
        (:data:`~plasticollapse.metrics.layers.ACTIVATION_TYPES`: ReLU, GELU, LeakyReLU,
        tanh, ...); a list picks modules by name, by type (``nn.GELU``: all of them) or
        as modules. Keys carry the module's name: ``dormant_fraction_body.2``; a module
        called again in the same forward adds ``_call2``, ``_call3``, ...
        Activations applied as functions (``F.relu``) have no module to hook: a warning
        names each one and where it ran (watched on the first batch).
      - ``hidden_layers=True`` (the studies' keys): each ``nn.ReLU`` call k = 1, 2, ... in
        forward order, ``dormant_fraction_layer{k}``, ...; other activation modules are
        not measured (a warning names them).

    * with ``layer_collapse=True``, also the collapse of each layer's output, treated as
      features h^(k): every key of :data:`LAYER_COLLAPSE_KEYS` with the layer's suffix,
      from the same formulas as the penultimate ones (NC1 = Tr(Sigma_W Sigma_B^+)/C of
      h^(k), ...; NC4: nearest class mean of h^(k) against the network's prediction). Conv
      activations are averaged over their spatial positions first (one value per channel).
      For an MLP the last ReLU's output is the penultimate feature, so its
      ``nc1_layer{L}`` equals ``nc1``.

    Runs in eval mode under ``torch.no_grad`` and restores every module's train/eval mode.
    ``batchnorm="batch"`` normalises each batch by its own statistics in every BatchNorm
    layer instead of the running ones (how the paper's authors measured BatchNorm
    networks), which stay untouched (:func:`~plasticollapse.metrics.plasticity.batch_statistics`);
    batches then need more than one sample. Inputs may live on the CPU while the model is
    on a GPU: batches are moved.

    ``warn_unseen=False`` skips watching the first batch for activations the hooks miss
    (and the warnings about them): for a caller that measured the same model before and
    was warned then (the Monitor, at every step after its first); the watch runs every
    torch call of that batch through Python (~3 ms a call on a small CNN).

    ``forward`` replaces running ``model`` with hooks: it gives each batch's logits,
    penultimate features and ReLU outputs itself (e.g. :func:`mlp_forward`, whose first
    layer reads sparse inputs); the metrics are the same up to float rounding.
    """
    num_classes = _check_options(
        num_classes, batch_size, hidden_layers, layers, layer_collapse, forward, batchnorm
    )
    batches = labelled_batches(inputs, labels, batch_size, by_index=forward is not None)
    if labels is None and batchnorm == "eval":  # a batch's rows do not change each other
        batches = rebatched(batches, batch_size)
    _, head = find_classifier(model, layer)
    taps = _taps(model, hidden_layers, layers)
    device = model_device(model)
    captured: list[torch.Tensor] = []
    calls: list[_Call] = []
    handles = []
    if forward is None:  # else no hooks: the forward hands over what they would capture
        handles.append(head.register_forward_pre_hook(lambda _m, args: captured.append(args[0])))
        handles += [m.register_forward_hook(_call_hook(calls, name)) for name, m in taps or ()]
    watched = taps is not None and warn_unseen
    spy = FunctionalActivationSpy(model, [m for _, m in taps or ()]) if watched else None
    measurement = _Measurement(num_classes, tau, layer_collapse)
    # a DataLoader draws its workers' seed from the global RNG, even unshuffled: measuring
    # must not move the caller's random stream
    keep_rng = torch.random.fork_rng(devices=[]) if labels is None else nullcontext()
    try:
        with keep_rng, eval_mode(model), torch.no_grad(), _batchnorm_mode(model, batchnorm):
            for start, x, y in batches:
                captured.clear()
                calls.clear()
                y = y.to(device)
                if forward is None:
                    watch = spy if spy is not None and start == 0 else nullcontext()
                    with watch:  # the first batch shows which activations hooks miss
                        logits = model(x.to(device))
                else:
                    logits, features, outputs = forward(start, start + len(y))
                    captured.append(features)
                    if hidden_layers:
                        calls.extend(_Call("", a, a, True) for a in outputs)
                # the model ran on the caller's threads, the metrics run on one
                # (metrics/threads.py says why): one switch per batch for all of them
                with one_thread():
                    h = _penultimate(captured, logits, len(y), num_classes)
                    suffixes = _numbered(calls) if hidden_layers else _named(calls)
                    measurement.update(h, y, logits, calls, suffixes)
    finally:
        for handle in handles:
            handle.remove()
    if spy is not None:
        _warn_unseen(model, spy, taps, hidden_layers)
    return measurement.compute(head, model)


def _check_options(num_classes, batch_size, hidden_layers, layers, layer_collapse, forward, mode):
    """num_classes, once every option is known valid (else a ValueError that says why)."""
    if num_classes is None or int(num_classes) < 1:
        raise ValueError(f"num_classes must be the number of classes (>= 1), got {num_classes}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if mode not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm must be one of {BATCHNORM_MODES}, got {mode!r}")
    if hidden_layers and layers is not None:
        raise ValueError(
            "pass either hidden_layers=True (ReLU layers numbered _layer{k}) or layers= "
            "(layers by module name), not both"
        )
    if layer_collapse and not hidden_layers and layers is None:
        raise ValueError(
            "layer_collapse=True measures the hidden layers: pass hidden_layers=True or layers="
        )
    if forward is not None and layers is not None:
        raise ValueError("forward= hands over ReLU outputs: pass hidden_layers=True, not layers=")
    return int(num_classes)


def _taps(model: nn.Module, hidden_layers: bool, layers) -> list[tuple[str, nn.Module]] | None:
    """(name, module) of each module whose output is measured; None when no layer is."""
    if layers is not None:
        return resolve_layers(model, layers)
    if hidden_layers:
        return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ReLU)]
    return None


def _call_hook(calls: list[_Call], name: str):
    """Records each call of a measured module."""

    def hook(module, _inputs, output):
        # an inplace activation's output may be overwritten later in the forward: keep a copy
        values = output.detach().clone() if getattr(module, "inplace", False) else output.detach()
        calls.append(_Call(name, output, values, isinstance(module, nn.ReLU)))

    return hook


def _numbered(calls: list[_Call]) -> list[str]:
    """``layer1``, ``layer2``, ...: the calls in forward order (the studies' keys)."""
    return [f"layer{k}" for k in range(1, len(calls) + 1)]


def _named(calls: list[_Call]) -> list[str]:
    """Each call's module name, with ``_call{j}`` for a module's j-th call (j >= 2)."""
    seen: Counter[str] = Counter()
    suffixes = []
    for call in calls:
        seen[call.name] += 1
        j = seen[call.name]
        suffixes.append(call.name if j == 1 else f"{call.name}_call{j}")
    return suffixes


def _batchnorm_mode(model: nn.Module, mode: str):
    return batch_statistics(model) if mode == "batch" else nullcontext()


def _warn_unseen(model, spy: FunctionalActivationSpy, taps, hidden_layers: bool) -> None:
    """Warn about the activations the measured layers leave out (see measure_model)."""
    names = [name for name, _ in taps]
    if spy.unseen:
        warnings.warn(unseen_activations_message(spy.unseen, names, _UNSEEN_HINT), stacklevel=3)
    if hidden_layers:
        others = [
            f"{type(m).__name__} {name!r}"
            for name, m in model.named_modules()
            if isinstance(m, ACTIVATION_TYPES) and not isinstance(m, nn.ReLU)
        ]
        if others:
            warnings.warn(
                f"hidden_layers=True measures nn.ReLU modules only, not {', '.join(others)}; "
                "pass layers='activations' to measure every activation module by name",
                stacklevel=3,
            )


class _Measurement:
    """What one :func:`measure_model` call streams: the features' collapse and unit
    statistics, each layer's, the loss and the correct predictions."""

    def __init__(self, num_classes: int, tau: float, layer_collapse: bool):
        self.num_classes, self.tau = num_classes, tau
        self.accumulator: CollapseAccumulator | None = None
        # The features' gram comes from the collapse accumulator's statistics (no second
        # float64 gram of the same rows). In an MLP the last ReLU's output is the feature
        # matrix itself: that layer then borrows the same gram, while each batch shows it is.
        self.features_stats = UnitStatistics(tau, gram=False)
        self.borrower: UnitStatistics | None = None
        self.layers: list[tuple[str, UnitStatistics]] = []
        self.layer_collapse: list[CollapseAccumulator] = []
        self.with_layer_collapse = layer_collapse
        self.loss_sum: torch.Tensor | None = None  # summed on the device, read once at the end
        self.correct: torch.Tensor | None = None
        self.count = 0

    def update(self, h, y, logits, calls: list[_Call], suffixes: list[str]) -> None:
        if self.accumulator is None:
            self.accumulator = CollapseAccumulator(self.num_classes, h.shape[1])
            if calls and calls[-1].output is h:
                self.borrower = UnitStatistics(self.tau, gram=False)
            self.loss_sum = torch.zeros((), dtype=torch.float64, device=logits.device)
            self.correct = torch.zeros((), dtype=torch.int64, device=logits.device)
        for k, (call, suffix) in enumerate(zip(calls, suffixes, strict=True)):
            if k == len(self.layers):
                last = k == len(calls) - 1
                self.layers.append((suffix, (last and self.borrower) or UnitStatistics(self.tau)))
            stats = self.layers[k][1]
            if stats is self.borrower and call.output is not h:  # not the features after all:
                stats.continue_gram(self.accumulator.uncentred_gram())  # of the rows so far
                self.borrower = None
            stats.update(call.values, nonnegative=call.nonnegative)
        self.accumulator.update(h, y, logits)  # after the layers (see just above)
        if self.with_layer_collapse:
            self._update_layer_collapse(calls, y, logits)
        relu_features = bool(calls) and calls[-1].output is h and calls[-1].nonnegative
        self.features_stats.update(h, nonnegative=relu_features)
        assert self.loss_sum is not None and self.correct is not None  # set at the first batch
        self.loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        self.correct += (logits.argmax(1) == y).sum()
        self.count += len(y)

    def _update_layer_collapse(self, calls: list[_Call], y, logits) -> None:
        """Feed each layer's output (conv: averaged over positions) to its collapse
        accumulator, created at the first batch."""
        for k, call in enumerate(calls):
            a = call.values
            features = a.flatten(2).mean(2) if a.ndim > 2 else a
            if k == len(self.layer_collapse):
                self.layer_collapse.append(CollapseAccumulator(logits.shape[1], features.shape[1]))
            self.layer_collapse[k].update(features, y, logits)

    def compute(self, head: nn.Module, model: nn.Module) -> dict[str, float]:
        assert self.accumulator is not None, "compute() before any update()"
        assert self.loss_sum is not None and self.correct is not None  # set with the accumulator
        self.features_stats.gram = self.accumulator.uncentred_gram()
        if self.borrower is not None:
            self.borrower.gram = self.features_stats.gram
        weight, bias = _classifier_parameters(head, self.num_classes)
        out = self.accumulator.compute(weight, bias)
        out["accuracy"] = int(self.correct) / self.count
        out["loss"] = float(self.loss_sum) / self.count
        out.update(self.features_stats.compute())
        out["weight_magnitude"] = weight_magnitude(model)
        for suffix, stats in self.layers:
            values = stats.compute()
            out.update({f"{key}_{suffix}": values[key] for key in LAYER_KEYS})
        for (suffix, _), accumulator in zip(self.layers, self.layer_collapse, strict=False):
            values = accumulator.compute()
            out.update({f"{key}_{suffix}": values[key] for key in LAYER_COLLAPSE_KEYS})
        return out


def _penultimate(captured, logits, n: int, num_classes: int) -> torch.Tensor:
    if not captured:
        raise ValueError(
            "the classifier module never ran in forward(); pass layer='name' of the module "
            "whose input is the penultimate feature"
        )
    h = captured[-1]
    if not isinstance(h, torch.Tensor) or h.ndim != 2 or len(h) != n:
        shape = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h)
        raise ValueError(
            f"the classifier's input must be (batch, features), got {shape}; pass layer= "
            "naming a module whose input is the flat penultimate feature"
        )
    if not isinstance(logits, torch.Tensor) or logits.shape != (n, num_classes):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
        raise ValueError(
            f"the model must return logits of shape (batch, num_classes) = ({n}, {num_classes}), "
            f"got {shape}"
        )
    return h


def mlp_forward(
    model: nn.Module, inputs: torch.Tensor, first_layer: torch.Tensor | None = None
) -> Forward:
    """A :data:`Forward` for the package's :class:`~plasticollapse.models.MLP` on
    ``inputs``, the same arithmetic as ``model.forward``: per batch, each ReLU's output,
    the last being the penultimate features, and the logits.

    ``first_layer`` (N x h1), when given, holds the first hidden layer's outputs
    relu(W_1 x + b_1) of every row, computed elsewhere (e.g. from sparse inputs:
    :func:`plasticollapse.engines.fast_measure.first_layer_outputs`); the forward then
    starts from them and never reads ``inputs``.
    """
    modules = list(cast(nn.Sequential, model.body))  # the MLP's: Module.__getattr__ is untyped
    device = model_device(model)

    def forward(start: int, stop: int):
        outputs: list[torch.Tensor] = []
        if first_layer is not None:
            a = first_layer[start:stop].to(device)
            outputs.append(a)
            rest = modules[2:]  # after the first Linear and its ReLU
        else:
            a = inputs[start:stop].to(device).flatten(1)
            rest = modules
        for module in rest:
            a = module(a)
            if isinstance(module, nn.ReLU):
                outputs.append(a)
        return cast(nn.Module, model.classifier)(a), a, outputs

    return forward
