"""ReDo and Continual Backprop on any model whose hidden layers are given as
:class:`~plasticollapse.remedies.layer_pairs.LayerPair` s (Linear -> Linear, Conv2d ->
Conv2d, Conv2d -> flatten -> Linear, with a BatchNorm/LayerNorm between where present), for
a user's own loop and optimizer.

- :func:`redo_reset_pairs`: Sokar et al. 2023 (arXiv 2302.12902), per unit or channel; on
  the package's MLP it is :func:`~plasticollapse.remedies.functional.redo_reset`.
- :class:`ContinualBackpropPairs`: Dohare et al. 2024 (Nature 632), the generate-and-test
  of lop/algos/cbp_linear.py, cbp_conv.py and convGnT.py; on the package's MLP it makes the
  replacements of :class:`~plasticollapse.remedies.cbp.ContinualBackprop`.
- :class:`LayerPairContinualBackprop`: the ``cbp`` remedy of a study's config on any
  network's layer pairs (the warm start's ResNet-18 and MLP), through
  :func:`on_layer_pairs`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from plasticollapse.remedies.base import Remedy, RemedyContext
from plasticollapse.remedies.cbp import ContinualBackprop
from plasticollapse.remedies.layer_pairs import (
    ActivationRecorder,
    BoundPair,
    LayerPair,
    bind_pairs,
    find_layer_pairs,
    reset_optimizer_state,
)

__all__ = [
    "ContinualBackpropPairs",
    "LayerPairContinualBackprop",
    "on_layer_pairs",
    "redo_reset_pairs",
]


def _weighted(module: nn.Module) -> nn.Linear | nn.Conv2d:
    """A pair's producer or consumer, which :func:`bind_pairs` checked is a Linear or a
    Conv2d (``BoundPair`` types it ``nn.Module``), as such for the type checker."""
    assert isinstance(module, (nn.Linear, nn.Conv2d))
    return module


def _reset_rows(param: torch.Tensor | None, units, values, optimizer) -> None:
    """``param[units] = values`` (a tensor or a number) and its optimizer state there zeroed."""
    if param is None:
        return
    param[units] = values
    reset_optimizer_state(optimizer, param, (units,))


def _reset_norm(norm: nn.Module | None, units, optimizer, weight=1.0, bias=0.0) -> None:
    """The normalisation's affine weight and bias of ``units`` reset (to ``weight``/``bias``),
    and a BatchNorm's running mean 0 and variance 1 there, as ``reinit_features`` of
    lop/algos/cbp_conv.py does."""
    if norm is None:
        return
    if isinstance(norm, nn.LayerNorm):
        _reset_rows(norm.weight, units, weight, optimizer)
        _reset_rows(norm.bias, units, bias, optimizer)
        return
    assert isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d))  # bind_pairs checked it
    if norm.affine:
        _reset_rows(norm.weight, units, weight, optimizer)
        _reset_rows(norm.bias, units, bias, optimizer)
    if norm.track_running_stats:
        assert norm.running_mean is not None and norm.running_var is not None
        norm.running_mean[units] = 0.0
        norm.running_var[units] = 1.0


def _zero_outgoing(pair: BoundPair, units, optimizer) -> None:
    """The consumer's weights that read ``units`` set to 0 (a fixed head is left alone)."""
    weight = _weighted(pair.consumer).weight
    if not weight.requires_grad:  # a fixed (etf_head) classifier
        return
    index = pair.outgoing_index(units)
    weight[index] = 0.0
    reset_optimizer_state(optimizer, weight, index)


# --------------------------------------------------------------------------- ReDo


