"""What the fast engine runs for its remedies, prepared for the compiled pass.

:class:`RemedyPlan` merges the remedies' :class:`~plasticollapse.remedies.base.StepTerms`
(the decays add up; at most one anchor and one generate-and-test) and, at every pass,
turns them into the arguments of
:func:`~plasticollapse.engines.fast_remedy_kernels.train_pass_remedied`: the anchors in
the layout of the pass's weights (theta_0 of W_1 transposed and column-permuted like W_1
itself), Continual Backprop's state as NumPy views of the remedy's tensors (the compiled
step updates them in place), its uniform stream, and placeholders of the same types for
what is off, so the kernel compiles once per network depth.

Remedies acting every k steps (:meth:`~plasticollapse.remedies.base.Remedy.interval`) cut
a pass into segments; :func:`segments` gives their boundaries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from plasticollapse.engines import fast_cbp_kernels as cbp_kernels
from plasticollapse.engines import fast_remedy_kernels as kernels

if TYPE_CHECKING:
    from plasticollapse.remedies.base import Remedy


def merge_terms(remedies: Sequence[Remedy]) -> tuple[float, float, tuple | None, Any] | str:
    """``(decay, pull, anchor, generate_and_test)`` of the remedies together, or why the
    fast engine cannot run them."""
    decay, pull, anchor, gnt = 0.0, 0.0, None, None
    for remedy in remedies:
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
        if terms.generate_and_test is not None:
            if gnt is not None:
                return "two generate-and-test remedies; the fast engine runs one"
            gnt = terms.generate_and_test
    return decay, pull, anchor, gnt


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
        self.n_hidden = len(linears) - 1
        widths = [lin.out_features for lin in linears[:-1]]
        width = max(widths)
        # Placeholders for the state of a generate-and-test that is off.
        self._no_cbp = (
            tuple(np.zeros(w, np.float32) for w in widths),
            tuple(np.zeros(w, np.float32) for w in widths),
            tuple(np.ones(w, np.float64) for w in widths),
            tuple(np.zeros(w, np.int64) for w in widths),
        )
        self._in_abs1 = np.zeros(width, np.float64)
        self._zeros: tuple | None = None

    @property
    def active(self) -> bool:
        """Whether the pass needs :func:`train_pass_remedied` (else the plain pass)."""
        return bool(self.decay or self.anchor is not None or self.cbp is not None)

    def anchors(self, first, weights, biases, perm, transpose_in):
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

    def run(
        self, first, b1, ws, bs, rows, y, order, lr, head_lr, head_frozen, perm, transpose_in,
        weights,
    ):  # fmt: skip
        """One segment of a pass with the remedies' per-step work: ``(correct, loss_sum)``.
        ``head_lr``: the classifier's learning rate (0 when ``head_frozen``)."""
        a1t, ab1, aws, abs_ = self.anchors(first, weights, (b1, *bs), perm, transpose_in)
        cbp = self.cbp
        scaled = bool(self.decay or self.pull) and cbp is None
        n_in = first.shape[0]
        scales = np.ones(n_in, np.float64)
        w1 = first
        if scaled:
            w1, fixed = self.scaled_first_layer(first, a1t)
        inv = np.arange(n_in) if perm is None else _inverse(perm)
        if cbp is not None:
            state = cbp.compiled_state()
            utils, means, powers, ages = (
                state["utils"],
                state["means"],
                state["powers"],
                state["ages"],
            )
            accs, replaced, bounds = state["accs"], state["replaced"], state["bounds"]
            util_code, decay, rate, maturity = (
                state["util_code"], state["decay"], state["rate"], state["maturity"]
            )  # fmt: skip
            need = cbp.numbers_per_step_at_most()
            if util_code == cbp_kernels.ADAPTABLE_CONTRIBUTION:
                cbp_kernels.row_abs_sums(weights[0], self._in_abs1)
        else:
            utils, means, powers, ages = self._no_cbp
            accs = np.zeros(self.n_hidden, np.float64)
            replaced = np.zeros(self.n_hidden, np.int64)
            bounds = np.zeros(self.n_hidden, np.float32)
            util_code, decay, rate, maturity, need = 0, 0.0, 0.0, 0, 0
        correct, loss_sum, t = 0, 0.0, 0
        try:
            while t < len(order):
                if cbp is not None:
                    buffer, cursor = cbp.stream.window(need)
                else:
                    buffer, cursor = np.zeros(0, np.float32), 0
                c, loss, t, cursor = kernels.train_pass_remedied(
                    w1, b1, ws, bs, rows.sparse, rows.indptr, rows.indices, rows.values,
                    rows.xd, y, order, t, lr, head_lr, head_frozen,
                    self.decay, self.pull, a1t, ab1, aws, abs_, scales, self.anchor is not None,
                    cbp is not None, util_code, decay, rate, maturity, utils, means, powers,
                    ages, accs, replaced, bounds, inv, perm is not None, buffer, cursor, need,
                    self._in_abs1,
                )  # fmt: skip
                correct += c
                loss_sum += loss
                if cbp is not None:
                    cbp.stream.advance(cursor)
        finally:
            if scaled:  # W_1 = w* + scale * deviation
                deviation = scales[:, None] * w1[:n_in]
                first[...] = deviation if fixed is None else fixed + deviation
        return correct, loss_sum


def _inverse(perm: np.ndarray) -> np.ndarray:
    inverse = np.empty_like(perm)
    inverse[perm] = np.arange(len(perm))
    return inverse
