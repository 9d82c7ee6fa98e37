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
step, every weight changes at every step. The deeper layers are updated densely (all rows;
an inactive row adds exactly ``w * 0 = 0`` to W^T delta, so that sum is the plain step's),
with the anchors left out of the compiled loop for weight decay alone. A fixed classifier
(``nlr_head = 0``) is neither trained nor decayed, as SGD skips a parameter without a
gradient.

The first layer (784 inputs, ~80% of them zero in MNIST) would cost a pass over all of
W_1 per step. It is kept *scaled* instead: in terms of the deviation u = w - w* from the
fixed point of decay and pull alone, ``w* = pull / (decay + pull) * A``, the update is
``u <- rho u - eta delta_1 x`` with ``rho = 1 - eta (decay + pull)``. So each input row k
holds ``u_k = scale_k * stored_k`` with a float64 ``scale_k``: a step multiplies every
scale by rho (784 multiplications), reads the rows of the sample's nonzero inputs as
``x_k * scale_k`` (plus ``x_k`` times the rows of w*, stacked below, when anchored) and
rewrites only those rows, at scale 1 (:func:`first_layer_update_scaled`). The engine
folds the scales back into W_1 after the pass. Exact in real arithmetic; in float32 an
untouched weight decays by one float64 factor instead of being rounded at every step, a
difference of the reference's own rounding noise (tests/test_fast_engine.py). With
Continual Backprop, which writes fresh rows into W_1, the first layer is updated densely
(:func:`first_layer_update_decayed`).

What an anchor costs. The scaled first layer already spares the untouched weights, so
what separates L2 Init from weight decay is reading the anchor: with w* != 0 the forward
reads each nonzero input's fixed-point row beside its deviation row (three row reads and
one write per nonzero input, against two and one without an anchor), and the deeper
layers read their anchor at every weight. Any exact form needs theta_0 once per touched
weight and step (the pull changes every weight by an amount that depends on theta_0), so
on dense inputs L2 Init stays behind: section 8 of ``benchmarks/online_speed.py`` (one
core, thread CPU, noisy under shared load) gives ~0.87x plain on MNIST-like inputs (19%
nonzero) and ~0.55-0.71x on Fashion-MNIST (~50% nonzero; weight decay ~0.85-0.9x). Timed
without the fixed-point rows (wrong numbers, to split the cost) it gained ~10% there;
without the deeper anchors, no clear gain; the deviation and fixed-point rows
interleaved in memory, and inactive rows left out of W^T delta, gained nothing
measurable.

