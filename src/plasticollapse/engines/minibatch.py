"""The mini-batch engine: the compiled SGD step for ReLU MLPs at batch sizes > 1 on the CPU.

The reference engine (autograd + ``torch.optim.SGD``) at the online studies' small batches
(random labels: 16; class-incremental: 90, with a head masked to the classes seen so far)
spends most of its time in per-step overhead, not arithmetic. This engine runs the whole
prequential pass inside one Numba-compiled function,
:func:`~plasticollapse.engines.minibatch_kernels.train_batches` (its formulas, layout and
numerics are in that module's docstring), beside the batch-1 engine
(:mod:`plasticollapse.engines.fast`), whose preparation it shares: the inputs' CSR rows,
the parameters as NumPy views of their memory, W_1 transposed and column-permuted.

What it runs (:func:`minibatch_supports` says why it cannot):

- a ReLU MLP that the batch-1 engine accepts, its classifier an ``nn.Linear`` or a
  :class:`~plasticollapse.models.MaskedLinear` (class-incremental streams:
  the absent classes' logits excluded exactly as ``masked_fill(finfo.min)`` excludes them);
- plain SGD, the mean cross-entropy of each mini-batch, scored before its update (the
  last partial batch is its own, smaller, mean, as the reference's slicing gives);
- the remedies' per-step terms weight decay and L2 Init's pull to theta_0 (a fixed ETF
  head: the classifier not trained), those acting every k steps between segments of the
  pass (Shrink & Perturb / ReDo with ``*_every``: k counts mini-batches, as in the
  reference), and those acting at task boundaries (they change the model between passes).

- Continual Backprop after every mini-batch's update, on the batch's activations, as the
  reference's ``after_step`` (:mod:`plasticollapse.engines.minibatch_cbp_kernels`), its
  fresh weights drawn from the remedy's uniform stream, so both engines draw the same.

Not run: the NC1 regulariser, layer norm, CReLU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from plasticollapse.engines import fast, fast_plan, minibatch_kernels
from plasticollapse.engines.fast_forms import (
    CbpPass,
    CbpState,
    DecayPull,
    Network,
    Sgd,
    compiled_cbp,
    inputs_of,
    no_cbp,
)
from plasticollapse.engines.stats import OnlineStats, add_counts, recent_samples
from plasticollapse.metrics.threads import one_thread

if TYPE_CHECKING:
    from plasticollapse.remedies.base import Remedy

__all__ = [
    "MAX_BATCH",
    "MiniBatchEngine",
    "minibatch_supports",
    "remedies_supported",
    "routes_here",
]

#: The largest mini-batch the engine takes (its work arrays are batch x input size).
MAX_BATCH = 4096


def _masked_head(model: nn.Module):
    """The classifier if it is a ``MaskedLinear`` (else None)."""
    from plasticollapse.models import MaskedLinear

    head = getattr(model, "classifier", None)
    return head if type(head) is MaskedLinear else None


def present_classes(model: nn.Module, used: np.ndarray, n_cls: int) -> np.ndarray:
    """The classes the head scores, as a boolean mask over the ``n_cls`` outputs: all of
    them, or a masked head's present ones, which must hold every label ``used``."""
    head = _masked_head(model)
    if head is None:
        return np.ones(n_cls, np.bool_)
    present = np.ascontiguousarray(head.present.detach().cpu().numpy(), np.bool_)
    if not present[used].all():
        raise ValueError("a label of the pass is not among the masked head's classes")
    return present


def minibatch_supports(
    model: nn.Module, batch_size: int, remedies: Sequence[Remedy] = ()
) -> str | None:
    """``None`` if :class:`MiniBatchEngine` runs this model, batch size and remedies as the
    reference engine does; otherwise why not (one short sentence)."""
    if not 1 <= batch_size <= MAX_BATCH:
        return f"batch size {batch_size} is outside 1..{MAX_BATCH}"
    reason = fast.unsupported_reason(model, 1)
    if reason is not None:
        return reason
    head = getattr(model, "classifier", None)
    if head is not None and type(head) is not nn.Linear and _masked_head(model) is None:
        return f"its classifier is a {type(head).__name__} (the engine runs Linear or MaskedLinear)"
    return remedies_supported(remedies, batch_size)


