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
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from plasticollapse.metrics.collapse import CollapseAccumulator
from plasticollapse.metrics.plasticity import (
    DORMANT_TAU,
    UnitStatistics,
    eval_mode,
    model_device,
    weight_magnitude,
)
from plasticollapse.metrics.threads import one_thread

#: Per-ReLU-layer keys reported with ``hidden_layers=True`` (suffixed ``_layer{k}``).
LAYER_KEYS = ("dormant_fraction", "dead_fraction", "effective_rank", "srank")
#: Per-ReLU-layer collapse keys added by ``layer_collapse=True`` (suffixed ``_layer{k}``):
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


def _as_labels(labels) -> torch.Tensor:
    y = torch.as_tensor(labels)
    if y.is_floating_point():
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    return y.to(torch.int64)


#: ``forward(start, stop) -> (logits, penultimate features, [each ReLU's output])`` of
#: rows ``start:stop``: how :func:`measure_model` can be given a faster forward pass.
Forward = Callable[[int, int], tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]]


def measure_model(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    batch_size: int = 1024,
    layer: str | None = None,
    hidden_layers: bool = False,
    tau: float = DORMANT_TAU,
    layer_collapse: bool = False,
    forward: Forward | None = None,
) -> dict[str, float]:
    """Collapse and plasticity metrics of ``model`` on (``inputs``, ``labels``), one forward pass.

    The classifier is the model's last ``nn.Linear`` (in ``named_modules()`` order) unless
    ``layer`` names the module whose input is the penultimate feature. Its input (2-D, N x D)
    is h; the model's output is the logits (N x num_classes). Returns:

    * every key of :func:`~plasticollapse.metrics.collapse.collapse_metrics` with the classifier's
      weight and bias (NC2/NC3 weight keys only if the head has a (num_classes, D) weight)
      and NC4 from the model's logits;
    * ``accuracy`` (argmax logits == labels) and ``loss`` (mean cross-entropy);
    * of the penultimate features: ``dormant_fraction`` (ReDo, ``tau``), ``dead_fraction``,
      ``effective_rank``, ``srank``, ``stable_rank`` (see :mod:`plasticollapse.metrics.plasticity`);
    * ``weight_magnitude`` (mean |theta| over all parameters);
    * with ``hidden_layers=True``, for each ReLU call k = 1, 2, ... in forward order:
      ``dormant_fraction_layer{k}``, ``dead_fraction_layer{k}``, ``effective_rank_layer{k}``,
      ``srank_layer{k}`` (conv activations: units are channels, see plasticity);
    * with ``hidden_layers=True`` and ``layer_collapse=True``, also the collapse of each
      ReLU layer's output, treated as features h^(k): every key of
      :data:`LAYER_COLLAPSE_KEYS` suffixed ``_layer{k}``, from the same formulas as the
      penultimate ones (NC1 = Tr(Sigma_W Sigma_B^+)/C of h^(k), ...; NC4: nearest class
      mean of h^(k) against the network's prediction). Conv activations are averaged over
      their spatial positions first (one value per channel). For an MLP the last ReLU's
      output is the penultimate feature, so its ``nc1_layer{L}`` equals ``nc1``.

    Runs in eval mode under ``torch.no_grad`` and restores every module's train/eval mode.
    ``inputs`` may live on the CPU while the model is on a GPU: batches are moved.

    ``forward`` replaces running ``model`` with hooks: it gives each batch's logits,
    penultimate features and ReLU outputs itself (e.g. :func:`mlp_forward`, whose first
    layer reads sparse inputs); the metrics are the same up to float rounding.
    """
    y_all = _as_labels(labels)
    if len(inputs) != len(y_all) or len(inputs) == 0:
        raise ValueError(f"need as many labels as inputs (> 0), got {len(y_all)} and {len(inputs)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if layer_collapse and not hidden_layers:
        raise ValueError("layer_collapse=True measures the hidden layers: pass hidden_layers=True")
    _, head = find_classifier(model, layer)
    device = model_device(model)
    captured: list[torch.Tensor] = []
    relu_calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    handles = [head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))]
    if hidden_layers:
        hook = _relu_hook(relu_calls)
        handles += [
            m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)
        ]
    accumulator: CollapseAccumulator | None = None
    # The features' gram comes from the collapse accumulator's statistics (no second
    # float64 gram of the same rows). In an MLP the last ReLU's output is the feature
    # matrix itself: that layer then borrows the same gram, while each batch shows it is.
    features_stats = UnitStatistics(tau, gram=False)
    borrower: UnitStatistics | None = None
    layer_stats: list[UnitStatistics] = []
    layer_collapse_stats: list[CollapseAccumulator] = []
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device,
    correct = torch.zeros((), dtype=torch.int64, device=device)  # read once at the end
    if forward is not None:  # no hooks: the forward hands over what they would capture
        for handle in handles:
            handle.remove()
        handles = []
    try:
        with eval_mode(model), torch.no_grad():
            for start in range(0, len(y_all), batch_size):
                captured.clear()
                relu_calls.clear()
                y = y_all[start : start + batch_size].to(device)
                if forward is None:
                    logits = model(inputs[start : start + batch_size].to(device))
                else:
                    logits, features, outputs = forward(start, start + len(y))
                    captured.append(features)
                    if hidden_layers:
                        relu_calls.extend((a, a) for a in outputs)
                # the model ran on the caller's threads, the metrics run on one
                # (metrics/threads.py says why): one switch per batch for all of them
                with one_thread():
                    h = _penultimate(captured, logits, len(y), num_classes)
                    if accumulator is None:
                        accumulator = CollapseAccumulator(num_classes, h.shape[1])
                        if relu_calls and relu_calls[-1][0] is h:
                            borrower = UnitStatistics(tau, gram=False)
                    for k, (output, a) in enumerate(relu_calls):
                        if k == len(layer_stats):
                            last = k == len(relu_calls) - 1
                            layer_stats.append((last and borrower) or UnitStatistics(tau))
                        stats = layer_stats[k]
                        if stats is borrower and output is not h:  # not the features after all:
                            stats.continue_gram(accumulator.uncentred_gram())  # of the rows so far
                            borrower = None
                        stats.update(a, nonnegative=True)  # a ReLU's output
                    accumulator.update(h, y, logits)  # after the layers (see just above)
                    if layer_collapse:
                        _update_layer_collapse(layer_collapse_stats, relu_calls, y, logits)
                    relu_features = bool(relu_calls) and relu_calls[-1][0] is h
                    features_stats.update(h, nonnegative=relu_features)
                    loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
                    correct += (logits.argmax(1) == y).sum()
    finally:
        for handle in handles:
            handle.remove()
    features_stats.gram = accumulator.uncentred_gram()
    if borrower is not None:
        borrower.gram = features_stats.gram
    weight, bias = _classifier_parameters(head, num_classes)
    out = accumulator.compute(weight, bias)
    out["accuracy"] = int(correct) / len(y_all)
    out["loss"] = float(loss_sum) / len(y_all)
    out.update(features_stats.compute())
    out["weight_magnitude"] = weight_magnitude(model)
    for k, stats in enumerate(layer_stats, start=1):
        values = stats.compute()
        out.update({f"{key}_layer{k}": values[key] for key in LAYER_KEYS})
    for k, layer_accumulator in enumerate(layer_collapse_stats, start=1):
        values = layer_accumulator.compute()
        out.update({f"{key}_layer{k}": values[key] for key in LAYER_COLLAPSE_KEYS})
    return out


def _update_layer_collapse(
    accumulators: list[CollapseAccumulator],
    relu_calls: list[tuple[torch.Tensor, torch.Tensor]],
    y: torch.Tensor,
    logits: torch.Tensor,
) -> None:
    """Feed each ReLU call's output (conv: averaged over positions) to its layer's collapse
    accumulator, created at the first batch."""
    for k, (_, a) in enumerate(relu_calls):
        features = a.flatten(2).mean(2) if a.ndim > 2 else a
        if k == len(accumulators):
            accumulators.append(CollapseAccumulator(logits.shape[1], features.shape[1]))
        accumulators[k].update(features, y, logits)


def _relu_hook(calls: list[tuple[torch.Tensor, torch.Tensor]]):
    """Records (the output object, a copy of its values) of every ReLU call."""

    def hook(module, _inputs, output):
        # an inplace ReLU's output may be overwritten later in the forward: keep a copy
        values = output.detach().clone() if getattr(module, "inplace", False) else output.detach()
        calls.append((output, values))

    return hook


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
    modules = list(model.body)
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
        return model.classifier(a), a, outputs

    return forward