Continual Backprop
------------------
After each update, :func:`~plasticollapse.engines.fast_cbp_kernels.cbp_step` runs
generate-and-test (its module docstring). The pass returns before a step for which the
remedy's buffer of uniform numbers might run short (``need`` numbers); the engine refills
it and resumes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from plasticollapse.engines.fast_cbp_kernels import cbp_step
from plasticollapse.engines.fast_kernels import (
    STEP_MATH,
    backward_layer,
    deeper_backward_update,
    deeper_forward_and_loss,
    first_layer_forward,
    first_layer_update,
    step_buffers,
)

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
    rows per sweep over dprev (two with anchors)."""
    zero = np.float32(0.0)
    for l in range(len(ws) - 1, -1, -1):
        w, b, nlr_l = backward_layer(ws, bs, l, nlr, nlr_head, dprev)
        n_out, n_in = w.shape
        for j in range(n_out):
            anchor = zero if abs_ is None else abs_[l][j]
            b[j] = _decayed(b[j], delta[j], anchor, nlr_l, decay, pull)
        j = 0
        if aws is None:
            while j + 4 <= n_out:
                d0, d1, d2, d3 = delta[j], delta[j + 1], delta[j + 2], delta[j + 3]
                for k in range(n_in):
                    ak = acts[l, k]
                    w0, w1_, w2, w3 = w[j, k], w[j + 1, k], w[j + 2, k], w[j + 3, k]
                    dprev[k] = (((dprev[k] + w0 * d0) + w1_ * d1) + w2 * d2) + w3 * d3
                    w[j, k] = w0 + nlr_l * (d0 * ak + decay * w0)
                    w[j + 1, k] = w1_ + nlr_l * (d1 * ak + decay * w1_)
                    w[j + 2, k] = w2 + nlr_l * (d2 * ak + decay * w2)
                    w[j + 3, k] = w3 + nlr_l * (d3 * ak + decay * w3)
                j += 4
        else:
            # Two rows per sweep with their anchors (dprev's additions in the same order as
            # four): six arrays in the loop, which LLVM still vectorises; with four rows'
            # anchors it did not (L2 Init at 0.52 of plain's updates/s, against 0.74).
            aw, act = aws[l], acts[l]
            while j + 2 <= n_out:
                d0, d1 = delta[j], delta[j + 1]
                r0, r1, a0, a1 = w[j], w[j + 1], aw[j], aw[j + 1]
                for k in range(n_in):
                    ak = act[k]
                    w0, w1_ = r0[k], r1[k]
                    dprev[k] = (dprev[k] + w0 * d0) + w1_ * d1
                    r0[k] = _decayed(w0, d0 * ak, a0[k], nlr_l, decay, pull)
                    r1[k] = _decayed(w1_, d1 * ak, a1[k], nlr_l, decay, pull)
                j += 2
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
# The pass
# --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def train_pass_remedied(
    net, inputs, targets, order, start, sgd, terms, cbp, pass_, cursor
):  # pragma: no cover - compiled; covered through FastEngine in tests
    """The prequential pass of :func:`~plasticollapse.engines.fast_kernels.train_pass` over
    ``order[start:]`` with the remedies' per-step work (module docstring): decayed updates
    when ``terms.decay`` or ``terms.pull``, generate-and-test after each update when
    ``cbp.on``. The groups are those of :mod:`~plasticollapse.engines.fast_forms`:
    ``net`` (:class:`Network`, trained in place), ``inputs`` (:class:`Inputs`),
    ``targets`` (:class:`Targets`), ``sgd``
    (:class:`Sgd`), ``terms`` (:class:`DecayPull`), ``cbp`` (:class:`CbpState`) and
    ``pass_`` (:class:`CbpPass`).

    With decay and without ``cbp.on``, ``net.w1t`` is the scaled first layer: the
    deviations' rows, then (``terms.anchored``) the fixed point's, with the deviations'
    float64 ``terms.scales``; otherwise W_1 itself (``terms.a1t``: its anchor). A fixed
    classifier (``sgd.head_frozen``) is not trained, and replaced units' outgoing weights
    in it are not zeroed.

    Returns ``(correct, loss_sum, stop, cursor)``: the pass stopped before ``order[stop]``
    (``len(order)`` when done; earlier when fewer than ``pass_.need`` numbers were left in
    ``pass_.buffer`` after ``cursor``).
    """
    w1t, b1, ws, bs = net.w1t, net.b1, net.ws, net.bs
    sparse, indptr, indices, values, xd = (
        inputs.sparse, inputs.indptr, inputs.indices, inputs.values, inputs.xd
    )  # fmt: skip
    lr, decay, pull = sgd.lr, terms.decay, terms.pull
    a1t, ab1, aws, abs_ = terms.a1t, terms.ab1, terms.aws, terms.abs_
    scales, anchored, in_abs1 = terms.scales, terms.anchored, pass_.in_abs1
    gnt = cbp.on
    need = pass_.need
    nlr = np.float32(-lr)
    nlr_head = np.float32(-sgd.head_lr)
    f_decay = np.float32(decay)
    f_pull = np.float32(pull)
    dense = decay != 0.0 or pull != 0.0
    scaled = dense and not gnt
    rho = 1.0 - lr * (decay + pull)
    track = gnt and cbp.adaptable
    n_in = scales.shape[0]
    acts, delta, dprev, active = step_buffers(b1.shape[0], ws)
    idx = np.zeros(2 * n_in, np.int32)
    val = np.zeros(2 * n_in, np.float32)
    raw = np.zeros(n_in, np.float32)
    width = acts.shape[1]
    scratch = (
        np.zeros((3, width), np.float32),  # mags
        np.zeros(width, np.bool_),  # taken
        np.zeros((len(ws), width), np.int64),  # chosen
        np.zeros(len(ws), np.int64),  # nsel
    )
    correct = 0
    loss_sum = 0.0
    t = start
    while t < order.shape[0]:
        if gnt and pass_.buffer.shape[0] - cursor < need:
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
        hit, loss = deeper_forward_and_loss(ws, bs, acts, targets, s, delta)
        correct += hit
        loss_sum += loss
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
        if gnt:
            cursor = cbp_step(net, acts, sgd.head_frozen, cbp, pass_, scratch, cursor)
        t += 1
    return correct, loss_sum, t, cursor