def routes_here(model: nn.Module, batch_size: int) -> bool:
    """Whether ``fast`` means this engine (batch size > 1, or a masked head, which the
    batch-1 engine does not compute) rather than the batch-1 one."""
    return batch_size > 1 or _masked_head(model) is not None


def remedies_supported(remedies: Sequence[Remedy], batch_size: int) -> str | None:
    """Why the compiled engines cannot run these remedies (None: they can): a remedy
    without a compiled per-step form, or two that the merged step cannot hold (two
    anchors, two generate-and-tests). Continual Backprop runs in both, at any batch size.
    ``batch_size`` is kept for the callers' one signature."""
    merged = fast_plan.merge_terms(remedies)
    return merged if isinstance(merged, str) else None


class MiniBatchEngine:
    """Prequential mini-batch SGD through one compiled, fused step per batch.

    Same contract as :class:`~plasticollapse.engines.reference.ReferenceEngine`: each
    mini-batch ``order[t:t + batch_size]`` is scored (argmax of its logits, its mean
    cross-entropy) *before* the SGD update it causes; the model is updated in place.

    Args:
        model: a ReLU MLP that :func:`minibatch_supports` accepts (a masked head's present
            classes are read at every :meth:`train`, so ``set_classes`` between passes is
            seen).
        lr: the SGD learning rate (no momentum: the presets' optimiser).
        batch_size: samples per step.
        remedies: weight decay, L2 Init, a fixed head, Continual Backprop, interval and
            boundary remedies.
    """

    name = "fast"
    permutes_inputs = True

    def __init__(
        self,
        model: nn.Module,
        lr: float,
        batch_size: int,
        remedies: Sequence[Remedy] = (),
        *,
        dense_threshold: float = fast.DENSE_THRESHOLD,
    ):
        reason = minibatch_supports(model, batch_size, remedies)
        if reason is not None:
            raise ValueError(f"the mini-batch engine does not apply: {reason}")
        self.model = model
        self.lr = float(lr)
        self.batch_size = int(batch_size)
        self.remedies = list(remedies)
        terms = fast_plan.merge_terms(self.remedies)
        assert not isinstance(terms, str), terms  # minibatch_supports said why not above
        self.decay, self.pull, self.anchor, self.cbp = terms
        self.dense_threshold = float(dense_threshold)
        self._rows_key: tuple | None = None
        self._rows: Any = None
        self._x: torch.Tensor | None = None

    def _rows_of(self, x: torch.Tensor, n_in: int):
        key = fast._cache_key(x)
        if self._rows is None or self._rows_key != key:
            self._rows = self._x = None
            self._rows = fast.shared_rows(x, n_in, self.dense_threshold)
            self._rows_key, self._x = key, x
        return self._rows

    def train(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        order: torch.Tensor,
        columns: torch.Tensor | None = None,
    ) -> OnlineStats:
        """One pass over ``x[order]`` (``columns`` = P: over ``x[order][:, P]``, run as the
        batch-1 engine does, on W_1's columns permuted by P^-1); returns online accuracy
        and mean loss, the remedies' counts in ``extra``."""
        reason = minibatch_supports(self.model, self.batch_size, self.remedies)
        if reason is not None:
            raise ValueError(f"the mini-batch engine does not apply: {reason}")
        self.model.train()
        linears = fast._model_linears(self.model)
        assert not isinstance(linears, str)
        n_in, n_cls = linears[0].in_features, linears[-1].out_features
        checked = fast.pass_arrays(x, y, order, n_cls)
        if checked is None:
            return OnlineStats(correct=0, count=0, loss_sum=0.0)
        order_np, y_np, used = checked
        present = present_classes(self.model, used, n_cls)
        perm = None if columns is None else fast._permutation(columns, n_in)
        rows = self._rows_of(x, n_in)
        head_frozen = not linears[-1].weight.requires_grad  # the fixed ETF head
        params = [p for lin in linears for p in (lin.weight, lin.bias)]
        steps = -(-len(order_np) // self.batch_size)
        correct, loss_sum = 0, 0.0
        extra: dict[str, float] = {}
        for start, stop, due in fast_plan.segments(steps, self.remedies):
            lo, hi = start * self.batch_size, min(stop * self.batch_size, len(order_np))
            c, loss = self._segment(params, perm, rows, y_np, order_np[lo:hi], present, head_frozen)
            correct += c
            loss_sum += loss
            if due:  # the model is current between segments
                inputs = None
                if any(r.reads_interval_inputs for r in due):
                    span = max(r.interval() for r in due)
                    recent = recent_samples(order_np, hi, span, self.batch_size)
                    inputs = x[torch.from_numpy(recent)].reshape(len(recent), -1)
                    if perm is not None:
                        inputs = inputs.index_select(1, torch.from_numpy(perm))
                add_counts(extra, (r.at_interval(self.model, None, inputs) for r in due))
        add_counts(extra, (r.pass_summary() for r in self.remedies))
        return OnlineStats(
            correct=int(correct), count=len(order_np), loss_sum=float(loss_sum), extra=extra
        )

    def _anchors(self, first, weights, biases, perm):
        """theta_0 in the pass's layout (W_1's transposed and permuted like ``first``), or
        zeros (with pull 0, ``g + 0 (w - 0)`` is ``g`` exactly)."""
        if self.anchor is None:
            return (
                np.zeros_like(first),
                np.zeros_like(biases[0]),
                tuple(np.zeros_like(w) for w in weights[1:]),
                tuple(np.zeros_like(b) for b in biases[1:]),
            )
        arrays = [np.ascontiguousarray(a.detach().cpu().numpy(), np.float32) for a in self.anchor]
        return (
            fast.FastEngine._first_layer_in(arrays[0], perm),
            arrays[1],
            tuple(arrays[2::2]),
            tuple(arrays[3::2]),
        )

    def _cbp_state(self, widths: list[int]) -> CbpState:
        """Continual Backprop's compiled form (the remedy's state as NumPy views, updated in
        place), or a placeholder of the same types when it is off (so that the kernel
        compiles once per depth); ``widths``: the hidden layers'."""
        return no_cbp(widths) if self.cbp is None else compiled_cbp(self.cbp)

    def _segment(
        self, params, perm, rows, y_np, order_np, present, head_frozen
    ) -> tuple[int, float]:
        head_lr = 0.0 if head_frozen else self.lr
        arrays = [fast._param_array(p) for p in params]
        weights = [a for a, _ in arrays[0::2]]
        biases = [a for a, _ in arrays[1::2]]
        first = fast.FastEngine._first_layer_in(weights[0], perm)
        a1t, ab1, aws, abs_ = self._anchors(first, weights, biases, perm)
        inv = np.arange(len(first)) if perm is None else fast.inverse_permutation(perm)
        cbp = self._cbp_state([len(b) for b in biases[:-1]])
        net = Network(first, biases[0], tuple(weights[1:]), tuple(biases[1:]))
        inputs = inputs_of(rows)
        sgd = Sgd(float(self.lr), float(head_lr), bool(head_frozen))
        no_scales = np.zeros(0, np.float64)  # the batch-1 engine's scaled first layer only
        dp = DecayPull(float(self.decay), float(self.pull), a1t, ab1, aws, abs_, no_scales, False)
        no_row_sums = np.zeros(0, np.float64)  # CbpPass.in_abs1: the batch-1 engine's only
        need = 0 if self.cbp is None else self.cbp.numbers_per_step_at_most()
        correct, loss_sum, t = 0, 0.0, 0
        try:
            # One BLAS thread: at these shapes (<= 4096 x 784 x 100) SciPy's OpenBLAS gains
            # nothing from more, and its spinning workers cost (metrics/threads.py).
            with one_thread():
                while t < len(order_np):
                    if self.cbp is not None:
                        buffer, cursor = self.cbp.stream.window(need)
                    else:
                        buffer, cursor = np.zeros(0, np.float32), 0
                    cbp_pass = CbpPass(inv, perm is not None, no_row_sums, buffer, need)
                    c, loss, t, cursor = minibatch_kernels.train_batches(
                        net, inputs, y_np, order_np, t, self.batch_size, present, sgd, dp,
                        cbp, cbp_pass, cursor,
                    )  # fmt: skip
                    correct += c
                    loss_sum += loss
                    if self.cbp is not None:
                        self.cbp.stream.advance(cursor)
            return correct, loss_sum
        finally:
            with torch.no_grad():
                fast.FastEngine._first_layer_out(first, weights[0], perm)
                fast.write_back(params, arrays)
