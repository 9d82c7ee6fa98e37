"""What the fast engine runs for its remedies, prepared for the compiled pass.

:func:`merge_terms` merges the remedies' :class:`~plasticollapse.remedies.base.StepTerms`
(the decays add up; at most one anchor) and finds Continual Backprop, whose compiled form
is the engine's (:mod:`~plasticollapse.engines.fast_forms`). :class:`RemedyPlan` turns
them, at every pass, into the grouped arguments of
:func:`~plasticollapse.engines.fast_remedy_kernels.train_pass_remedied`: a
:class:`~plasticollapse.engines.fast_forms.DecayPull` with the anchors in the layout of
the pass's weights (theta_0 of W_1 transposed and column-permuted like W_1 itself), a
:class:`~plasticollapse.engines.fast_forms.CbpState` of NumPy views of the remedy's
tensors (the compiled step updates them in place) and a
:class:`~plasticollapse.engines.fast_forms.CbpPass` with its uniform stream, and
placeholders of the same types for what is off, so the kernel compiles once per network
depth (twice with L2 Init, whose deeper anchors are arrays where they are otherwise None).

Remedies acting every k steps (:meth:`~plasticollapse.remedies.base.Remedy.interval`) cut
a pass into segments; :func:`segments` gives their boundaries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from plasticollapse.engines import fast_cbp_kernels as cbp_kernels
from plasticollapse.engines import fast_forms as forms
from plasticollapse.engines import fast_remedy_kernels as kernels
from plasticollapse.remedies.cbp import ContinualBackprop

if TYPE_CHECKING:
    from plasticollapse.remedies.base import Remedy


class MergedTerms(NamedTuple):
    """The per-step work of a run's remedies together: their decays summed, at most one
    pull to an anchor (``pull``, ``anchor``: one tensor per parameter) and at most one
    Continual Backprop (``generate_and_test``, run by :mod:`~plasticollapse.engines.
    fast_cbp_kernels`)."""

    decay: float
    pull: float
    anchor: tuple | None
    generate_and_test: ContinualBackprop | None


def merge_terms(remedies: Sequence[Remedy]) -> MergedTerms | str:
    """The :class:`MergedTerms` of the remedies, or why the fast engine cannot run them.

    A remedy's decay and pull are its :meth:`~plasticollapse.remedies.base.Remedy.
    step_terms`; Continual Backprop's generate-and-test has its compiled form here, in the
    engine (:func:`~plasticollapse.engines.fast_forms.compiled_cbp`). Exact types: a
    subclass may compute something else."""
    decay, pull, anchor, gnt = 0.0, 0.0, None, None
    for remedy in remedies:
        if type(remedy) is ContinualBackprop:
            if gnt is not None:
                return "two generate-and-test remedies; the fast engine runs one"
            gnt = remedy
            continue
        terms = remedy.step_terms()
        if terms is None:
            hooks = ", ".join(remedy.per_step_hooks())
            return (
                f"remedy {remedy.name!r} acts at every step ({hooks}) in a way only the "
                "reference engine runs"
            )
        decay += terms.decay
        if terms.anchor is not None:
            if anchor is not None:
                return "two remedies pull towards anchors; the fast engine runs one"
            anchor, pull = terms.anchor, terms.pull
    return MergedTerms(decay, pull, anchor, gnt)


def segments(n: int, remedies: Sequence[Remedy]) -> list[tuple[int, int, list[Remedy]]]:
    """``(start, stop, due)`` pieces of a pass of ``n`` steps: after step ``stop - 1`` the
    remedies in ``due`` act (their ``interval()`` divides ``stop``); the last piece ends at
    ``n`` with whatever is due there."""
    periodic = [(r, r.interval()) for r in remedies if r.interval() > 0]
    stops = sorted({k * m for _, k in periodic for m in range(1, n // k + 1)} | {n})
    out, start = [], 0
    for stop in stops:
        if stop > start:
            out.append((start, stop, [r for r, k in periodic if stop % k == 0]))
            start = stop
    return out


class RemedyPlan:
    """The compiled per-step work of ``remedies`` for a network of ``linears``."""

    def __init__(self, remedies: Sequence[Remedy], linears: Sequence[Any]):
        merged = merge_terms(remedies)
        if isinstance(merged, str):
            raise ValueError(f"the fast engine does not apply: {merged}")
        self.decay, self.pull, self.anchor, self.cbp = merged
        widths = [lin.out_features for lin in linears[:-1]]
        self._no_cbp = forms.no_cbp(widths)
        self._in_abs1 = np.zeros(max(widths), np.float64)
        self._zeros: tuple | None = None

    @property
    def active(self) -> bool:
        """Whether the pass needs :func:`train_pass_remedied` (else the plain pass)."""
        return bool(self.decay or self.anchor is not None or self.cbp is not None)

    def anchors(self, first, biases, perm, transpose_in):
        """``(a1t, ab1, aws, abs_)``: theta_0 in the pass's layout (W_1 transposed and
        column-permuted like the pass's copy ``first``); without an anchor, zeros for the
        first layer (with pull 0, ``g + 0 (w - 0)`` is ``g`` exactly) and None for the
        deeper layers (the kernel then compiles without them)."""
        if self.anchor is None:
            if self._zeros is None or self._zeros[0].shape != first.shape:
                self._zeros = (np.zeros_like(first), np.zeros_like(biases[0]))
            return self._zeros[0], self._zeros[1], None, None
        arrays = [np.ascontiguousarray(a.detach().cpu().numpy(), np.float32) for a in self.anchor]
        return (
            transpose_in(arrays[0], perm),
            arrays[1],
            tuple(arrays[2::2]),
            tuple(arrays[3::2]),
        )

    def scaled_first_layer(self, first, a1t):
        """The scaled first layer (module docstring of the kernels): ``(rows, fixed)``,
        the deviations from the fixed point of decay and pull, ``w* = pull / (decay +
        pull) * theta_0``, stacked on w* itself (None without an anchor: w* = 0, and the
        deviations are the weights, trained in place)."""
        if self.anchor is None:
            return first, None
        fixed = np.float32(self.pull / (self.decay + self.pull)) * a1t
        return np.ascontiguousarray(np.concatenate([first - fixed, fixed])), fixed

    def run(self, net: forms.Network, inputs: forms.Inputs, targets: forms.Targets, order,
            sgd: forms.Sgd, perm, transpose_in, w1) -> tuple[int, float]:  # fmt: skip
        """One segment of a pass with the remedies' per-step work: ``(correct, loss_sum)``.
        ``net.w1t`` is the pass's copy of W_1 (transposed, column-permuted by ``perm``
        through ``transpose_in``), ``w1`` the parameter's array (out x in)."""
        first = net.w1t
        a1t, ab1, aws, abs_ = self.anchors(first, (net.b1, *net.bs), perm, transpose_in)
        cbp = self.cbp
        scaled = bool(self.decay or self.pull) and cbp is None
        n_in = first.shape[0]
        scales = np.ones(n_in, np.float64)
        if scaled:
            w1t, fixed = self.scaled_first_layer(first, a1t)
            net = net._replace(w1t=w1t)
        terms = forms.DecayPull(
            self.decay, self.pull, a1t, ab1, aws, abs_, scales, self.anchor is not None
        )
        inv = np.arange(n_in) if perm is None else _inverse(perm)
        if cbp is not None:
            state = forms.compiled_cbp(cbp)
            need = cbp.numbers_per_step_at_most()
            if state.adaptable:
                cbp_kernels.row_abs_sums(w1, self._in_abs1)
        else:
            state, need = self._no_cbp, 0
        correct, loss_sum, t = 0, 0.0, 0
        try:
            while t < len(order):
                if cbp is not None:
                    buffer, cursor = cbp.stream.window(need)
                else:
                    buffer, cursor = np.zeros(0, np.float32), 0
                pass_ = forms.CbpPass(inv, perm is not None, self._in_abs1, buffer, need)
                c, loss, t, cursor = kernels.train_pass_remedied(
                    net, inputs, targets, order, t, sgd, terms, state, pass_, cursor
                )
                correct += c
                loss_sum += loss
                if cbp is not None:
                    cbp.stream.advance(cursor)
        finally:
            if scaled:  # W_1 = w* + scale * deviation
                deviation = scales[:, None] * net.w1t[:n_in]
                first[...] = deviation if fixed is None else fixed + deviation
        return correct, loss_sum


def _inverse(perm: np.ndarray) -> np.ndarray:
    inverse = np.empty_like(perm)
    inverse[perm] = np.arange(len(perm))
    return inverse
