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
    DOT_MATH,
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
def _decayed(w, g, a, nlr, decay, pull):
    """One entry: ``w + nlr * ((g + pull (w - a)) + decay w)`` (SGD's order: the two
    gradients summed, then the decay added)."""
    return w + nlr * ((g + pull * (w - a)) + decay * w)


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def first_layer_update_decayed(
    w1t, b1, a1t, ab1, delta, sparse, indices, values, xd, s, lo, hi, nlr, decay, pull, in_abs
):  # pragma: no cover - compiled
    """The dense decayed update of W_1 (transposed, ``w1t``; anchor ``a1t``) and b_1, every
    input row k visited (g = delta_1 x_k, 0 for a zero input), for Continual Backprop's
    adaptable utility: ``in_abs[i]`` becomes ``sum_k |W_1[i, k]|`` of the updated weights."""
    zero = np.float32(0.0)
    h1 = b1.shape[0]
    for j in range(h1):
        b1[j] = _decayed(b1[j], delta[j], ab1[j], nlr, decay, pull)
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
        for j in range(h1):
            w1t[k, j] = _decayed(w1t[k, j], delta[j] * v, a1t[k, j], nlr, decay, pull)
        for j in range(h1):
            in_abs[j] += abs(w1t[k, j])


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def scaled_inputs(sparse, indices, values, xd, s, lo, hi, scales, n_in, anchored, idx, val, raw):
    """Sample s's nonzero inputs as the scaled first layer reads them (module docstring):
    entries ``(k, x_k * scale_k)`` on the deviations' rows and, ``anchored``, ``(n_in + k,
    x_k)`` on the fixed point's rows; ``raw`` gets x_k. Returns the number of inputs."""
    m = 0
    n = hi - lo if sparse else xd.shape[1]
    for q in range(n):
        if sparse:
            k = indices[lo + q]
            v = values[lo + q]
        else:
            k = q
            v = xd[s, k]
            if v == 0:
                continue
        idx[m] = k
        raw[m] = v
        val[m] = np.float32(v * scales[k])
        m += 1
    if anchored:
        for q in range(m):
            idx[m + q] = n_in + idx[q]
            val[m + q] = raw[q]
    return m


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def first_layer_update_scaled(dev, b1, ab1, delta, idx, raw, m, scales, rho, nlr, decay, pull):
    """Step t's update of the scaled first layer (module docstring): every row's scale is
    multiplied by rho (its decay and pull); the m rows sample s reads are then rewritten
    as ``scale_k * u_k + nlr * delta_1 x_k`` with scale 1 (``raw``: the x_k); b_1 gets the
    exact per-step formula."""
    h1 = b1.shape[0]
    for j in range(h1):
        b1[j] = _decayed(b1[j], delta[j], ab1[j], nlr, decay, pull)
    for k in range(scales.shape[0]):
        scales[k] *= rho
    for q in range(m):
        k = idx[q]
        v = raw[q]
        sk = np.float32(scales[k])
        for j in range(h1):
            dev[k, j] = sk * dev[k, j] + nlr * (delta[j] * v)
        scales[k] = 1.0


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def first_layer_update_tracked(
    w1t, b1, delta, sparse, indices, values, xd, s, lo, hi, nlr, in_abs, change
):  # pragma: no cover - compiled
    """:func:`~plasticollapse.engines.fast_kernels.first_layer_update` (the same updates)
    that also adds ``|w_new| - |w_old|`` of every changed entry to ``in_abs`` (float64;
    one step's changes are summed in float32 in ``change`` first, so that the inner loop
    stays in float32)."""
    zero = np.float32(0.0)
    h1 = b1.shape[0]
    for j in range(h1):
        b1[j] = b1[j] + nlr * delta[j]
        change[j] = zero
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
            change[j] += abs(new) - abs(old)
    for j in range(h1):
        in_abs[j] += change[j]


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def deeper_backward_update_decayed(
    ws, bs, aws, abs_, acts, delta, dprev, nlr, nlr_head, decay, pull
):  # pragma: no cover - compiled
    """As :func:`~plasticollapse.engines.fast_kernels.deeper_backward_update`, with every
    row decayed and pulled to the anchors ``aws``/``abs_`` (None for weight decay alone:
    Numba then compiles a version without them): dprev = W_l^T delta_l over all rows
    (inactive ones add exact zeros), then the dense decayed update of W_l and b_l, four
    rows per sweep over dprev."""
    zero = np.float32(0.0)
    for l in range(len(ws) - 1, -1, -1):
        nlr_l = nlr_head if l == len(ws) - 1 else nlr
        w = ws[l]
        b = bs[l]
        n_out, n_in = w.shape
        for k in range(n_in):
            dprev[k] = zero
        for j in range(n_out):
            anchor = zero if abs_ is None else abs_[l][j]
            b[j] = _decayed(b[j], delta[j], anchor, nlr_l, decay, pull)
        j = 0
        while j + 4 <= n_out:
            d0, d1, d2, d3 = delta[j], delta[j + 1], delta[j + 2], delta[j + 3]
            if aws is None:
                for k in range(n_in):
                    ak = acts[l, k]
                    w0, w1_, w2, w3 = w[j, k], w[j + 1, k], w[j + 2, k], w[j + 3, k]
                    dprev[k] = (((dprev[k] + w0 * d0) + w1_ * d1) + w2 * d2) + w3 * d3
                    w[j, k] = w0 + nlr_l * (d0 * ak + decay * w0)
                    w[j + 1, k] = w1_ + nlr_l * (d1 * ak + decay * w1_)
                    w[j + 2, k] = w2 + nlr_l * (d2 * ak + decay * w2)
                    w[j + 3, k] = w3 + nlr_l * (d3 * ak + decay * w3)
            else:
                aw = aws[l]
                for k in range(n_in):
                    ak = acts[l, k]
                    w0, w1_, w2, w3 = w[j, k], w[j + 1, k], w[j + 2, k], w[j + 3, k]
                    dprev[k] = (((dprev[k] + w0 * d0) + w1_ * d1) + w2 * d2) + w3 * d3
                    w[j, k] = _decayed(w0, d0 * ak, aw[j, k], nlr_l, decay, pull)
                    w[j + 1, k] = _decayed(w1_, d1 * ak, aw[j + 1, k], nlr_l, decay, pull)
                    w[j + 2, k] = _decayed(w2, d2 * ak, aw[j + 2, k], nlr_l, decay, pull)
                    w[j + 3, k] = _decayed(w3, d3 * ak, aw[j + 3, k], nlr_l, decay, pull)
            j += 4
        while j < n_out:
            dj = delta[j]
            for k in range(n_in):
                wk = w[j, k]
                dprev[k] += wk * dj
                anchor = zero if aws is None else aws[l][j, k]
                w[j, k] = _decayed(wk, dj * acts[l, k], anchor, nlr_l, decay, pull)
            j += 1
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