@torch.no_grad()
def redo_reset_pairs(
    model: nn.Module,
    pairs: Sequence[LayerPair] | None,
    inputs: torch.Tensor,
    tau: float = 0.1,
    generator: torch.Generator | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    batch_size: int = 1024,
) -> list[int]:
    """ReDo (Sokar, Agarwal, Castro & Evci 2023, "The Dormant Neuron Phenomenon in Deep
    Reinforcement Learning", ICML; github.com/google/dopamine labs/redo), in place, on the
    units of ``pairs`` (None: :func:`~plasticollapse.remedies.layer_pairs.find_layer_pairs`).

    On ``inputs`` (one eval-mode pass in batches of ``batch_size``, BatchNorm on its running
    statistics), unit i of a pair, with h its activation (a channel: all its positions), is
    tau-dormant when::

        s_i = E_{x, p} |h_i(x)_p| / ((1/C) sum_k E_{x, p} |h_k(x)_p|)  <=  tau

    (Def. 3.1 of the paper; per channel, the mean over batch and spatial positions p; the
    layer's C units in the denominator; :func:`~plasticollapse.metrics.plasticity.dormant_units`).
    Every pair is scored before any is reset. Each dormant unit then gets:

    - incoming weights and bias from a freshly initialised network of the same architecture
      (:func:`~plasticollapse.remedies.functional.fresh_like` with ``generator``: the
      layer's own initialisation); the BatchNorm/LayerNorm between, its fresh affine
      parameters and (BatchNorm) running mean 0 and variance 1;
    - outgoing weights 0 (for a Conv2d -> Linear pair, the channel's block of columns), so
      the network's output does not change until training uses the unit;
    - the optimizer's per-element state of all those parameters zeroed
      (:func:`~plasticollapse.remedies.layer_pairs.reset_optimizer_state`).

    Incoming resets come first, outgoing zeros after, so where a recycled unit feeds another
    recycled unit the zero wins. On the package's MLP this is
    :func:`~plasticollapse.remedies.functional.redo_reset` exactly. Returns the number of
    units reset per pair.
    """
    from plasticollapse.metrics.plasticity import (
        _batches,
        dormant_mask_from_scores,
        eval_mode,
        model_device,
    )
    from plasticollapse.remedies.functional import fresh_like

    bound = bind_pairs(model, pairs)
    # Per-sample mean |h| per unit, in float64 (as dormant_units computes it), kept per batch.
    per_batch: list[list] = [[] for _ in bound]

    def reduce(pair, h):
        return pair.unit_view(h.detach()).to(torch.float64).abs().mean(2).cpu()

    recorder = ActivationRecorder(model, bound, reduce, training_only=False)
    device = model_device(model)
    try:
        with eval_mode(model):
            for batch in _batches(inputs, batch_size):
                recorder.outputs = [None] * len(bound)
                model(batch.to(device))
                for kept, out in zip(per_batch, recorder.outputs, strict=True):
                    if out is None:
                        raise RuntimeError("a pair's activation module did not run in forward")
                    kept.append(out)
    finally:
        recorder.remove()
    n = max(len(inputs), 1)
    masks = [
        dormant_mask_from_scores(torch.cat(kept).sum(0) / n, tau).to(
            _weighted(p.producer).weight.device
        )
        for kept, p in zip(per_batch, bound, strict=True)
    ]
    fresh = dict(fresh_like(model, generator).named_modules())
    for p, mask in zip(bound, masks, strict=True):
        units = mask.nonzero().flatten()
        if len(units) == 0:
            continue
        layer, new = _weighted(p.producer), _weighted(fresh[p.pair.producer])
        _reset_rows(layer.weight, units, new.weight[units], optimizer)
        if layer.bias is not None:
            assert new.bias is not None  # the same architecture
            _reset_rows(layer.bias, units, new.bias[units], optimizer)
        if p.norm is not None:
            norm = fresh[p.pair.norm]
            affine = getattr(norm, "weight", None) is not None
            weight = norm.weight[units] if affine else 1.0
            bias = norm.bias[units] if affine else 0.0
            _reset_norm(p.norm, units, optimizer, weight, bias)
    for p, mask in zip(bound, masks, strict=True):
        units = mask.nonzero().flatten()
        if len(units):
            _zero_outgoing(p, units, optimizer)
    return [int(mask.sum()) for mask in masks]


# --------------------------------------------------------------------------- CBP


INITS = ("kaiming", "lop")
#: Per-unit state of :class:`ContinualBackpropPairs`, one tensor per pair each.
TRACKED = ("util", "mean", "power", "age")


def replacement_bound(
    layer: nn.Linear | nn.Conv2d, init: str, gain: float = math.sqrt(2.0)
) -> float:
    """The U(-b, b) bound of a replaced unit's incoming weights.

    ``"kaiming"``: b = gain sqrt(3 / fan_in) for Linear and Conv2d alike (fan_in = in
    channels x kernel area); Kaiming-uniform, the package's MLP init and
    :class:`~plasticollapse.remedies.cbp.ContinualBackprop`'s. ``"lop"``: the bound of
    ``get_layer_bound`` in lop/algos/cbp_linear.py: gain sqrt(3 / fan_in) for a Linear,
    sqrt(1 / fan_in) for a Conv2d (no gain; PyTorch's default conv init is U(+-sqrt(1/fan_in)).
    gain sqrt(2) is ReLU's (``nn.init.calculate_gain("relu")``).
    """
    fan_in = layer.weight[0].numel()
    if init == "lop" and isinstance(layer, nn.Conv2d):
        return math.sqrt(1.0 / fan_in)
    return gain * math.sqrt(3.0 / fan_in)


