"""Continual Backprop (Dohare, Hernandez-Garcia, Lan, Rahman, Mahmood & Sutton, "Loss of
plasticity in deep continual learning", Nature 632, 2024): SGD plus a generate-and-test
that keeps replacing the least useful hidden units by freshly initialised ones."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np

from plasticollapse.remedies.base import Remedy, RemedyContext, require

#: Utility measures (``cbp_utility``), as ``util_type`` in the authors' code.
UTILITIES = ("contribution", "adaptable_contribution")
#: Numbers per chunk of the uniform stream that replaced units' weights are drawn from.
CHUNK = 1 << 16


class UniformStream:
    """The numbers v in [-1, 1) that replaced units' incoming weights are drawn from.

    Chunk c of the stream is ``2 u - 1`` of ``u = torch.rand(CHUNK)`` from
    ``generator_for(seed, "cbp", c)`` (float32; ``2u - 1`` is exact). Consumed in order,
    by whichever engine runs the remedy, so both engines give a replaced unit the same
    weights; a resumed run restarts at :attr:`consumed` (its only state).
    """

    def __init__(self, seed: int, consumed: int = 0):
        self.seed = seed
        self.consumed = consumed
        self._buffer = np.zeros(0, np.float32)
        self._start = 0  # stream position of _buffer[0]

    def _chunk(self, index: int) -> np.ndarray:
        import torch

        from plasticollapse.runs.runtime import generator_for

        u = torch.rand(CHUNK, generator=generator_for(self.seed, "cbp", index))
        return (2.0 * u - 1.0).numpy()

    def window(self, n: int) -> tuple[np.ndarray, int]:
        """``(buffer, cursor)`` with ``buffer[cursor:]`` the next >= ``n`` numbers."""
        end = self._start + len(self._buffer)
        if not (self._start <= self.consumed and self.consumed + n <= end):
            first, last = self.consumed // CHUNK, (self.consumed + n - 1) // CHUNK
            self._buffer = np.concatenate([self._chunk(c) for c in range(first, last + 1)])
            self._start = first * CHUNK
        return self._buffer, self.consumed - self._start

    def advance(self, cursor: int) -> None:
        """The numbers before ``buffer[cursor]`` (of the last :meth:`window`) are used."""
        self.consumed = self._start + int(cursor)

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` numbers (a copy)."""
        buffer, cursor = self.window(n)
        self.advance(cursor + n)
        return buffer[cursor : cursor + n].copy()


