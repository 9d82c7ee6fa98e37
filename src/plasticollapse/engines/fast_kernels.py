"""The fast engine's compiled kernels: one fused per-sample SGD step for ReLU MLPs.

:func:`train_pass` runs a whole prequential pass (score, loss, SGD update of every sample
in turn) inside one Numba-compiled function; :class:`~plasticollapse.engines.fast.FastEngine`
prepares its arrays and calls it. The step is written as a few compiled pieces, in the
order a sample goes through them: :func:`first_layer_forward`, :func:`deeper_forward`,
:func:`score_and_output_delta`, :func:`deeper_backward_update`, :func:`first_layer_update`
(LLVM inlines them into the pass, which runs as fast as the one monolithic function it
replaced). :func:`row_nonzeros` and :func:`fill_csr` build the
CSR rows of the inputs.

The fused step
--------------
For a ReLU MLP with weights ``W_l`` (out x in, PyTorch's layout) and biases ``b_l``,
``l = 1..L``, one sample ``(x, y)`` and learning rate ``eta``:

forward::

    a_0 = x
    z_l = W_l a_{l-1} + b_l,      a_l = relu(z_l)        (l < L)
    z_L = W_L a_{L-1} + b_L       (the logits)
    p   = softmax(z_L),  computed as exp(z_L - m - lse) with m = max z_L,
                         lse = log sum exp(z_L - m)      (max subtraction: no overflow)
    loss = lse + m - z_L[y]   (cross-entropy),  prediction = argmax z_L (first maximum)

or, for real targets ``y`` (``Targets.squared``: bitflip regression, ``F.mse_loss``'s
mean over the n outputs), ``loss = (1/n) sum_j (z_L[j] - y_j)^2`` and no prediction.

backward (the gradient of the loss w.r.t. z_l is delta_l)::

    delta_L     = p - onehot(y)               (cross-entropy)
    delta_L     = (2/n) (z_L - y)             (squared error, :func:`squared_error_delta`)
    delta_{l-1} = (W_l^T delta_l) * 1[z_{l-1} > 0]       (l = L..2; a_{l-1} > 0 iff z_{l-1} > 0)

update (plain SGD)::

    W_l -= eta * delta_l a_{l-1}^T,     b_l -= eta * delta_l

All deltas use the *pre-update* weights, as autograd does (it computes every gradient
before ``optimizer.step()``): layer ``l``'s row loop first reads ``W_l[j, :]`` into
``W_l^T delta_l`` and only then overwrites it, and layer ``l-1`` is updated after its delta
has been formed. The sample is scored and its loss recorded before its update.

Where the time goes, and what is exploited
------------------------------------------
- **Sparse inputs.** MNIST-like images are ~80% zeros. ``W_1 x`` and the rank-1 update
  ``delta_1 x^T`` only touch the columns ``k`` with ``x_k != 0`` (a zero input changes
  neither the sum nor the weight: ``W + (-eta)(delta * 0) == W`` exactly). The nonzeros
  of ``x`` are precomputed once per data tensor as CSR rows (``indptr``, ``indices``,
  ``values``) and cached, since a task's data is reused for several epochs.
- **W_1 stored transposed** (in x out, a private copy) so that the column ``W_1[:, k]`` of
  a nonzero input is one contiguous row: both the forward ``z_1 += W_1^T[k] x_k`` and the
  update ``W_1^T[k] -= eta x_k delta_1`` become dense, vectorised loops over the output
  units. The engine copies it in at the start of each pass and writes it back into the
  model's weight at the end (also on error), so the model is always current between
  calls. The whole step is ~4x faster than with a first layer that gathers its nonzero
  columns from PyTorch's out x in layout (``benchmarks/fast_layouts.py``, timed by
  ``benchmarks/online_speed.py``). The forward sweeps four nonzeros per pass over ``z_1``
  (same summation order, a quarter of the loads and stores).
- **No dL/dx.** Layer 1's backward stops at its weight update.
- **One pass over each deeper W_l for backward and update:** for each row ``j`` with
  ``delta_l[j] != 0`` (ReLU zeroes roughly half of them, and a zero row changes nothing),
  ``dprev += W_l[j, :] delta_l[j]`` then ``W_l[j, :] -= eta delta_l[j] a_{l-1}``, four
  rows per sweep over ``dprev``. The forward computes four rows' dot products per sweep
  over ``a_{l-1}``.
- **Contiguous inner loops** over the last (memory-contiguous) axis everywhere; no array
  is sliced inside the loop (a slice is a reference-counted object).
- Tried and dropped: storing the deeper weights transposed too (so that inactive ReLU
  inputs skip whole rows in forward and backward) was no faster inside the full step,
  though faster in isolation; so they stay views of the parameters.

Per step on one core of the development machine (2-core AMD EPYC VM, MNIST-like data,
784-100-100-100-10): ~9 us, ~110,000 steps/s: first layer ~3 us (forward ~1.2, update
~1.5), each 100x100 layer ~2.4 us (backward ~1.4), classifier, softmax and loop ~0.8 us.

Numerics (why the results match the reference to float32 rounding)
------------------------------------------------------------------
Everything is float32, like the model. The gradient ``g = delta_j * a_k`` is rounded to
float32 and applied as ``W + (-eta) * g`` with a fused multiply-add, which is exactly how
PyTorch's ``param.add_(grad, alpha=-lr)`` computes it on the CPU; the bias gradient is
``delta`` itself. Only the forward dot products of the deeper layers are compiled with
reassociation (``fastmath={'reassoc', 'contract'}``) so they vectorise; their summation
order then differs from the BLAS that PyTorch calls, as any two BLAS libraries differ.
The result: from the same weights one step agrees with autograd to ~1e-7 relative, and
10,000 steps to ~1e-6 (tests/test_fast_engine.py). Like any change of summation order
(PyTorch itself summing with ``torch.sum`` instead of BLAS does the same), a rounding
difference can flip a ReLU whose pre-activation is within ~1e-7 of zero; on some
networks and data this then grows chaotically, and the two trajectories part while their
statistics (accuracy, loss) stay alike. Softmax, loss
and argmax follow PyTorch's float32 ``log_softmax`` / ``nll_loss`` / ``argmax`` (NaN counts
as the maximum, the first maximum wins). No other fast-math flag is used, so NaN/inf
propagate as in PyTorch.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Contraction lets LLVM use fused multiply-adds, as PyTorch's CPU kernels do. Only the
# forward dot products may also be reassociated (so that they vectorise); nowhere
# nnan/ninf/nsz/afn, so NaN and inf propagate as in PyTorch.
STEP_MATH = {"contract"}
DOT_MATH = {"contract", "reassoc"}


# --------------------------------------------------------------------------------------
# CSR rows of the inputs
# --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def row_nonzeros(x):
    """Number of nonzero entries of each row of a C-contiguous 2-D float32 array."""
    n, d = x.shape
    counts = np.empty(n, np.int64)
    for i in range(n):
        c = 0
        for k in range(d):
            c += x[i, k] != 0  # branchless: MNIST's zero pattern is unpredictable
        counts[i] = c
    return counts


@njit(cache=True, nogil=True)
def fill_csr(x, indptr, indices, values):
    """Write the nonzeros of each row of ``x`` at ``indptr[i]:indptr[i+1]``.

    Branchless compaction: every entry is written at the cursor, which advances only past
    nonzeros. The write past a row's last nonzero lands in the next row's first slot (later
    overwritten) or in the one spare slot at the end, which the caller allocates.
    """
    n, d = x.shape
    for i in range(n):
        p = indptr[i]
        for k in range(d):
            v = x[i, k]
            indices[p] = k
            values[p] = v
            p += v != 0


# --------------------------------------------------------------------------------------
# Dot products (the only reassociated sums)
# --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, fastmath=DOT_MATH)
def dot_row(w, j, a, l, n):
    """sum_k w[j, k] a[l, k] for k < n: row j of a weight times row l of the activations.

    Compiled with reassociation (``DOT_MATH``), so that LLVM may split the sum into SIMD
    partial sums; its order then differs from the BLAS that PyTorch calls, as two BLAS
    libraries differ from each other: float32 rounding.
    """
    acc = np.float32(0.0)
    for k in range(n):
        acc += w[j, k] * a[l, k]
    return acc


@njit(cache=True, nogil=True, fastmath=DOT_MATH)
def dot_rows4(w, j, a, l, n):
    """The dot products of rows j..j+3 of ``w`` with row l of ``a``: each ``a[l, k]`` is
    loaded once for four rows. Each sum is reassociated, as in :func:`dot_row`."""
    s0 = s1 = s2 = s3 = np.float32(0.0)
    for k in range(n):
        ak = a[l, k]
        s0 += w[j, k] * ak
        s1 += w[j + 1, k] * ak
        s2 += w[j + 2, k] * ak
        s3 += w[j + 3, k] * ak
    return s0, s1, s2, s3


# --------------------------------------------------------------------------------------
# The pieces of one step, in the order a sample goes through them
#
# Shared arguments: ``acts`` (layers x width) holds the activations, acts[0] = a_1 (first
# hidden layer), acts[l] = the output of ws[l-1], the last row the logits; ``delta`` is the
# gradient w.r.t. the current layer's pre-activation. The sample is row ``s`` of the dense
# inputs ``xd`` or, if ``sparse``, the CSR entries ``lo:hi`` of ``indices``/``values``.
# Arrays are indexed element-wise, never sliced, inside the loops: a slice is a new array
# object whose reference counting would cost more than the arithmetic.
# --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def first_layer_forward(w1t, b1, acts, sparse, indices, values, xd, s, lo, hi):
    """a_1 = relu(W_1 x + b_1) into ``acts[0]``, over the nonzero inputs only, from the
    transposed first-layer weight ``w1t`` (in x out): each nonzero input adds a contiguous
    row of ``w1t``, a vectorised axpy."""
    zero = np.float32(0.0)
    h1 = b1.shape[0]
    for j in range(h1):
        acts[0, j] = zero
    if sparse:
        # Four nonzeros per sweep, so that a_1 is loaded and stored once per four (same
        # summation order as one at a time).
        p = lo
        while p + 4 <= hi:
            k0, k1, k2, k3 = indices[p], indices[p + 1], indices[p + 2], indices[p + 3]
            v0, v1, v2, v3 = values[p], values[p + 1], values[p + 2], values[p + 3]
            for j in range(h1):
                acts[0, j] = (
                    ((acts[0, j] + w1t[k0, j] * v0) + w1t[k1, j] * v1) + w1t[k2, j] * v2
                ) + w1t[k3, j] * v3
            p += 4
        while p < hi:
            k = indices[p]
            v = values[p]
            for j in range(h1):
                acts[0, j] += w1t[k, j] * v
            p += 1
    else:
        for k in range(xd.shape[1]):
            v = xd[s, k]
            if v != zero:
                for j in range(h1):
                    acts[0, j] += w1t[k, j] * v
    for j in range(h1):
        z = acts[0, j] + b1[j]
        acts[0, j] = zero if z < zero else z  # relu; NaN passes, as in torch


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def deeper_forward(ws, bs, acts):
    """z_l = W_l a_{l-1} + b_l for the deeper layers (ws, bs; the classifier last), relu on
    all but the classifier; the logits end in ``acts[len(ws)]``."""
    zero = np.float32(0.0)
    n_dense = len(ws)
    for l in range(n_dense):
        w = ws[l]
        b = bs[l]
        n_out, n_in = w.shape
        hidden = l < n_dense - 1
        j = 0
        while j + 4 <= n_out:  # four rows at a time: each a_{l-1}[k] is loaded once
            z0, z1, z2, z3 = dot_rows4(w, j, acts, l, n_in)
            acts[l + 1, j] = z0 + b[j]
            acts[l + 1, j + 1] = z1 + b[j + 1]
            acts[l + 1, j + 2] = z2 + b[j + 2]
            acts[l + 1, j + 3] = z3 + b[j + 3]
            j += 4
        while j < n_out:
            acts[l + 1, j] = dot_row(w, j, acts, l, n_in) + b[j]
            j += 1
        if hidden:
            for j in range(n_out):
                if acts[l + 1, j] < zero:  # relu; NaN passes, as in torch
                    acts[l + 1, j] = zero


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def score_and_output_delta(logits, row, n_cls, yi, delta):
    """Prediction and log-probability of label ``yi`` from ``logits[row, :n_cls]``, and
    delta_L = softmax(z_L) - onehot(yi) into ``delta``; returns ``(prediction, log_p)``.

    As PyTorch's float32 ``argmax`` / ``log_softmax``: the first maximum wins, NaN beats
    everything; log_softmax = (z - m) - lse with m = max z and lse = log sum exp(z - m).
    """
    m = logits[row, 0]
    pred = 0
    for c in range(1, n_cls):
        v = logits[row, c]
        # torch.argmax: the first maximum; NaN beats everything, the first NaN wins.
        if (v > m or v != v) and m == m:  # noqa: PLR0124 (NaN tests)
            m = v
            pred = c
    ssum = np.float32(0.0)
    for c in range(n_cls):
        ssum += math.exp(logits[row, c] - m)
    lse = np.float32(math.log(ssum))
    for c in range(n_cls):
        delta[c] = np.float32(math.exp((logits[row, c] - m) - lse))
    delta[yi] -= np.float32(1.0)
    return pred, float((logits[row, yi] - m) - lse)


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def deeper_forward_and_score(ws, bs, acts, n_cls, yi, delta):
    """:func:`deeper_forward`, then :func:`score_and_output_delta` of label ``yi``: returns
    ``(1 if the prediction is yi else 0, the cross-entropy -log p(yi))``."""
    deeper_forward(ws, bs, acts)
    pred, log_p = score_and_output_delta(acts, len(ws), n_cls, yi, delta)
    return 1 if pred == yi else 0, -log_p


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def squared_error_delta(outputs, row, n_out, target, delta):
    """delta_L = (z_L - y) * (2 / n) into ``delta`` (n = ``n_out``) and the returned loss
    mean_c (z_c - y_c)^2, as PyTorch's float32 ``F.mse_loss`` (mean reduction) and its
    backward ``(z - y) * (2 / n)`` compute them for one sample."""
    norm = np.float32(2.0 / n_out)
    total = np.float32(0.0)
    for c in range(n_out):
        e = outputs[row, c] - target[c]
        total += e * e
        delta[c] = e * norm
    return float(total / np.float32(n_out))


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def deeper_forward_and_loss(ws, bs, acts, targets, s, delta):
    """:func:`deeper_forward`, then the loss of sample ``s`` against ``targets``
    (:class:`~plasticollapse.engines.fast_forms.Targets`) and its output delta: returns
    ``(1 if predicted right else 0, loss)``; a regression predicts nothing right (0)."""
    n_out = ws[len(ws) - 1].shape[0]
    if targets.squared:
        deeper_forward(ws, bs, acts)
        return 0, squared_error_delta(acts, len(ws), n_out, targets.values[s], delta)
    return deeper_forward_and_score(ws, bs, acts, n_out, targets.labels[s], delta)


@njit(cache=True, nogil=True)
def backward_layer(ws, bs, l, nlr, nlr_head, dprev):
    """Deeper layer l's ``(W_l, b_l, -eta_l)`` for its backward step (the classifier's
    learning rate is ``nlr_head``), with ``dprev`` zeroed over its inputs."""
    w = ws[l]
    for k in range(w.shape[1]):
        dprev[k] = np.float32(0.0)
    return w, bs[l], nlr_head if l == len(ws) - 1 else nlr


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def deeper_backward_update(ws, bs, acts, delta, dprev, active, nlr, nlr_head):
    """Top down through the deeper layers: dprev = W_l^T delta_l with the pre-update W_l,
    then W_l -= eta delta_l a_{l-1}^T and b_l -= eta delta_l (``nlr`` = -eta; the
    classifier's is ``nlr_head``: 0 for a fixed head, which ``w + 0 * g`` leaves exactly
    as it is); leaves delta_1 (the first hidden layer's) in ``delta``."""
    zero = np.float32(0.0)
    for l in range(len(ws) - 1, -1, -1):
        w, b, nlr_l = backward_layer(ws, bs, l, nlr, nlr_head, dprev)
        n_out, n_in = w.shape
        # Rows with delta_l[j] == 0 (inactive ReLUs) change neither W_l nor dprev: skip.
        n_act = 0
        for j in range(n_out):
            if delta[j] != zero:
                active[n_act] = j
                n_act += 1
        q = 0
        while q + 4 <= n_act:  # four rows at a time: dprev[k] is loaded/stored once
            j0, j1, j2, j3 = active[q], active[q + 1], active[q + 2], active[q + 3]
            d0, d1, d2, d3 = delta[j0], delta[j1], delta[j2], delta[j3]
            b[j0] = b[j0] + nlr_l * d0
            b[j1] = b[j1] + nlr_l * d1
            b[j2] = b[j2] + nlr_l * d2
            b[j3] = b[j3] + nlr_l * d3
            for k in range(n_in):
                ak = acts[l, k]
                w0, w1_, w2, w3 = w[j0, k], w[j1, k], w[j2, k], w[j3, k]
                # pre-update weights into dprev, rows in ascending order
                dprev[k] = (((dprev[k] + w0 * d0) + w1_ * d1) + w2 * d2) + w3 * d3
                # float32 gradient d*a, then w + (-eta) g with an fma, as torch does
                w[j0, k] = w0 + nlr_l * (d0 * ak)
                w[j1, k] = w1_ + nlr_l * (d1 * ak)
                w[j2, k] = w2 + nlr_l * (d2 * ak)
                w[j3, k] = w3 + nlr_l * (d3 * ak)
            q += 4
        while q < n_act:
            j = active[q]
            dj = delta[j]
            b[j] = b[j] + nlr_l * dj
            for k in range(n_in):
                wk = w[j, k]
                dprev[k] += wk * dj
                w[j, k] = wk + nlr_l * (dj * acts[l, k])
            q += 1
        for k in range(n_in):
            delta[k] = dprev[k] if acts[l, k] > zero else zero  # relu'(z) = 1[a > 0]


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def first_layer_update(w1t, b1, delta, sparse, indices, values, xd, s, lo, hi, nlr):
    """W_1 -= eta delta_1 x^T and b_1 -= eta delta_1 (``nlr`` = -eta), over the nonzero
    inputs only: each one updates a contiguous row of ``w1t``. No dL/dx is formed."""
    zero = np.float32(0.0)
    h1 = b1.shape[0]
    for j in range(h1):
        b1[j] = b1[j] + nlr * delta[j]
    if sparse:
        for p in range(lo, hi):
            k = indices[p]
            v = values[p]
            for j in range(h1):
                w1t[k, j] = w1t[k, j] + nlr * (delta[j] * v)
    else:
        for k in range(xd.shape[1]):
            v = xd[s, k]
            if v != zero:
                for j in range(h1):
                    w1t[k, j] = w1t[k, j] + nlr * (delta[j] * v)


# --------------------------------------------------------------------------------------
# The pass
# --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def step_buffers(h1, ws):
    """Zeroed work arrays of one step: ``(acts, delta, dprev, active)``, as wide as the
    widest layer (``h1`` the first hidden layer's width, ``ws`` the deeper weights)."""
    n_dense = len(ws)
    width = h1
    for l in range(n_dense):
        width = max(width, ws[l].shape[0])
    acts = np.zeros((n_dense + 1, width), np.float32)
    delta = np.zeros(width, np.float32)
    dprev = np.zeros(width, np.float32)
    active = np.zeros(width, np.int64)
    return acts, delta, dprev, active


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def train_pass(net, inputs, targets, order, lr, head_lr):  # pragma: no cover - compiled
    """One prequential SGD pass over ``order``; returns ``(correct, loss_sum)``.

    ``net`` (:class:`~plasticollapse.engines.fast_forms.Network`): ``w1t`` the first
    layer's weight transposed (in x h1), ``b1`` its bias, ``ws``/``bs`` the deeper layers'
    weights (out x in) and biases, the classifier last; all updated in place. ``inputs``
    (:class:`~plasticollapse.engines.fast_forms.Inputs`): CSR rows (``indptr``,
    ``indices``, ``values``) if ``sparse``, else the dense rows ``xd``. Each sample is
    scored and its loss recorded before its update. ``targets``
    (:class:`~plasticollapse.engines.fast_forms.Targets`): class labels (the
    cross-entropy) or regression targets (the squared error). ``head_lr`` is the
    classifier's learning rate (``lr``, or 0 for a fixed head). Covered through FastEngine
    in tests.
    """
    w1t, b1, ws, bs = net.w1t, net.b1, net.ws, net.bs
    sparse, indptr, indices, values, xd = (
        inputs.sparse, inputs.indptr, inputs.indices, inputs.values, inputs.xd
    )  # fmt: skip
    nlr = np.float32(-lr)
    nlr_head = np.float32(-head_lr)
    acts, delta, dprev, active = step_buffers(b1.shape[0], ws)
    correct = 0
    loss_sum = 0.0
    for t in range(order.shape[0]):
        s = order[t]
        lo = indptr[s] if sparse else 0
        hi = indptr[s + 1] if sparse else 0
        first_layer_forward(w1t, b1, acts, sparse, indices, values, xd, s, lo, hi)
        hit, loss = deeper_forward_and_loss(ws, bs, acts, targets, s, delta)
        correct += hit
        loss_sum += loss
        deeper_backward_update(ws, bs, acts, delta, dprev, active, nlr, nlr_head)
        first_layer_update(w1t, b1, delta, sparse, indices, values, xd, s, lo, hi, nlr)
    return correct, loss_sum