class ContinualBackpropPairs:
    """Continual Backprop's generate-and-test on the units of ``pairs``, for a user's loop::

        cbp = ContinualBackpropPairs(model, replacement_rate=1e-4, maturity_threshold=100)
        for x, y in loader:
            optimizer.zero_grad(); loss_fn(model(x), y).backward(); optimizer.step()
            cbp.step(optimizer)   # reads the activations hooked in this step's forward

    After each update, for each pair and unit i (a channel for a Conv2d producer), with h
    the activation hooked in the last forward with gradients, d = ``decay_rate`` and
    ``|.|``-means over the mini-batch (and a channel's positions)::

        age_i += 1,   c_i = 1 - d^age_i                           (bias correction)
        m_i   = d m_i + (1 - d) mean h_i
        u_i   = d u_i + (1 - d) y_i
        y_i   = out_i mean |h_i|                                  ("contribution")
              or out_i mean |h_i - m_i / c_i| / in_i              ("adaptable_contribution")

    with out_i the mean |outgoing weight| of unit i (a Linear's column ``W[:, i]``; a
    Conv2d's ``W[:, i, :, :]``) and in_i the mean |incoming weight| (row or filter i). For a
    Conv2d feeding a Linear through a flatten, read at the flattened activation, y_i is the
    mean over the channel's P columns j of out_j mean|h_j| (``update_utility`` in
    lop/algos/convGnT.py, ``get_features_to_reinit`` in lop/algos/cbp_conv.py); read where
    a channel has another number of positions (before a pooling), out_i is the mean over
    the channel's whole column block instead.

    Units older than ``maturity_threshold`` are eligible; ``replacement_rate`` times their
    number is added to an accumulator, whose integer part n is taken out, and the n
    eligible units of lowest u_i / c_i (ties: lowest index) are replaced once every pair is
    scored: incoming weights from U(-b, b) (:func:`replacement_bound`, ``init``), bias 0,
    the norm between reset (BatchNorm weight 1, bias 0, running mean 0, variance 1;
    LayerNorm weight 1, bias 0: lop/algos/cbp_conv.py ``reinit_features``), outgoing weights
    0, u_i = m_i = age_i = 0, and the optimizer's per-element state of all those weights
    zeroed (:func:`~plasticollapse.remedies.layer_pairs.reset_optimizer_state`).

    These are the rules of :class:`~plasticollapse.remedies.cbp.ContinualBackprop` (see its
    docstring for where they differ from the authors' code, e.g. the rate times the
    *eligible* units, as in cbp_linear.py and gnt.py; convGnT.py multiplies by all units),
    and fresh weights come from the same seeded :class:`~plasticollapse.remedies.cbp.
    UniformStream` (``seed``), pair by pair, so on the package's plain MLP (``init``
    "kaiming") the replacements are that remedy's exactly. :attr:`replaced` counts the units
    replaced per pair. Call :meth:`remove` (or use ``with``) to take the hooks off.
    """

    def __init__(
        self,
        model: nn.Module,
        pairs: Sequence[LayerPair] | None = None,
        replacement_rate: float = 1e-4,
        decay_rate: float = 0.99,
        maturity_threshold: int = 100,
        util_type: str = "contribution",
        init: str = "kaiming",
        seed: int = 0,
    ):
        from plasticollapse.remedies.cbp import UTILITIES, UniformStream

        if not 0 <= replacement_rate <= 1:
            raise ValueError(f"replacement_rate must be in [0, 1], got {replacement_rate}")
        if not 0 < decay_rate < 1:
            raise ValueError(f"decay_rate must be in (0, 1), got {decay_rate}")
        if maturity_threshold < 0:
            raise ValueError(f"maturity_threshold must be >= 0, got {maturity_threshold}")
        if util_type not in UTILITIES:
            raise ValueError(f"util_type must be one of {UTILITIES}, got {util_type!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.rate, self.decay, self.maturity = replacement_rate, decay_rate, maturity_threshold
        self.util_type = util_type
        self.bound = bind_pairs(model, pairs)
        device = _weighted(self.bound[0].producer).weight.device
        widths = [p.units for p in self.bound]
        self.util = [torch.zeros(w, device=device) for w in widths]
        self.mean = [torch.zeros(w, device=device) for w in widths]
        self.power = [torch.ones(w, dtype=torch.float64, device=device) for w in widths]
        self.age = [torch.zeros(w, dtype=torch.int64, device=device) for w in widths]
        self.accumulated = torch.zeros(len(widths), dtype=torch.float64)
        self.replaced = torch.zeros(len(widths), dtype=torch.int64)
        self.bounds = [
            np.float32(replacement_bound(_weighted(p.producer), init)) for p in self.bound
        ]
        self.stream = UniformStream(seed)
        self.recorder = ActivationRecorder(model, self.bound)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def remove(self) -> None:
        """Take the forward hooks off the model."""
        self.recorder.remove()

    def state_dict(self) -> dict:
        """Everything a resumed run needs (save it beside the model's and optimizer's)."""
        return {
            **{name: [t.clone() for t in getattr(self, name)] for name in TRACKED},
            "accumulated": self.accumulated.clone(),
            "replaced": self.replaced.clone(),
            "consumed": self.stream.consumed,
        }

    def load_state_dict(self, state: dict) -> None:
        from plasticollapse.remedies.cbp import UniformStream

        for name in TRACKED:
            for mine, saved in zip(getattr(self, name), state[name], strict=True):
                mine.copy_(saved)
        self.accumulated.copy_(state["accumulated"])
        self.replaced.copy_(state["replaced"])
        self.stream = UniformStream(self.stream.seed, int(state["consumed"]))

    @torch.no_grad()
    def step(self, optimizer: torch.optim.Optimizer | None = None) -> list[int]:
        """Generate-and-test after ``optimizer.step()``; returns the units replaced per pair."""
        activations = self.recorder.outputs
        if any(h is None for h in activations):
            missing = [
                p.pair.activation for p, h in zip(self.bound, activations, strict=True) if h is None
            ]
            raise RuntimeError(
                f"no activation recorded for {missing}: call step() after a training forward "
                "(with gradients) and optimizer.step()"
            )
        chosen = []
        for l, (pair, h) in enumerate(zip(self.bound, activations, strict=True)):
            correction = self._update_utility(l, pair, h.float())
            chosen.append(self._test(l, correction))
        self.recorder.clear()
        for l, units in enumerate(chosen):
            if len(units):
                self._generate(l, self.bound[l], units, optimizer)
        return [len(units) for units in chosen]

    def _update_utility(self, l: int, pair: BoundPair, h: torch.Tensor) -> torch.Tensor:
        decay = self.decay
        self.age[l] += 1
        self.power[l] *= decay
        correction = (1.0 - self.power[l]).float()
        h3 = pair.unit_view(h)  # N x C x positions
        flat = h3.shape[2] == 1
        h_mean = h3[:, :, 0].mean(0) if flat else h3.mean((0, 2))
        self.mean[l].mul_(decay).add_(h_mean, alpha=1.0 - decay)
        if self.util_type == "adaptable_contribution":
            centred = h3 - (self.mean[l] / correction)[None, :, None]
        else:
            centred = h3
        magnitude = centred[:, :, 0].abs().mean(0) if flat else centred.abs().mean(0)  # C x pos
        weight = _weighted(pair.consumer).weight.abs()
        if pair.positions > 1 and h3.shape[2] == pair.positions:  # per column, then per channel
            out_cols = weight.mean(0).view(pair.units, pair.positions)
            new = (out_cols * magnitude).mean(1)
        else:
            if weight.ndim == 4:
                out_mag = weight.mean((0, 2, 3))
            elif pair.positions > 1:
                out_mag = weight.mean(0).view(pair.units, pair.positions).mean(1)
            else:
                out_mag = weight.mean(0)
            new = out_mag * (magnitude if flat else magnitude.mean(1))
        if self.util_type == "adaptable_contribution":
            w_in = _weighted(pair.producer).weight.abs()
            new = new / (w_in.mean(1) if w_in.ndim == 2 else w_in.flatten(1).mean(1))
        self.util[l].mul_(decay).add_(new, alpha=1.0 - decay)
        return correction

    def _test(self, l: int, correction: torch.Tensor) -> torch.Tensor:
        """The units of pair l to replace now (their utility and mean zeroed); the rule of
        ``ContinualBackprop._test`` (:func:`~plasticollapse.remedies.cbp.units_to_replace`)."""
        from plasticollapse.remedies.cbp import units_to_replace

        return units_to_replace(self, l, correction, self.rate, self.maturity)

    def _generate(self, l: int, pair: BoundPair, units: torch.Tensor, optimizer) -> None:
        layer = _weighted(pair.producer)
        shape = (len(units), *layer.weight.shape[1:])
        fresh = torch.from_numpy(self.stream.take(math.prod(shape)))
        bound = torch.tensor(self.bounds[l])
        fresh = (bound * fresh.view(shape)).to(layer.weight)
        _reset_rows(layer.weight, units, fresh, optimizer)
        if layer.bias is not None:
            _reset_rows(layer.bias, units, 0.0, optimizer)
        _reset_norm(pair.norm, units, optimizer)
        _zero_outgoing(pair, units, optimizer)
        self.age[l][units] = 0
        self.power[l][units] = 1.0
        self.replaced[l] += len(units)


# --------------------------------------------------------------------------- as a remedy


@dataclasses.dataclass
class LayerPairContinualBackprop(Remedy):
    """The ``cbp`` remedy (:class:`~plasticollapse.remedies.cbp.ContinualBackprop`, the same
    parameters and rules) on the layer pairs of any network that
    :func:`~plasticollapse.remedies.layer_pairs.find_layer_pairs` knows: the ResNet-18's
    eight block-inner channel pairs (``conv1 -> bn1 -> relu -> conv2``) as well as the MLP.

    After every optimizer step it runs :meth:`ContinualBackpropPairs.step`, whose forward
    hooks read the step's activations themselves (the ``activations`` argument of
    :meth:`after_step` is not used; :attr:`needs_activations` still says the step's
    activations are what the remedy reads, so a study must offer that event). Replaced
    units' incoming weights come from U(-b, b), b = sqrt(2) sqrt(3 / fan_in)
    (``init="kaiming"``, a conv filter's fan_in being in channels x kernel area), drawn
    from the run's seeded stream; on the package's plain MLP the replacements are those of
    ``ContinualBackprop`` exactly. Rows get ``cbp_units_replaced`` through
    :meth:`pass_summary` (the units replaced since its last call). Its state
    (:meth:`state_dict`) is plain data: tensors and integers.
    """

    name = "cbp"
    needs_activations = True
    cbp_replacement_rate: float
    cbp_decay_rate: float
    cbp_maturity: int
    cbp_utility: str

    @classmethod
    def of(cls, remedy: ContinualBackprop) -> LayerPairContinualBackprop:
        """The layer-pair form of ``remedy`` (its parameters, already validated)."""
        return cls(**{f.name: getattr(remedy, f.name) for f in dataclasses.fields(cls)})

    def bind(self, model: nn.Module, context: RemedyContext) -> None:
        super().bind(model, context)
        self.pairs = ContinualBackpropPairs(
            model,
            find_layer_pairs(model),
            replacement_rate=self.cbp_replacement_rate,
            decay_rate=self.cbp_decay_rate,
            maturity_threshold=self.cbp_maturity,
            util_type=self.cbp_utility,
            init="kaiming",
            seed=context.seed,
        )
        self.reported = 0

    def after_step(self, model, optimizer, step: int, activations=None) -> None:
        self.pairs.step(optimizer)

    def pass_summary(self) -> dict[str, float]:
        total = int(self.pairs.replaced.sum())
        done, self.reported = total - self.reported, total
        return {"cbp_units_replaced": done}

    def state_dict(self) -> dict[str, Any]:
        return {"pairs": self.pairs.state_dict(), "reported": self.reported}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pairs.load_state_dict(state["pairs"])
        self.reported = int(state["reported"])


def on_layer_pairs(remedies: Sequence[Remedy]) -> list[Remedy]:
    """``remedies`` with Continual Backprop in its layer-pair form
    (:class:`LayerPairContinualBackprop`), for a study whose networks are not only the
    plain MLP the ``cbp`` remedy's own step (and the compiled engines) handle; every other
    remedy as it is."""
    return [
        LayerPairContinualBackprop.of(r) if isinstance(r, ContinualBackprop) else r
        for r in remedies
    ]
