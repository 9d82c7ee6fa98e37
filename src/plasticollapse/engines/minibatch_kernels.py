"""The mini-batch engine's compiled kernels: one fused SGD step per mini-batch of a ReLU MLP.

:func:`train_batches` runs a prequential pass (score, loss, SGD update of every mini-batch
in turn) inside one Numba-compiled function;
:class:`~plasticollapse.engines.minibatch.MiniBatchEngine` prepares its arrays. It is the
reference engine's step (:mod:`plasticollapse.engines.reference`: ``F.cross_entropy`` with
its default mean over the batch, ``backward``, ``torch.optim.SGD.step``) written out.

The step
--------
For a mini-batch of B samples ``x_i`` with labels ``y_i``, weights ``W_l`` (out x in),
biases ``b_l``, ``l = 1..L``, learning rate ``eta``, and the set S of present classes
(all classes, or those of a masked head; :class:`~plasticollapse.studies.streams.model.
MaskedLinear`)::

    a_{i,0} = x_i,   z_{i,l} = W_l a_{i,l-1} + b_l,   a_{i,l} = relu(z_{i,l})   (l < L)
    z_{i,L}[c] = (W_L a_{i,L-1} + b_L)[c] for c in S, else the most negative float32
    m_i = max_c z_{i,L}[c],  lse_i = log sum_c exp(z_{i,L}[c] - m_i)
    log p_i = (z_{i,L} - m_i) - lse_i,   loss = (1/B) sum_i -log p_i[y_i]

The masked logits are what ``MaskedLinear.forward`` returns (``masked_fill`` with
``finfo.min``), so prediction (first maximum, NaN wins, as ``torch.argmax``), loss and
gradient are those of the reference; an absent class's probability is exactly 0 and its
row of W_L gets a zero gradient. Backward (``delta_{i,l}`` = dloss/dz_{i,l}), as
``log_softmax``/``nll_loss`` backward compute it with ``s = -1/B`` (mean reduction)::

    delta_{i,L}[c] = s 1[c = y_i] - p_i[c] s
    delta_{i,l-1}  = (W_l^T delta_{i,l}) * 1[z_{i,l-1} > 0]         (pre-update W_l)
    G_l = sum_i delta_{i,l} a_{i,l-1}^T,    g_l = sum_i delta_{i,l}   (batch order i = 0..B-1)

and ``torch.optim.SGD`` (lr eta, ``weight_decay`` lambda; a pull ``mu (theta - A)`` from
L2 Init's loss term ``mu/2 ||theta - A||^2`` added to the gradient by autograd)::

    theta <- theta - eta * ((G + mu (theta - A)) + lambda theta)

(``torch/optim/sgd.py``, ``_single_tensor_sgd``: ``d_p = d_p.add(param, alpha=weight_decay)``
then ``param.add_(d_p, alpha=-lr)``). A frozen classifier (the fixed ETF head) is not
updated at all, as SGD skips a parameter without a gradient.

Layout and cost
---------------
W_1 is stored transposed (in x out), as in the batch-1 engine
(:mod:`plasticollapse.engines.fast_kernels`): a nonzero input ``x_{i,k}`` adds the
contiguous row ``W_1^T[k]`` to ``z_{i,1}``, so the forward costs only the nonzeros (MNIST
~19%, Fashion-MNIST ~50%). For the update the batch's nonzeros are regrouped by input column
(:func:`batch_columns`, a CSC of the batch): row k of G_1 is summed from column k's
entries in one contiguous buffer and row k of W_1^T rewritten at once, so each row is read
and written once per step; plain SGD skips the rows no sample reads (zero gradient), decay
or pull rewrites every row. The deeper layers form ``W_l^T delta_i`` per sample over its
active units, then G_l row by row (row j: ``sum_i delta_{i,l}[j] a_{i,l-1}`` over the
samples where unit j is active; an inactive unit's ``delta`` is exactly 0) and rewrite
row j at once.

Speed (benchmarks/minibatch_speed.py, one thread, Fashion-MNIST, loaded 2-core machine):
~70,000 samples/s on random labels' 784-100-100-10 at batch 16 (6x autograd), ~55,000 on
class-incremental's 784-100-100-100-10 at batch 90 (2x: at that batch autograd's time is
mostly its GEMMs, not per-step overhead). Tried: filing each nonzero under its column
during the forward instead of a separate CSC pass: faster at batch 90 (~5%), slower at 16
(~20%); dropped.

Numerics: float32 throughout, like the model; the products and sums are those of the
formulas, in the order stated; only the forward dot products of the deeper layers are
reassociated (``DOT_MATH``) so that they vectorise. The result differs from autograd's
BLAS by float32 rounding (tests/test_minibatch_engine.py: one step against float64, and
teacher-forced shadowing, tests/shadow.py).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from plasticollapse.engines.fast_kernels import DOT_MATH, STEP_MATH
from plasticollapse.engines.minibatch_cbp_kernels import batch_cbp_step, cbp_scratch

#: The most negative float32: ``torch.finfo(torch.float32).min``, the masked logits' value.
MASKED = np.float32(np.finfo(np.float32).min)


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def _decayed(w, g, a, nlr, decay, pull):
    """``w + nlr * ((g + pull (w - a)) + decay w)``: SGD's order (gradients summed, then the
    decay added); with decay = pull = 0 it is ``w + nlr * g`` exactly."""
    return w + nlr * ((g + pull * (w - a)) + decay * w)


@njit(cache=True, nogil=True)
def batch_columns(sparse, indptr, indices, values, xd, order, lo, hi, colptr, crow, cval):
    """The nonzero inputs of samples ``order[lo:hi]`` by input column (CSC of the batch):
    column k's entries ``colptr[k]:colptr[k + 1]`` of ``crow`` (the sample's place i in the
    batch, ascending) and ``cval`` (x_{i,k})."""
    zero = np.float32(0.0)
    n_in = colptr.shape[0] - 1
    for k in range(n_in + 1):
        colptr[k] = 0
    for i in range(hi - lo):  # count each column's entries (shifted by one)
        s = order[lo + i]
        if sparse:
            for p in range(indptr[s], indptr[s + 1]):
                colptr[indices[p] + 1] += 1
        else:
            for k in range(n_in):
                if xd[s, k] != zero:
                    colptr[k + 1] += 1
    for k in range(n_in):
        colptr[k + 1] += colptr[k]
    for i in range(hi - lo):  # fill; colptr[k] runs ahead to column k's end ...
        s = order[lo + i]
        if sparse:
            for p in range(indptr[s], indptr[s + 1]):
                k = indices[p]
                crow[colptr[k]] = i
                cval[colptr[k]] = values[p]
                colptr[k] += 1
        else:
            for k in range(n_in):
                v = xd[s, k]
                if v != zero:
                    crow[colptr[k]] = i
                    cval[colptr[k]] = v
                    colptr[k] += 1
    for k in range(n_in, 0, -1):  # ... and is shifted back to its start
        colptr[k] = colptr[k - 1]
    colptr[0] = 0


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def first_forward(w1t, b1, acts, sparse, indptr, indices, values, xd, order, lo, nb):
    """``acts[0, i] = relu(W_1 x_i + b_1)`` for sample ``order[lo + i]``, over its nonzeros
    (four per sweep over the output units, summed in input order)."""
    zero = np.float32(0.0)
    h1 = b1.shape[0]
    for i in range(nb):
        s = order[lo + i]
        for j in range(h1):
            acts[0, i, j] = zero
        if sparse:
            p, hi = indptr[s], indptr[s + 1]
            while p + 4 <= hi:
                k0, k1, k2, k3 = indices[p], indices[p + 1], indices[p + 2], indices[p + 3]
                v0, v1, v2, v3 = values[p], values[p + 1], values[p + 2], values[p + 3]
                for j in range(h1):
                    acts[0, i, j] = (
                        ((acts[0, i, j] + w1t[k0, j] * v0) + w1t[k1, j] * v1) + w1t[k2, j] * v2
                    ) + w1t[k3, j] * v3
                p += 4
            while p < hi:
                k, v = indices[p], values[p]
                for j in range(h1):
                    acts[0, i, j] += w1t[k, j] * v
                p += 1
        else:
            for k in range(xd.shape[1]):
                v = xd[s, k]
                if v != zero:
                    for j in range(h1):
                        acts[0, i, j] += w1t[k, j] * v
        for j in range(h1):
            z = acts[0, i, j] + b1[j]
            acts[0, i, j] = zero if z < zero else z  # relu; NaN passes, as in torch


@njit(cache=True, nogil=True, fastmath=DOT_MATH)
def _dots4(w, j, acts, l, i, n):
    """Rows j..j+3 of ``w`` dotted with ``acts[l, i, :n]`` (reassociated: float32 rounding)."""
    s0 = s1 = s2 = s3 = np.float32(0.0)
    for k in range(n):
        a = acts[l, i, k]
        s0 += w[j, k] * a
        s1 += w[j + 1, k] * a
        s2 += w[j + 2, k] * a
        s3 += w[j + 3, k] * a
    return s0, s1, s2, s3


@njit(cache=True, nogil=True, fastmath=DOT_MATH)
def _dots4x2(w, j, acts, l, i, n):
    """Rows j..j+3 of ``w`` dotted with ``acts[l, i]`` and ``acts[l, i + 1]``: each weight
    loaded once for two samples (reassociated sums, as :func:`_dots4`)."""
    s0 = s1 = s2 = s3 = t0 = t1 = t2 = t3 = np.float32(0.0)
    for k in range(n):
        a = acts[l, i, k]
        c = acts[l, i + 1, k]
        w0, w1, w2, w3 = w[j, k], w[j + 1, k], w[j + 2, k], w[j + 3, k]
        s0 += w0 * a
        s1 += w1 * a
        s2 += w2 * a
        s3 += w3 * a
        t0 += w0 * c
        t1 += w1 * c
        t2 += w2 * c
        t3 += w3 * c
    return s0, s1, s2, s3, t0, t1, t2, t3


@njit(cache=True, nogil=True, fastmath=DOT_MATH)
def _dot(w, j, acts, l, i, n):
    s = np.float32(0.0)
    for k in range(n):
        s += w[j, k] * acts[l, i, k]
    return s


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def deeper_forward(ws, bs, acts, nb):
    """``acts[l + 1, i] = W acts[l, i] + b`` for the deeper layers (relu but on the logits)."""
    zero = np.float32(0.0)
    n_dense = len(ws)
    for l in range(n_dense):
        w, b = ws[l], bs[l]
        n_out, n_in = w.shape
        i = 0
        while i + 2 <= nb:  # two samples, four rows at a time
            j = 0
            while j + 4 <= n_out:
                z0, z1, z2, z3, u0, u1, u2, u3 = _dots4x2(w, j, acts, l, i, n_in)
                acts[l + 1, i, j] = z0 + b[j]
                acts[l + 1, i, j + 1] = z1 + b[j + 1]
                acts[l + 1, i, j + 2] = z2 + b[j + 2]
                acts[l + 1, i, j + 3] = z3 + b[j + 3]
                acts[l + 1, i + 1, j] = u0 + b[j]
                acts[l + 1, i + 1, j + 1] = u1 + b[j + 1]
                acts[l + 1, i + 1, j + 2] = u2 + b[j + 2]
                acts[l + 1, i + 1, j + 3] = u3 + b[j + 3]
                j += 4
            while j < n_out:
                acts[l + 1, i, j] = _dot(w, j, acts, l, i, n_in) + b[j]
                acts[l + 1, i + 1, j] = _dot(w, j, acts, l, i + 1, n_in) + b[j]
                j += 1
            i += 2
        while i < nb:
            j = 0
            while j + 4 <= n_out:
                z0, z1, z2, z3 = _dots4(w, j, acts, l, i, n_in)
                acts[l + 1, i, j] = z0 + b[j]
                acts[l + 1, i, j + 1] = z1 + b[j + 1]
                acts[l + 1, i, j + 2] = z2 + b[j + 2]
                acts[l + 1, i, j + 3] = z3 + b[j + 3]
                j += 4
            while j < n_out:
                acts[l + 1, i, j] = _dot(w, j, acts, l, i, n_in) + b[j]
                j += 1
            i += 1
        if l < n_dense - 1:
            for i in range(nb):
                for j in range(n_out):
                    if acts[l + 1, i, j] < zero:  # relu; NaN passes, as in torch
                        acts[l + 1, i, j] = zero


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def score_batch(acts, row, n_cls, present, y, order, lo, nb, delta):
    """Mask, score and output delta of the batch (module docstring): returns ``(correct,
    loss)`` with ``loss`` the batch's mean cross-entropy in float32, as ``F.cross_entropy``;
    ``delta[i, :n_cls]`` = dloss/dz_{i,L}."""
    s = np.float32(-1.0) / np.float32(nb)
    correct = 0
    total = np.float32(0.0)
    for i in range(nb):
        for c in range(n_cls):
            if not present[c]:
                acts[row, i, c] = MASKED  # as MaskedLinear's masked_fill
        m = acts[row, i, 0]
        pred = 0
        for c in range(1, n_cls):
            v = acts[row, i, c]
            # torch.argmax: the first maximum; NaN beats everything, the first NaN wins.
            if (v > m or v != v) and m == m:  # noqa: PLR0124 (NaN tests)
                m = v
                pred = c
        ssum = np.float32(0.0)
        for c in range(n_cls):
            ssum += math.exp(acts[row, i, c] - m)
        lse = np.float32(math.log(ssum))
        yi = y[order[lo + i]]
        correct += 1 if pred == yi else 0
        total += -((acts[row, i, yi] - m) - lse)
        for c in range(n_cls):
            p = np.float32(math.exp((acts[row, i, c] - m) - lse))
            delta[i, c] = -(p * s)
        delta[i, yi] = s - np.float32(math.exp((acts[row, i, yi] - m) - lse)) * s
    return correct, total / np.float32(nb)


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def deeper_backward(
    ws, bs, aws, abs_, acts, delta, dprev, g, active, nb, nlr, nlr_head, decay, pull
):  # pragma: no cover - compiled
    """Top down through the deeper layers: first ``dprev_i = W_l^T delta_i`` with the
    pre-update W_l (sample i's active units, four rows per sweep, in row order), then row
    j's gradient ``sum_i delta_i[j] a_i`` (the samples where unit j is active, four per
    sweep, in batch order) and row j rewritten by the SGD update (``nlr`` = -eta; the
    classifier's ``nlr_head``, 0: frozen, not updated). Inactive units' deltas are exact
    zeros and are skipped. Leaves delta_1 in ``delta``."""
    zero = np.float32(0.0)
    dense = decay != zero or pull != zero
    for l in range(len(ws) - 1, -1, -1):
        w, b, aw, ab = ws[l], bs[l], aws[l], abs_[l]
        nlr_l = nlr_head if l == len(ws) - 1 else nlr
        n_out, n_in = w.shape
        for i in range(nb):
            for k in range(n_in):
                dprev[i, k] = zero
            n_act = 0
            for j in range(n_out):
                if delta[i, j] != zero:
                    active[n_act] = j
                    n_act += 1
            q = 0
            while q + 4 <= n_act:
                j0, j1, j2, j3 = active[q], active[q + 1], active[q + 2], active[q + 3]
                d0, d1, d2, d3 = delta[i, j0], delta[i, j1], delta[i, j2], delta[i, j3]
                for k in range(n_in):
                    dprev[i, k] = (
                        ((dprev[i, k] + w[j0, k] * d0) + w[j1, k] * d1) + w[j2, k] * d2
                    ) + w[j3, k] * d3
                q += 4
            while q < n_act:
                j = active[q]
                d = delta[i, j]
                for k in range(n_in):
                    dprev[i, k] += w[j, k] * d
                q += 1
        if nlr_l != zero:
            for j in range(n_out):
                n_act = 0
                gb = zero
                for i in range(nb):
                    if delta[i, j] != zero:
                        active[n_act] = i
                        n_act += 1
                        gb += delta[i, j]
                if n_act == 0 and not dense:
                    continue
                for k in range(n_in):
                    g[k] = zero
                q = 0
                while q + 4 <= n_act:
                    i0, i1, i2, i3 = active[q], active[q + 1], active[q + 2], active[q + 3]
                    d0, d1, d2, d3 = delta[i0, j], delta[i1, j], delta[i2, j], delta[i3, j]
                    for k in range(n_in):
                        g[k] = (
                            ((g[k] + d0 * acts[l, i0, k]) + d1 * acts[l, i1, k])
                            + d2 * acts[l, i2, k]
                        ) + d3 * acts[l, i3, k]
                    q += 4
                while q < n_act:
                    i = active[q]
                    d = delta[i, j]
                    for k in range(n_in):
                        g[k] += d * acts[l, i, k]
                    q += 1
                b[j] = _decayed(b[j], gb, ab[j], nlr_l, decay, pull)
                for k in range(n_in):
                    w[j, k] = _decayed(w[j, k], g[k], aw[j, k], nlr_l, decay, pull)
        for i in range(nb):
            for k in range(n_in):
                delta[i, k] = dprev[i, k] if acts[l, i, k] > zero else zero


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def first_backward(w1t, b1, a1t, ab1, delta, colptr, crow, cval, nb, g, nlr, decay, pull):
    """W_1 and b_1's update: row k of G_1 (transposed, in x out) is ``sum_i x_{i,k}
    delta_{i,1}`` over the batch's nonzeros in column k (``g``, summed in batch order), and
    row k of W_1^T is rewritten at once; plain SGD skips the rows no sample reads (their
    gradient is exactly 0), decay or pull rewrites every row."""
    zero = np.float32(0.0)
    h1 = b1.shape[0]
    dense = decay != zero or pull != zero
    for j in range(h1):
        gb = zero
        for i in range(nb):
            gb += delta[i, j]
        b1[j] = _decayed(b1[j], gb, ab1[j], nlr, decay, pull)
    for k in range(w1t.shape[0]):
        lo, hi = colptr[k], colptr[k + 1]
        if lo == hi:
            if dense:
                for j in range(h1):
                    w1t[k, j] = _decayed(w1t[k, j], zero, a1t[k, j], nlr, decay, pull)
            continue
        for j in range(h1):
            g[j] = zero
        p = lo
        while p + 4 <= hi:
            i0, i1, i2, i3 = crow[p], crow[p + 1], crow[p + 2], crow[p + 3]
            v0, v1, v2, v3 = cval[p], cval[p + 1], cval[p + 2], cval[p + 3]
            for j in range(h1):
                g[j] = (((g[j] + v0 * delta[i0, j]) + v1 * delta[i1, j]) + v2 * delta[i2, j]) + (
                    v3 * delta[i3, j]
                )
            p += 4
        while p < hi:
            i, v = crow[p], cval[p]
            for j in range(h1):
                g[j] += v * delta[i, j]
            p += 1
        for j in range(h1):
            w1t[k, j] = _decayed(w1t[k, j], g[j], a1t[k, j], nlr, decay, pull)


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def train_batches(
    w1t, b1, ws, bs, sparse, indptr, indices, values, xd, y, order, start, batch, present,
    lr, head_lr, head_frozen, decay, pull, a1t, ab1, aws, abs_,
    cbp, util_code, cbp_decay, rate, maturity, utils, means, powers, ages, accs, replaced,
    bounds, inv, has_perm, buffer, cursor, need,
):  # fmt: skip  # pragma: no cover - compiled; covered through MiniBatchEngine in tests
    """The prequential pass over ``order[start:]`` in mini-batches of ``batch`` (the last one
    may be smaller, as the reference's slicing gives): each batch is scored with the
    pre-update weights, then trained on (module docstring), then, with ``cbp``, put through
    Continual Backprop's generate-and-test
    (:func:`~plasticollapse.engines.minibatch_cbp_kernels.batch_cbp_step`).

    ``w1t``: W_1 transposed (in x h1); ``ws``/``bs`` the deeper layers (classifier last);
    inputs as CSR rows (``sparse``) or dense rows ``xd``; ``present``: the classes the head
    scores; ``head_lr`` 0 and ``head_frozen`` for a fixed classifier; anchors ``a1t``,
    ``ab1``, ``aws``, ``abs_`` (zeros without a pull). CBP: the
    remedy's state (placeholders when off), ``inv``/``has_perm`` the pass's inverse column
    permutation, and its uniform stream ``buffer[cursor:]``, of which a step takes at most
    ``need`` numbers.

    Returns ``(correct, loss_sum, stop, cursor)``: ``loss_sum`` = sum over batches of the
    batch's float32 mean loss times its size; the pass stopped before ``order[stop]``
    (``len(order)`` when done; earlier when fewer than ``need`` numbers were left).
    """
    n_dense = len(ws)
    n_in, h1 = w1t.shape
    width = h1
    for l in range(n_dense):
        width = max(width, ws[l].shape[0])
    n_cls = ws[n_dense - 1].shape[0]
    acts = np.zeros((n_dense + 1, batch, width), np.float32)
    delta = np.zeros((batch, width), np.float32)
    dprev = np.zeros((batch, width), np.float32)
    g = np.zeros(width, np.float32)
    active = np.zeros(max(width, batch), np.int64)
    colptr = np.zeros(n_in + 1, np.int64)
    crow = np.zeros(batch * n_in, np.int32)
    cval = np.zeros(batch * n_in, np.float32)
    mags, taken, chosen, nsel = cbp_scratch(n_dense, width)
    nlr = np.float32(-lr)
    nlr_head = np.float32(-head_lr)
    f_decay = np.float32(decay)
    f_pull = np.float32(pull)
    correct = 0
    loss_sum = 0.0
    n = order.shape[0]
    lo = start
    while lo < n:
        if cbp and buffer.shape[0] - cursor < need:
            break
        hi = min(lo + batch, n)
        nb = hi - lo
        first_forward(w1t, b1, acts, sparse, indptr, indices, values, xd, order, lo, nb)
        deeper_forward(ws, bs, acts, nb)
        c, loss = score_batch(acts, n_dense, n_cls, present, y, order, lo, nb, delta)
        correct += c
        loss_sum += float(loss) * nb
        deeper_backward(
            ws, bs, aws, abs_, acts, delta, dprev, g, active, nb, nlr, nlr_head, f_decay, f_pull
        )
        batch_columns(sparse, indptr, indices, values, xd, order, lo, hi, colptr, crow, cval)
        first_backward(w1t, b1, a1t, ab1, delta, colptr, crow, cval, nb, g, nlr, f_decay, f_pull)
        if cbp:
            cursor = batch_cbp_step(
                w1t, b1, ws, bs, acts, nb, inv, has_perm, head_frozen, mags, taken, chosen,
                nsel, utils, means, powers, ages, accs, replaced, bounds, util_code, cbp_decay,
                rate, maturity, buffer, cursor,
            )  # fmt: skip
        lo = hi
    return correct, loss_sum, lo, cursor