@njit(cache=True, nogil=True, fastmath=DOT_MATH)
def row_abs_sum(w, i):
    """``sum_k |w[i, k]|`` (float32), reassociated so that it vectorises, as torch's
    reductions are: float32 rounding."""
    total = np.float32(0.0)
    for k in range(w.shape[1]):
        total += abs(w[i, k])
    return total


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def cbp_utilities(i, acts, util, mean, power, age, mags, adaptable, decay):
    """Layer i's ages, bias corrections (into ``mags[2]``), means and utilities, in
    branch-free sweeps over its units (``mags[0]``: out_i; ``mags[1]``: in_i)."""
    d = np.float32(decay)
    omd = np.float32(1.0 - decay)
    for u in range(util.shape[0]):
        age[u] += 1
        power[u] *= decay
        mags[2, u] = np.float32(1.0 - power[u])
    for u in range(util.shape[0]):
        h = acts[i, u]
        m = mean[u] * d + omd * h
        mean[u] = m
        if adaptable:
            new = mags[0, u] * abs(h - m / mags[2, u]) / mags[1, u]
        else:
            new = mags[0, u] * abs(h)
        util[u] = util[u] * d + omd * new


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
    Scratch: ``mags`` (3 x width, float32), ``taken`` (width), ``chosen`` (layers x
    width), ``nsel`` (layers).
    """
    adaptable = util_code == ADAPTABLE_CONTRIBUTION
    n_hidden = len(ws)
    for i in range(n_hidden):
        util = utils[i]
        age = ages[i]
        width = util.shape[0]
        nsel[i] = 0
        column_abs_sums(ws[i], mags, 0)
        n_out = np.float32(ws[i].shape[0])
        for u in range(width):
            mags[0, u] = mags[0, u] / n_out
        if adaptable:
            if i == 0:
                n_in = np.float32(w1t.shape[0])
                for u in range(width):
                    mags[1, u] = np.float32(in_abs1[u]) / n_in
            else:
                inw = ws[i - 1]
                n_in = np.float32(inw.shape[1])
                for u in range(width):
                    mags[1, u] = row_abs_sum(inw, u) / n_in
        cbp_utilities(i, acts, util, means[i], powers[i], age, mags, adaptable, decay)
        eligible = 0
        for u in range(width):
            eligible += age[u] > maturity
        if eligible == 0:
            continue
        accs[i] += rate * eligible
        count = int(accs[i])
        accs[i] -= count
        count = min(count, eligible)
        if count == 0:
            continue
        for u in range(width):
            taken[u] = False
        for q in range(count):
            best = -1
            best_score = np.float32(0.0)
            for u in range(width):
                if age[u] > maturity and not taken[u]:
                    score = util[u] / mags[2, u]
                    if best < 0 or score < best_score:
                        best = u
                        best_score = score
            taken[best] = True
            chosen[i, q] = best
        for q in range(count):
            util[chosen[i, q]] = np.float32(0.0)
            means[i][chosen[i, q]] = np.float32(0.0)
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
    head_frozen, decay, pull, a1t, ab1, aws, abs_, scales, anchored,
    cbp, util_code, cbp_decay, rate, maturity, utils, means, powers, ages, accs, replaced,
    bounds, inv, has_perm, buffer, cursor, need, in_abs1,
):  # fmt: skip  # pragma: no cover - compiled; covered through FastEngine in tests
    """The prequential pass of :func:`~plasticollapse.engines.fast_kernels.train_pass` over
    ``order[start:]`` with the remedies' per-step work (module docstring): decayed updates
    when ``decay`` or ``pull``, generate-and-test after each update when ``cbp``.

    With decay and without ``cbp``, ``w1t`` is the scaled first layer: the deviations'
    rows, then (``anchored``) the fixed point's, with the deviations' float64 ``scales``;
    otherwise W_1 itself (``a1t``: its anchor). ``aws``/``abs_``: the deeper layers'
    anchors, or None. ``head_lr`` is 0 for a fixed classifier (``head_frozen``: replaced
    units' outgoing weights in it are not zeroed).

    Returns ``(correct, loss_sum, stop, cursor)``: the pass stopped before ``order[stop]``
    (``len(order)`` when done; earlier when fewer than ``need`` numbers were left in
    ``buffer`` after ``cursor``).
    """
    nlr = np.float32(-lr)
    nlr_head = np.float32(-head_lr)
    f_decay = np.float32(decay)
    f_pull = np.float32(pull)
    dense = decay != 0.0 or pull != 0.0
    scaled = dense and not cbp
    rho = 1.0 - lr * (decay + pull)
    track = cbp and util_code == ADAPTABLE_CONTRIBUTION
    n_in = scales.shape[0]
    acts, delta, dprev, active = step_buffers(b1.shape[0], ws)
    idx = np.zeros(2 * n_in, np.int32)
    val = np.zeros(2 * n_in, np.float32)
    raw = np.zeros(n_in, np.float32)
    width = acts.shape[1]
    mags = np.zeros((3, width), np.float32)
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
        m = 0
        if scaled:
            m = scaled_inputs(
                sparse, indices, values, xd, s, lo, hi, scales, n_in, anchored, idx, val, raw
            )
            n_read = 2 * m if anchored else m
            first_layer_forward(w1t, b1, acts, True, idx, val, xd, s, 0, n_read)
        else:
            first_layer_forward(w1t, b1, acts, sparse, indices, values, xd, s, lo, hi)
        deeper_forward(ws, bs, acts)
        pred, log_p = score_and_output_delta(acts, n_dense, n_cls, y[s], delta)
        loss_sum -= log_p
        if pred == y[s]:
            correct += 1
        if dense:
            deeper_backward_update_decayed(
                ws, bs, aws, abs_, acts, delta, dprev, nlr, nlr_head, f_decay, f_pull
            )
        else:
            deeper_backward_update(ws, bs, acts, delta, dprev, active, nlr, nlr_head)
        if scaled:
            first_layer_update_scaled(
                w1t, b1, ab1, delta, idx, raw, m, scales, rho, nlr, f_decay, f_pull
            )
        elif dense:
            first_layer_update_decayed(
                w1t, b1, a1t, ab1, delta, sparse, indices, values, xd, s, lo, hi, nlr,
                f_decay, f_pull, in_abs1,
            )  # fmt: skip
        elif track:
            first_layer_update_tracked(
                w1t, b1, delta, sparse, indices, values, xd, s, lo, hi, nlr, in_abs1, dprev
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
