"""The mini-batch engine's Continual Backprop: generate-and-test after every compiled step.

:func:`batch_cbp_step` runs after the SGD update of each mini-batch, as the reference
engine's :meth:`~plasticollapse.remedies.cbp.ContinualBackprop.after_step` does (and
``GnT.gen_and_test`` of lop/algos/gnt.py in github.com/shibhansh/loss-of-plasticity, which
takes the batch's activations ``features[i]`` of shape batch x units), on the hidden
activations ``h_{b,i}`` of the step's forward pass (b = 1..B the batch's samples) and the
updated weights. For each hidden layer l and unit i, with d the decay rate::

    age_i += 1;  p_i *= d (p_i = d^age_i);  c_i = 1 - p_i             (bias correction)
    m_i = d m_i + (1 - d) mean_b h_{b,i}                              (mean activation)
    out_i = mean_r |W_{l+1}[r, i]|,  in_i = mean_k |W_l[i, k]|         (updated weights)
    u_i = d u_i + (1 - d) out_i mean_b |h_{b,i}|                        (contribution)
        or        (1 - d) out_i mean_b |h_{b,i} - m_i / c_i| / in_i    (adaptable_contribution)

(the new mean m_i in the deviation, as ``after_step`` and GnT compute it). Then the test
and the generation of the batch-1 kernel (:mod:`plasticollapse.engines.fast_cbp_kernels`):
``acc += rate * eligible`` (units older than the maturity), ``n = int(acc)``, the n
eligible units of lowest ``u_i / c_i`` (ties: the lowest index) chosen in every layer
before any is replaced; a replaced unit's incoming row is ``bound * v`` with v the next
numbers of the remedy's uniform stream (in the model's input-column order, whatever the
pass's permutation of W_1's rows), its bias, outgoing column (unless the head is fixed),
utility, mean and age set to 0.

Unlike the batch-1 engine, ``in_i`` of the first layer is summed afresh every step (a pass
over W_1^T's 784 x 100 entries, ~3% of a batch-16 step's arithmetic) rather than tracked
through the update: simpler, and the step's dense update rewrites every entry anyway.

Numerics: float32 like the reference (whose means over the batch and over the weights are
torch's float32 reductions, in another order: float32 rounding); d^age in float64.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from plasticollapse.engines.fast_cbp_kernels import lowest_utilities, replace_units
from plasticollapse.engines.fast_kernels import STEP_MATH

__all__ = ["batch_cbp_step", "cbp_scratch"]


@njit(cache=True, nogil=True)
def cbp_scratch(n_hidden, width):
    """Work arrays of :func:`batch_cbp_step`: ``(mags, taken, chosen, nsel)``."""
    return (
        np.zeros((5, width), np.float32),
        np.zeros(width, np.bool_),
        np.zeros((n_hidden, width), np.int64),
        np.zeros(n_hidden, np.int64),
    )


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def _magnitudes(w1t, ws, l, mags, adaptable):
    """``mags[0] = out_i`` (mean |column i| of the next layer's weights) and, for the
    adaptable utility, ``mags[1] = in_i`` (mean |row i| of this layer's), for layer l."""
    width = mags.shape[1]
    for u in range(width):
        mags[0, u] = np.float32(0.0)
        mags[1, u] = np.float32(0.0)
    nxt = ws[l]
    for r in range(nxt.shape[0]):
        for u in range(nxt.shape[1]):
            mags[0, u] += abs(nxt[r, u])
    n_out = np.float32(nxt.shape[0])
    for u in range(nxt.shape[1]):
        mags[0, u] = mags[0, u] / n_out
    if not adaptable:
        return
    if l == 0:  # W_1^T (in x out): row sums of W_1 are column sums here, row by row
        for k in range(w1t.shape[0]):
            for u in range(w1t.shape[1]):
                mags[1, u] += abs(w1t[k, u])
        n_in = np.float32(w1t.shape[0])
        for u in range(w1t.shape[1]):
            mags[1, u] = mags[1, u] / n_in
    else:
        inw = ws[l - 1]
        n_in = np.float32(inw.shape[1])
        for u in range(inw.shape[0]):
            total = np.float32(0.0)
            for k in range(inw.shape[1]):
                total += abs(inw[u, k])
            mags[1, u] = total / n_in


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def _batch_utilities(l, acts, nb, util, mean, power, age, mags, adaptable, decay):
    """Layer l's ages, bias corrections (``mags[2]``), means and utilities from the batch's
    activations ``acts[l]`` (nb x width; ``mags[3]``, ``mags[4]``: scratch for the batch means)."""
    d = np.float32(decay)
    omd = np.float32(1.0 - decay)
    width = util.shape[0]
    inv_nb = np.float32(1.0) / np.float32(nb)
    h = acts[l]
    for u in range(width):
        age[u] += 1
        power[u] *= decay
        mags[2, u] = np.float32(1.0 - power[u])
        mags[3, u] = np.float32(0.0)
    for b in range(nb):
        for u in range(width):
            mags[3, u] += h[b, u]
    for u in range(width):
        mean[u] = mean[u] * d + omd * (mags[3, u] * inv_nb)
    if adaptable:
        for u in range(width):
            mags[4, u] = np.float32(0.0)
            mags[3, u] = mean[u] / mags[2, u]  # the bias-corrected mean, m_i / c_i
        for b in range(nb):
            for u in range(width):
                mags[4, u] += abs(h[b, u] - mags[3, u])
        for u in range(width):
            new = mags[0, u] * (mags[4, u] * inv_nb) / mags[1, u]
            util[u] = util[u] * d + omd * new
    else:  # relu outputs: |h| = h, so mean_b |h| is the batch sum already taken
        for u in range(width):
            util[u] = util[u] * d + omd * (mags[0, u] * abs(mags[3, u] * inv_nb))


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def batch_cbp_step(
    w1t, b1, ws, bs, acts, nb, inv, has_perm, head_frozen, mags, taken, chosen, nsel,
    cbp, buffer, cursor,
):  # fmt: skip  # pragma: no cover - compiled; covered through MiniBatchEngine in tests
    """One generate-and-test step on the batch's activations ``acts[l]`` (nb x units of hidden
    layer l; module docstring); returns
    the new ``cursor`` into the uniform stream's ``buffer``.

    ``w1t``: W_1 transposed (in x h1), its rows permuted by the pass (``inv`` maps a row to
    the model's input column when ``has_perm``); ``ws``/``bs``: the deeper layers, the
    classifier last (``head_frozen``: its weights are not zeroed). ``cbp``: the remedy's
    :class:`~plasticollapse.engines.fast_forms.CbpState` (settings, and its state one entry
    per hidden layer: ``utils``, ``means``, ``powers`` (d^age, float64), ``ages``, ``accs``
    (float64), ``replaced`` (counts); ``bounds``: the Kaiming-uniform bounds).
    Scratch from :func:`cbp_scratch`.
    """
    adaptable, decay, rate, maturity = cbp.adaptable, cbp.decay, cbp.rate, cbp.maturity
    utils, means, powers, ages = cbp.utils, cbp.means, cbp.powers, cbp.ages
    accs, replaced, bounds = cbp.accs, cbp.replaced, cbp.bounds
    n_hidden = len(ws)
    for l in range(n_hidden):
        _magnitudes(w1t, ws, l, mags, adaptable)
        _batch_utilities(
            l, acts, nb, utils[l], means[l], powers[l], ages[l], mags, adaptable, decay
        )
        count = lowest_utilities(l, utils[l], ages[l], mags, taken, chosen, accs, rate, maturity)
        for q in range(count):
            utils[l][chosen[l, q]] = np.float32(0.0)
            means[l][chosen[l, q]] = np.float32(0.0)
        nsel[l] = count
    return replace_units(
        w1t, b1, ws, bs, chosen, nsel, bounds, ages, powers, replaced, inv, has_perm,
        head_frozen, buffer, cursor,
    )  # fmt: skip
