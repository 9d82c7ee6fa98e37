"""The fast engine's compiled step with remedies: decay, a pull to theta_0, Continual Backprop.

:func:`train_pass_remedied` is :func:`~plasticollapse.engines.fast_kernels.train_pass` with
the per-step work of the remedies that declare a compiled form
(:class:`~plasticollapse.remedies.base.StepTerms`). It reuses the plain step's forward,
scoring and (without decay) backward pieces, and adds:

Decay and pull (weight decay, L2 Init)
--------------------------------------
Every trainable parameter theta (weights and biases) is updated as ``torch.optim.SGD``
with ``weight_decay = decay`` updates it under the loss ``CE + pull/2 ||theta - A||^2``::

    grad  = g + pull * (theta - A)          (g: the cross-entropy's gradient; A: anchor)
    theta = theta - eta * (grad + decay * theta)

in that order (autograd sums the two gradients, then SGD adds the decay). Unlike the plain
step, every entry changes at every step, so the updates are dense: the first layer's loop
visits all input rows (those of zero inputs get g = 0 and only decay), the deeper layers'
all rows (inactive ones add exactly ``w * 0 = 0`` to W^T delta, so that sum is the plain
step's). A fixed classifier (``nlr_head = 0``) is neither trained nor decayed, as SGD
skips a parameter without a gradient.

Continual Backprop (:func:`cbp_step`)
------------------------------------
After the update, generate-and-test as Dohare et al.'s ``GnT.gen_and_test``
(lop/algos/gnt.py in github.com/shibhansh/loss-of-plasticity), on the activations h of the
step's forward pass and the updated weights. For each hidden layer l and unit i::

    age_i += 1;  p_i *= d (p_i = d^age_i);  c_i = 1 - p_i            (bias correction)
    m_i = d m_i + (1 - d) h_i                                        (mean activation)
    out_i = mean_r |W_{l+1}[r, i]|,  in_i = mean_k |W_l[i, k]|
    u_i = d u_i + (1 - d) * out_i * |h_i|                             (contribution)
        or                  out_i * |h_i - m_i / c_i| / in_i         (adaptable_contribution)

then, if any unit is older than the maturity threshold: ``acc += rate * eligible``,
``n = int(acc)``, ``acc -= n``, and the n eligible units of lowest ``u_i / c_i`` (ties:
the lowest index) are replaced after all layers are scored: their incoming weights are
redrawn (``bound * v`` with v from the remedy's uniform stream, bound the Kaiming-uniform
one), their bias, outgoing weights (unless the head is fixed), utility, mean and age set
to 0. Layers are replaced in order, so a replaced unit's fresh incoming row wins over the
zero written into it by a replaced unit of the layer below, as in GnT.

The first layer's ``in_i`` would cost a pass over all of W_1 per step (78,400 entries for
the paper's network, as much as the whole plain step): the pass keeps the float64 row sums
``sum_k |W_1[i, k]|`` up to date instead, adding ``|w_new| - |w_old|`` of each entry the
update changes (or summing afresh where a dense decayed update visits them all anyway),
and recomputing a replaced row's. The deeper layers' sums are recomputed every step.

The uniform stream (``buffer``, ``cursor``) is the remedy's: the reference engine draws the
same numbers in the same order, so both replace units with identical weights. The pass
returns before a step for which the buffer might run short (``need`` numbers); the engine
refills it and resumes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from plasticollapse.engines.fast_kernels import (
    STEP_MATH,
    deeper_backward_update,
    deeper_forward,
    first_layer_forward,
    first_layer_update,
    score_and_output_delta,
    step_buffers,
)

#: ``util_code`` values of :func:`cbp_step`.
CONTRIBUTION = 0
ADAPTABLE_CONTRIBUTION = 1


# --------------------------------------------------------------------------------------
# Dense updates with decay and pull
# --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def _decayed(w, g, a, nlr, decay, pull, anchored):
    """One entry: ``w + nlr * ((g + pull (w - a)) + decay w)``."""
    if anchored:
        g = g + pull * (w - a)
    return w + nlr * (g + decay * w)


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def first_layer_update_decayed(
    w1t, b1, a1t, ab1, delta, sparse, indices, values, xd, s, lo, hi, nlr, decay, pull,
    anchored, track, in_abs,
):  # fmt: skip
    """The dense decayed update of W_1 (transposed, ``w1t``; anchor ``a1t``) and b_1.

    Every input row k is visited: g = delta_1 x_k (0 for a zero input). With ``track``,
    ``in_abs[i]`` becomes ``sum_k |W_1[i, k]|`` of the updated weights (float64).
    """
    zero = np.float32(0.0)
    h1 = b1.shape[0]
    for j in range(h1):
        b1[j] = _decayed(b1[j], delta[j], ab1[j], nlr, decay, pull, anchored)
        if track:
            in_abs[j] = 0.0
    p = lo
    for k in range(w1t.shape[0]):
        v = zero
        if sparse:
            if p < hi and indices[p] == k:
                v = values[p]
                p += 1
        else:
            v = xd[s, k]
        if anchored:
            for j in range(h1):
                w = w1t[k, j]
                w1t[k, j] = w + nlr * ((delta[j] * v + pull * (w - a1t[k, j])) + decay * w)
        else:
            for j in range(h1):
                w = w1t[k, j]
                w1t[k, j] = w + nlr * (delta[j] * v + decay * w)
        if track:
            for j in range(h1):
                in_abs[j] += abs(w1t[k, j])


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def first_layer_update_tracked(
    w1t, b1, delta, sparse, indices, values, xd, s, lo, hi, nlr, in_abs
):  # pragma: no cover - compiled
    """:func:`~plasticollapse.engines.fast_kernels.first_layer_update` (the same updates)
    that also adds ``|w_new| - |w_old|`` of every changed entry to ``in_abs`` (float64)."""
    zero = np.float32(0.0)
    h1 = b1.shape[0]
    for j in range(h1):
        b1[j] = b1[j] + nlr * delta[j]
    p = lo
    n = hi - lo if sparse else xd.shape[1]
    for q in range(n):
        if sparse:
            k = indices[p]
            v = values[p]
            p += 1
        else:
            k = q
            v = xd[s, k]
            if v == zero:
                continue
        for j in range(h1):
            old = w1t[k, j]
            new = old + nlr * (delta[j] * v)
            w1t[k, j] = new
            in_abs[j] += np.float64(abs(new)) - np.float64(abs(old))


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def deeper_backward_update_decayed(
    ws, bs, aws, abs_, acts, delta, dprev, nlr, nlr_head, decay, pull, anchored
):  # pragma: no cover - compiled
    """As :func:`~plasticollapse.engines.fast_kernels.deeper_backward_update`, with every
    row decayed (and pulled to the anchors ``aws``/``abs_``): dprev = W_l^T delta_l over all
    rows (inactive ones add exact zeros), then the dense decayed update of W_l and b_l."""
    zero = np.float32(0.0)
    for l in range(len(ws) - 1, -1, -1):
        nlr_l = nlr_head if l == len(ws) - 1 else nlr
        w = ws[l]
        b = bs[l]
        aw = aws[l]
        ab = abs_[l]
        n_out, n_in = w.shape
        for k in range(n_in):
            dprev[k] = zero
        for j in range(n_out):
            dj = delta[j]
            b[j] = _decayed(b[j], dj, ab[j], nlr_l, decay, pull, anchored)
            if anchored:
                for k in range(n_in):
                    wk = w[j, k]
                    dprev[k] += wk * dj
                    g = dj * acts[l, k] + pull * (wk - aw[j, k])
                    w[j, k] = wk + nlr_l * (g + decay * wk)
            else:
                for k in range(n_in):
                    wk = w[j, k]
                    dprev[k] += wk * dj
                    w[j, k] = wk + nlr_l * (dj * acts[l, k] + decay * wk)
        for k in range(n_in):
            delta[k] = dprev[k] if acts[l, k] > zero else zero  # relu'(z) = 1[a > 0]


# --------------------------------------------------------------------------------------
# Continual Backprop
# --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def row_abs_sums(w, out):
    """``out[i] = sum_k |w[i, k]|`` in float64 (what the pass starts ``in_abs1`` from)."""
    for i in range(w.shape[0]):
        total = 0.0
        for k in range(w.shape[1]):
            total += abs(w[i, k])
        out[i] = total


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def column_abs_sums(w, out, row):
    """``out[row, k] = sum_i |w[i, k]|`` (float32, rows in order)."""
    for k in range(w.shape[1]):
        out[row, k] = np.float32(0.0)
    for i in range(w.shape[0]):
        for k in range(w.shape[1]):
            out[row, k] += abs(w[i, k])


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def cbp_step(
    w1t, b1, ws, bs, acts, inv, has_perm, head_frozen, in_abs1, mags, taken, chosen, nsel,
    utils, means, powers, ages, accs, replaced, bounds, util_code, decay, rate, maturity,
    buffer, cursor,
):  # fmt: skip
    """One generate-and-test step (module docstring); returns the new ``cursor``.

    ``acts[l]`` holds hidden layer l's activations of this step's forward pass; ``utils``,
    ``means``, ``powers`` (d^age, float64), ``ages``, ``accs`` (float64) and ``replaced``
    (counts) are the remedy's state, one entry per hidden layer. ``in_abs1`` holds
    ``sum_k |W_1[i, k]|`` (kept up to date by the first layer's update). ``inv`` maps a
    row of ``w1t`` to the model's input column (P^-1; unused unless ``has_perm``).
    Scratch: ``mags`` (2 x width, float32), ``taken`` (width), ``chosen`` (layers x
    width), ``nsel`` (layers).
    """
    d = np.float32(decay)
    omd = np.float32(1.0 - decay)
    n_hidden = len(ws)
    for i in range(n_hidden):
        util = utils[i]
        mean = means[i]
        power = powers[i]
        age = ages[i]
        width = util.shape[0]
        nsel[i] = 0
        column_abs_sums(ws[i], mags, 0)
        n_out = np.float32(ws[i].shape[0])
        if util_code == ADAPTABLE_CONTRIBUTION:
            if i == 0:
                n_in = np.float32(w1t.shape[0])
                for u in range(width):
                    mags[1, u] = np.float32(in_abs1[u]) / n_in
            else:
                inw = ws[i - 1]
                n_in = np.float32(inw.shape[1])
                for u in range(width):
                    total = np.float32(0.0)
                    for k in range(inw.shape[1]):
                        total += abs(inw[u, k])
                    mags[1, u] = total / n_in
        eligible = 0
        for u in range(width):
            age[u] += 1
            power[u] *= decay
            correction = np.float32(1.0 - power[u])
            h = acts[i, u]
            mean[u] = mean[u] * d + omd * h
            out_mag = mags[0, u] / n_out
            if util_code == ADAPTABLE_CONTRIBUTION:
                new = out_mag * abs(h - mean[u] / correction) / mags[1, u]
            else:
                new = out_mag * abs(h)
            util[u] = util[u] * d + omd * new
            if age[u] > maturity:
                eligible += 1
        if eligible == 0:
            continue
        accs[i] += rate * eligible
        count = int(accs[i])
        accs[i] -= count
        count = min(count, eligible)
        for u in range(width):
            taken[u] = False
        for q in range(count):
            best = -1
            best_score = np.float32(0.0)
            for u in range(width):
                if age[u] > maturity and not taken[u]:
                    score = util[u] / np.float32(1.0 - power[u])
                    if best < 0 or score < best_score:
                        best = u
                        best_score = score
            taken[best] = True
            chosen[i, q] = best
        for q in range(count):
            util[chosen[i, q]] = np.float32(0.0)
            mean[chosen[i, q]] = np.float32(0.0)
        nsel[i] = count
    for i in range(n_hidden):  # generate: all layers were tested on the same weights
        bound = bounds[i]
        for q in range(nsel[i]):
            u = chosen[i, q]
            if i == 0:
                n_in = w1t.shape[0]
                total = 0.0
                for r in range(n_in):
                    c = inv[r] if has_perm else r
                    w1t[r, u] = bound * buffer[cursor + c]
                    total += abs(w1t[r, u])
                in_abs1[u] = total
                b1[u] = np.float32(0.0)
                cursor += n_in
            else:
                inw = ws[i - 1]
                for c in range(inw.shape[1]):
                    inw[u, c] = bound * buffer[cursor + c]
                bs[i - 1][u] = np.float32(0.0)
                cursor += inw.shape[1]
            if not (head_frozen and i == n_hidden - 1):
                outw = ws[i]
                for r in range(outw.shape[0]):
                    outw[r, u] = np.float32(0.0)
            ages[i][u] = 0
            powers[i][u] = 1.0
            replaced[i] += 1
    return cursor


# --------------------------------------------------------------------------------------
# The pass
# --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def train_pass_remedied(
    w1t, b1, ws, bs, sparse, indptr, indices, values, xd, y, order, start, lr, head_lr,
    head_frozen,
    decay, pull, anchored, a1t, ab1, aws, abs_,
    cbp, util_code, cbp_decay, rate, maturity, utils, means, powers, ages, accs, replaced,
    bounds, inv, has_perm, buffer, cursor, need, in_abs1,
):  # fmt: skip  # pragma: no cover - compiled; covered through FastEngine in tests
    """The prequential pass of :func:`~plasticollapse.engines.fast_kernels.train_pass` over
    ``order[start:]`` with the remedies' per-step work (module docstring): decayed updates
    when ``decay`` or ``anchored``, generate-and-test after each update when ``cbp``.

    ``head_lr`` is 0 for a fixed classifier (``head_frozen``: replaced units' outgoing
    weights in it are not zeroed).

    Returns ``(correct, loss_sum, stop, cursor)``: the pass stopped before ``order[stop]``
    (``len(order)`` when done; earlier when fewer than ``need`` numbers were left in
    ``buffer`` after ``cursor``).
    """
    nlr = np.float32(-lr)
    nlr_head = np.float32(-head_lr)
    f_decay = np.float32(decay)
    f_pull = np.float32(pull)
    dense = decay != 0.0 or anchored
    track = cbp and util_code == ADAPTABLE_CONTRIBUTION
    acts, delta, dprev, active = step_buffers(b1.shape[0], ws)
    width = acts.shape[1]
    mags = np.zeros((2, width), np.float32)
    taken = np.zeros(width, np.bool_)
    chosen = np.zeros((len(ws), width), np.int64)
    nsel = np.zeros(len(ws), np.int64)
    n_dense = len(ws)
    n_cls = ws[n_dense - 1].shape[0]
    correct = 0
    loss_sum = 0.0
    t = start
    while t < order.shape[0]:
        if cbp and buffer.shape[0] - cursor < need:
            break
        s = order[t]
        lo = indptr[s] if sparse else 0
        hi = indptr[s + 1] if sparse else 0
        first_layer_forward(w1t, b1, acts, sparse, indices, values, xd, s, lo, hi)
        deeper_forward(ws, bs, acts)
        pred, log_p = score_and_output_delta(acts, n_dense, n_cls, y[s], delta)
        loss_sum -= log_p
        if pred == y[s]:
            correct += 1
        if dense:
            deeper_backward_update_decayed(
                ws, bs, aws, abs_, acts, delta, dprev, nlr, nlr_head, f_decay, f_pull, anchored
            )
            first_layer_update_decayed(
                w1t, b1, a1t, ab1, delta, sparse, indices, values, xd, s, lo, hi, nlr,
                f_decay, f_pull, anchored, track, in_abs1,
            )  # fmt: skip
        else:
            deeper_backward_update(ws, bs, acts, delta, dprev, active, nlr, nlr_head)
            if track:
                first_layer_update_tracked(
                    w1t, b1, delta, sparse, indices, values, xd, s, lo, hi, nlr, in_abs1
                )
            else:
                first_layer_update(w1t, b1, delta, sparse, indices, values, xd, s, lo, hi, nlr)
        if cbp:
            cursor = cbp_step(
                w1t, b1, ws, bs, acts, inv, has_perm, head_frozen, in_abs1, mags, taken,
                chosen, nsel, utils, means, powers, ages, accs, replaced, bounds, util_code,
                cbp_decay, rate, maturity, buffer, cursor,
            )  # fmt: skip
        t += 1
    return correct, loss_sum, t, cursor
