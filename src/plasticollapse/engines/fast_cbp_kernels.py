"""The fast engine's Continual Backprop: generate-and-test after every compiled step.

:func:`cbp_step` runs after the update of each step, as Dohare et al.'s
``GnT.gen_and_test`` (lop/algos/gnt.py in github.com/shibhansh/loss-of-plasticity; the
remedy's docstring, :class:`~plasticollapse.remedies.cbp.ContinualBackprop`, has the
differences), on the activations h of the step's forward pass and the updated weights. For
each hidden layer l and unit i::

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
same numbers in the same order, so both replace units with identical weights.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from plasticollapse.engines.fast_kernels import DOT_MATH, STEP_MATH


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
def cbp_step(net, acts, head_frozen, cbp, pass_, scratch, cursor):
    """One generate-and-test step (module docstring) on the updated ``net``
    (:class:`~plasticollapse.engines.fast_forms.Network`); returns the new ``cursor``
    into ``pass_.buffer``.

    ``acts[l]`` holds hidden layer l's activations of this step's forward pass; ``cbp``
    (:class:`~plasticollapse.engines.fast_forms.CbpState`) the remedy's settings and
    state, updated in place; ``pass_`` (:class:`~plasticollapse.engines.fast_forms.
    CbpPass`) the row sums ``in_abs1 = sum_k |W_1[i, k]|`` (kept up to date by the first
    layer's update), P^-1 and the uniform numbers. ``scratch``: ``(mags, taken, chosen,
    nsel)``, arrays of 3 x width (float32), width, layers x width and layers.
    """
    w1t, b1, ws, bs = net.w1t, net.b1, net.ws, net.bs
    mags, taken, chosen, nsel = scratch
    utils, means, powers, ages = cbp.utils, cbp.means, cbp.powers, cbp.ages
    accs, replaced, bounds = cbp.accs, cbp.replaced, cbp.bounds
    decay, rate, maturity = cbp.decay, cbp.rate, cbp.maturity
    inv, has_perm, in_abs1, buffer = pass_.inv, pass_.has_perm, pass_.in_abs1, pass_.buffer
    adaptable = cbp.adaptable
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
        count = lowest_utilities(i, util, age, mags, taken, chosen, accs, rate, maturity)
        for q in range(count):
            util[chosen[i, q]] = np.float32(0.0)
            means[i][chosen[i, q]] = np.float32(0.0)
        nsel[i] = count
    cursor = replace_units(
        w1t, b1, ws, bs, chosen, nsel, bounds, ages, powers, replaced, inv, has_perm,
        head_frozen, buffer, cursor,
    )  # fmt: skip
    for q in range(nsel[0]):  # the fresh rows' sums (no other layer writes W_1)
        u = chosen[0, q]
        total = 0.0
        for r in range(w1t.shape[0]):
            total += abs(w1t[r, u])
        in_abs1[u] = total
    return cursor


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def lowest_utilities(l, util, age, mags, taken, chosen, accs, rate, maturity):
    """The test of layer l: how many units are due (the carried-over rate: ``acc += rate *
    eligible``, ``n = int(acc)``), and which (``chosen[l, :n]``, the eligible units of lowest
    ``u_i / c_i`` first, ties to the lowest index; ``mags[2]`` holds c_i)."""
    width = util.shape[0]
    eligible = 0
    for u in range(width):
        eligible += age[u] > maturity
    if eligible == 0:
        return 0
    accs[l] += rate * eligible
    count = int(accs[l])
    accs[l] -= count
    count = min(count, eligible)
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
        chosen[l, q] = best
    return count


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def replace_units(
    w1t, b1, ws, bs, chosen, nsel, bounds, ages, powers, replaced, inv, has_perm,
    head_frozen, buffer, cursor,
):  # fmt: skip  # pragma: no cover - compiled
    """The generate step, after every layer was tested on the same weights: each chosen
    unit ``chosen[l, :nsel[l]]`` gets fresh incoming weights ``bound_l * v`` (v from
    ``buffer[cursor:]``, in the model's input order: ``inv`` maps W_1^T's rows when
    ``has_perm``), a zero bias, zero outgoing weights (unless the head is fixed), age 0.
    Layers in order (module docstring). Returns the new cursor."""
    n_hidden = len(ws)
    for i in range(n_hidden):
        bound = bounds[i]
        for q in range(nsel[i]):
            u = chosen[i, q]
            if i == 0:
                n_in = w1t.shape[0]
                for r in range(n_in):
                    c = inv[r] if has_perm else r
                    w1t[r, u] = bound * buffer[cursor + c]
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