@dataclasses.dataclass
class ContinualBackprop(Remedy):
    """Generate-and-test on every hidden unit after every SGD step (``GnT`` in
    lop/algos/gnt.py and ``ContinualBackprop.learn`` in lop/algos/cbp.py of
    github.com/shibhansh/loss-of-plasticity).

    After the update of a step whose forward pass gave hidden activations h (means over
    the mini-batch at batch size > 1), for each hidden layer l and unit i, with
    d = ``cbp_decay_rate``::

        age_i += 1,   c_i = 1 - d^age_i                          (bias correction)
        m_i   = d m_i + (1 - d) h_i                              (running mean of h_i)
        out_i = mean_r |W_{l+1}[r, i]|,   in_i = mean_k |W_l[i, k]|  (updated weights)
        u_i   = d u_i + (1 - d) y_i,  y_i = out_i |h_i|                  ("contribution")
                                     or out_i |h_i - m_i / c_i| / in_i  ("adaptable_contribution")

    A unit older than ``cbp_maturity`` steps is eligible. Each step adds
    ``cbp_replacement_rate * (number eligible)`` to an accumulator (the authors'
    ``accumulate=True``, which their Permuted MNIST runs use); its integer part n is taken
    out, and the n eligible units of lowest bias-corrected utility u_i / c_i are replaced
    once every layer has been scored: incoming weights drawn afresh from U(-b, b) with
    b = sqrt(2) sqrt(3 / fan_in) (Kaiming-uniform, the network's own init), bias 0,
    outgoing weights 0 (the unit starts silent downstream), u_i = m_i = age_i = 0.

    Where this differs from the authors' code, and why:

    - Their ``gen_new_features`` adds to the next layer's bias the replaced unit's mean
      contribution ``W_{l+1}[:, i] m_i / c_i``, but ``test_features`` has already set m_i
      to 0, so that correction adds 0; it is left out here.
    - Ties of utility (e.g. units silent since birth, u_i = 0 exactly) go to the lowest
      index (``torch.topk`` leaves the order unspecified); more units due than eligible
      replaces the eligible ones (``topk`` would raise).
    - Ages are integers and d^age is kept as a float64 running product (their float32 ages
      stop counting at 2^24 steps); fresh weights come from a seeded
      :class:`UniformStream`, not the global RNG, so a run is reproducible and both
      engines replace units with the same weights.
    - The optimizer's state of replaced weights is cleared (momentum buffers); plain SGD
      has none. (Their Adam variant resets its moments the same way.)

    The authors' Permuted MNIST setting (lop/permuted_mnist/cfg/cbp.json, plotted by
    plots/all_metrics.py): ``adaptable_contribution``, decay rate 0.99, maturity threshold
    100, replacement rate 1e-6 (of {1e-4, 1e-5, 1e-6}), with SGD at lr 0.003 on a
    784-2000-2000-2000-10 network. Rows get ``cbp_units_replaced`` (per task).
    Online studies only (the engines pass the activations), on the plain ReLU MLP.
    """

    name = "cbp"
    needs_activations = True
    cbp_replacement_rate: float
    cbp_decay_rate: float
    cbp_maturity: int
    cbp_utility: Literal["contribution", "adaptable_contribution"]

    def __post_init__(self):
        rate, decay = self.cbp_replacement_rate, self.cbp_decay_rate
        require(0 <= rate <= 1, f"cbp_replacement_rate must be in [0, 1], got {rate}")
        require(0 < decay < 1, f"cbp_decay_rate must be in (0, 1), got {decay}")
        require(self.cbp_maturity >= 0, f"cbp_maturity must be >= 0, got {self.cbp_maturity}")
        require(
            self.cbp_utility in UTILITIES,
            f"cbp_utility must be one of {', '.join(UTILITIES)}; got {self.cbp_utility!r}",
        )

    @classmethod
    def check(cls, config: Any) -> None:
        require(
            not (getattr(config, "layer_norm", False) or getattr(config, "crelu", False)),
            "the cbp remedy replaces units of the plain ReLU MLP; turn off layer_norm and crelu",
        )

    # ------------------------------------------------------------------ state

    def bind(self, model, context: RemedyContext) -> None:
        import torch

        from plasticollapse.models import MLP

        super().bind(model, context)
        if not (isinstance(model, MLP) and model.plain):
            raise TypeError("the cbp remedy needs the package's plain ReLU MLP (models.MLP)")
        self.fan_in = [lin.in_features for lin in model.hidden_linears]
        widths = [lin.out_features for lin in model.hidden_linears]
        self.util = [torch.zeros(w) for w in widths]
        self.mean = [torch.zeros(w) for w in widths]
        self.power = [torch.ones(w, dtype=torch.float64) for w in widths]  # d^age
        self.age = [torch.zeros(w, dtype=torch.int64) for w in widths]
        self.accumulated = torch.zeros(len(widths), dtype=torch.float64)
        self.replaced = torch.zeros(len(widths), dtype=torch.int64)
        self.reported = 0
        self.bounds = np.array(
            [math.sqrt(2.0) * math.sqrt(3.0 / f) for f in self.fan_in], np.float32
        )
        self.stream = UniformStream(context.seed)

    def state_dict(self) -> dict[str, Any]:
        return {
            "util": [t.clone() for t in self.util],
            "mean": [t.clone() for t in self.mean],
            "power": [t.clone() for t in self.power],
            "age": [t.clone() for t in self.age],
            "accumulated": self.accumulated.clone(),
            "replaced": self.replaced.clone(),
            "reported": self.reported,
            "consumed": self.stream.consumed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # In place: the fast engine reads these tensors' memory.
        for name in ("util", "mean", "power", "age"):
            for mine, saved in zip(getattr(self, name), state[name], strict=True):
                mine.copy_(saved)
        self.accumulated.copy_(state["accumulated"])
        self.replaced.copy_(state["replaced"])
        self.reported = int(state["reported"])
        self.stream = UniformStream(self.context.seed, int(state["consumed"]))

    # ------------------------------------------------------------------ engines
    # The fast engine's compiled form of this remedy is the engine's own
    # (engines/fast_forms.py: compiled_cbp reads the tensors above; fast_cbp_kernels.py).

    def numbers_per_step_at_most(self) -> int:
        """Uniform numbers one step can consume: at most ``int(rate * H) + 1`` units per
        layer, ``fan_in`` numbers each."""
        return sum(
            (int(self.cbp_replacement_rate * len(u)) + 1) * f
            for u, f in zip(self.util, self.fan_in, strict=True)
        )

    def pass_summary(self) -> dict[str, float]:
        total = int(self.replaced.sum())
        done, self.reported = total - self.reported, total
        return {"cbp_units_replaced": done}

    # ------------------------------------------------------------------ the reference step

    def after_step(self, model, optimizer, step: int, activations=None) -> None:
        """Generate-and-test in PyTorch: the reference the compiled step is checked against."""
        import torch

        if activations is None:
            raise ValueError("the cbp remedy needs the step's hidden activations")
        linears = model.linears
        decay = self.cbp_decay_rate
        chosen = []
        with torch.no_grad():
            for l, h in enumerate(activations):
                h = h.detach().float()
                self.age[l] += 1
                self.power[l] *= decay
                correction = (1.0 - self.power[l]).float()
                self.mean[l].mul_(decay).add_(h.mean(0), alpha=1.0 - decay)
                out_mag = linears[l + 1].weight.abs().mean(0)
                if self.cbp_utility == "adaptable_contribution":
                    in_mag = linears[l].weight.abs().mean(1)
                    spread = (h - self.mean[l] / correction).abs().mean(0)
                    new = out_mag * spread / in_mag
                else:
                    new = out_mag * h.abs().mean(0)
                self.util[l].mul_(decay).add_(new, alpha=1.0 - decay)
                chosen.append(self._test(l, correction))
            for l, units in enumerate(chosen):
                if len(units):
                    self._generate(linears[l], linears[l + 1], l, units, optimizer)

    def _test(self, l: int, correction):
        """The units of layer l to replace now (and their utility and mean zeroed)."""
        return units_to_replace(self, l, correction, self.cbp_replacement_rate, self.cbp_maturity)

    def _generate(self, layer, nxt, l: int, units, optimizer) -> None:
        import torch

        from plasticollapse.remedies.functional import zero_momentum

        fresh = torch.from_numpy(self.stream.take(len(units) * layer.in_features))
        bound = torch.tensor(self.bounds[l])
        fresh = (bound * fresh.view(len(units), layer.in_features)).to(layer.weight.dtype)
        layer.weight[units] = fresh  # float32 draws, also into a float64 network
        layer.bias[units] = 0.0
        if nxt.weight.requires_grad:  # a fixed (etf_head) classifier stays as it is
            nxt.weight[:, units] = 0.0
        self.age[l][units] = 0
        self.power[l][units] = 1.0
        self.replaced[l] += len(units)
        if optimizer is not None:
            zero_momentum(optimizer, layer.weight, (units,))
            zero_momentum(optimizer, layer.bias, (units,))
            zero_momentum(optimizer, nxt.weight, (slice(None), units))


def units_to_replace(state: Any, l: int, correction, rate: float, maturity: int):
    """The test of generate-and-test for layer l (lop's gnt.py ``test_features``): of the
    units older than ``maturity``, replace ``rate`` per eligible unit per step, carried
    over in ``state.accumulated[l]`` until a whole unit is due, those with the lowest
    bias-corrected utility ``util / correction`` (ties in index order); their utility and
    mean are zeroed. ``state`` holds per-layer ``age``, ``util``, ``mean`` and
    ``accumulated`` (a :class:`ContinualBackprop` or the layer-pair version)."""
    import torch

    eligible = (state.age[l] > maturity).nonzero().flatten()
    if len(eligible) == 0:
        return eligible
    state.accumulated[l] += rate * len(eligible)
    count = int(state.accumulated[l])
    state.accumulated[l] -= count
    score = state.util[l][eligible] / correction[eligible]
    units = eligible[torch.argsort(score, stable=True)[: min(count, len(eligible))]]
    state.util[l][units] = 0.0
    state.mean[l][units] = 0.0
    return units
