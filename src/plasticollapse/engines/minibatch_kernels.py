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
Each product of the step is one SGEMM (:func:`~plasticollapse.engines.blas.gemm` into
preallocated arrays: PyTorch's MKL where it has one, ~2x SciPy's OpenBLAS of ``np.dot`` at
these shapes; :class:`~plasticollapse.engines.minibatch.MiniBatchEngine` runs it on one
thread): per layer ``A_l = A_{l-1} W_l^T`` forward, ``D_{l-1} = D_l W_l`` and
``G_l = D_l^T A_{l-1}`` backward (plain SGD: ``W_l <- -eta G_l + W_l`` as that product's own
``beta = 1``, so G_l is never stored; with decay or pull, G_l first, then the formula above),
with W_1 stored transposed (in x out, as in the batch-1
engine, its rows permuted with the pass's columns) so that ``X W_1^T`` and its gradient
``X^T D_1`` are products of contiguous arrays. The batch's inputs are gathered into one
dense B x 784 array (from the CSR rows or the dense rows). Nothing is allocated in a step
(the last, partial batch of a pass gets arrays of its size once).

Why dense, although the studies' inputs (pixels in [0, 1], not normalised) are ~50% zero on
Fashion-MNIST (~19% nonzero on MNIST): the first layer's forward and weight gradient over
the nonzeros only (CSR rows, a CSC of the batch; the engine before this one) is half the
FLOPs but ran at ~20 GFLOP/s in Numba's loops, against 58-95 GFLOP/s for one-thread SGEMM
at these shapes; measured (benchmarks/minibatch_speed.py, thread CPU time, two runs three
minutes apart at load ~4 on the shared 2-core machine): 85,000 -> 90,000 samples/s on
random labels' 784-100-100-10 at batch 16, 57,000 -> 128,000 on class-incremental's
784-100-100-100-10 at batch 90 (with Continual Backprop: 62,000 -> 81,000 and 58,000 ->
121,000). The step's time is then mostly its SGEMMs: with MKL's, on an AVX-512 Xeon, 55%
(batch 16) and 59% (batch 90) of the one-thread roof, against 34% and 53% through
``np.dot`` in the same benchmark.

Numerics: float32 throughout, like the model; the elementwise work (biases, ReLU, softmax,
update) in the order of the formulas, the products summed in BLAS's order, as autograd's
are (in another BLAS's order): float32 rounding apart (tests/test_minibatch_engine.py: one
step against float64, and teacher-forced shadowing, tests/shadow.py).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from plasticollapse.engines.blas import gemm, gemm_work
from plasticollapse.engines.fast_kernels import STEP_MATH
from plasticollapse.engines.minibatch_cbp_kernels import batch_cbp_step, cbp_scratch

#: The most negative float32: ``torch.finfo(torch.float32).min``, the masked logits' value.
MASKED = np.float32(np.finfo(np.float32).min)


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def _decayed(w, g, a, nlr, decay, pull):
    """``w + nlr * ((g + pull (w - a)) + decay w)``: SGD's order (gradients summed, then the
    decay added); with decay = pull = 0 it is ``w + nlr * g`` exactly."""
    return w + nlr * ((g + pull * (w - a)) + decay * w)


@njit(cache=True, nogil=True)
def step_buffers(nb, n_in, ws, h1):
    """The step's work arrays for a batch of ``nb``: the batch's dense inputs (nb x n_in),
    each layer's activations (nb x width; logits last), deltas and weight gradients (the
    first layer's transposed, n_in x h1, as W_1^T)."""
    xb = np.zeros((nb, n_in), np.float32)
    acts = [np.zeros((nb, h1), np.float32)]
    deltas = [np.zeros((nb, h1), np.float32)]
    grads = [np.zeros((n_in, h1), np.float32)]
    for l in range(len(ws)):
        acts.append(np.zeros((nb, ws[l].shape[0]), np.float32))
        deltas.append(np.zeros((nb, ws[l].shape[0]), np.float32))
        grads.append(np.zeros(ws[l].shape, np.float32))
    return xb, acts, deltas, grads


@njit(cache=True, nogil=True)
def gather_inputs(xb, sparse, indptr, indices, values, xd, order, lo):
    """``xb[i] = x_{order[lo + i]}``, dense, from the CSR rows or the dense rows."""
    zero = np.float32(0.0)
    for i in range(xb.shape[0]):
        s = order[lo + i]
        if sparse:
            for k in range(xb.shape[1]):
                xb[i, k] = zero
            for p in range(indptr[s], indptr[s + 1]):
                xb[i, indices[p]] = values[p]
        else:
            for k in range(xb.shape[1]):
                xb[i, k] = xd[s, k]


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def add_bias(z, b, relu):
    """``z[i] += b`` for every sample, then the ReLU if ``relu`` (NaN passes, as in torch)."""
    zero = np.float32(0.0)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            v = z[i, j] + b[j]
            z[i, j] = zero if (relu and v < zero) else v


@njit(cache=True, nogil=True)
def forward(w1t, b1, ws, bs, xb, acts, work):
    """``acts[0] = relu(x W_1^T + b_1)``, ``acts[l + 1] = relu(acts[l] W_{l+1}^T +
    b_{l+1})``, no ReLU on the logits ``acts[-1]``: one SGEMM per layer."""
    one, zero = np.float32(1.0), np.float32(0.0)
    gemm(xb, False, w1t, False, acts[0], one, zero, work)
    add_bias(acts[0], b1, True)
    for l in range(len(ws)):
        gemm(acts[l], False, ws[l], True, acts[l + 1], one, zero, work)
        add_bias(acts[l + 1], bs[l], l < len(ws) - 1)


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def score_batch(logits, present, y, order, lo, delta):
    """Mask, score and output delta of the batch (module docstring): returns ``(correct,
    loss)`` with ``loss`` the batch's mean cross-entropy in float32, as ``F.cross_entropy``;
    ``delta`` = dloss/dz_L."""
    nb, n_cls = logits.shape
    s = np.float32(-1.0) / np.float32(nb)
    correct = 0
    total = np.float32(0.0)
    for i in range(nb):
        for c in range(n_cls):
            if not present[c]:
                logits[i, c] = MASKED  # as MaskedLinear's masked_fill
        m = logits[i, 0]
        pred = 0
        for c in range(1, n_cls):
            v = logits[i, c]
            # torch.argmax: the first maximum; NaN beats everything, the first NaN wins.
            if (v > m or v != v) and m == m:  # noqa: PLR0124 (NaN tests)
                m = v
                pred = c
        ssum = np.float32(0.0)
        for c in range(n_cls):
            ssum += math.exp(logits[i, c] - m)
        lse = np.float32(math.log(ssum))
        yi = y[order[lo + i]]
        correct += 1 if pred == yi else 0
        total += -((logits[i, yi] - m) - lse)
        for c in range(n_cls):
            p = np.float32(math.exp((logits[i, c] - m) - lse))
            delta[i, c] = -(p * s)
        delta[i, yi] = s - np.float32(math.exp((logits[i, yi] - m) - lse)) * s
    return correct, total / np.float32(nb)


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def relu_mask(delta, acts):
    """``delta *= 1[acts > 0]``: the ReLU's backward (acts are its outputs)."""
    zero = np.float32(0.0)
    for i in range(delta.shape[0]):
        for j in range(delta.shape[1]):
            if not acts[i, j] > zero:
                delta[i, j] = zero


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def sgd_update(w, g, a, nlr, decay, pull):
    """``w <- w + nlr ((g + pull (w - a)) + decay w)`` entrywise (:func:`_decayed`; plain
    SGD never comes here: :func:`weight_update` folds it into the gradient's product)."""
    for j in range(w.shape[0]):
        for k in range(w.shape[1]):
            w[j, k] = _decayed(w[j, k], g[j, k], a[j, k], nlr, decay, pull)


@njit(cache=True, nogil=True)
def weight_update(w, left, right, g, a, nlr, decay, pull, work):
    """The SGD update of ``w`` by its gradient ``G = left^T right`` (``g``: G's buffer).
    Plain SGD as one SGEMM, ``w <- nlr left^T right + w`` (BLAS's beta = 1: G is never
    stored); with decay or pull, G into ``g``, then :func:`sgd_update`'s formula."""
    if decay == np.float32(0.0) and pull == np.float32(0.0):
        gemm(left, True, right, False, w, nlr, np.float32(1.0), work)
        return
    gemm(left, True, right, False, g, np.float32(1.0), np.float32(0.0), work)
    sgd_update(w, g, a, nlr, decay, pull)


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def bias_update(b, delta, a, nlr, decay, pull):
    """``b <- b + nlr ((sum_i delta_i + pull (b - a)) + decay b)`` (samples in batch order)."""
    for j in range(b.shape[0]):
        gb = np.float32(0.0)
        for i in range(delta.shape[0]):
            gb += delta[i, j]
        b[j] = _decayed(b[j], gb, a[j], nlr, decay, pull)


@njit(cache=True, nogil=True)
def backward_update(
    w1t, b1, ws, bs, a1t, ab1, aws, abs_, xb, acts, deltas, grads, nlr, nlr_head, decay, pull,
    work,
):  # fmt: skip  # pragma: no cover - compiled
    """Top down (``deltas[-1]`` holds dloss/dz_L): ``delta_{l-1} = (delta_l W_l) *
    1[a_{l-1} > 0]`` with the pre-update W_l, then ``G_l = delta_l^T a_{l-1}`` and the SGD
    update of W_l and b_l (``nlr`` = -eta; the classifier's ``nlr_head``, 0: frozen, not
    updated); last ``G_1^T = x^T delta_1`` into W_1^T's layout. One SGEMM per product."""
    deeper_backward_update(ws, bs, aws, abs_, acts, deltas, grads, nlr, nlr_head, decay, pull, work)
    weight_update(w1t, xb, deltas[0], grads[0], a1t, nlr, decay, pull, work)
    bias_update(b1, deltas[0], ab1, nlr, decay, pull)


@njit(cache=True, nogil=True)
def deeper_backward_update(
    ws, bs, aws, abs_, acts, deltas, grads, nlr, nlr_head, decay, pull, work
):  # pragma: no cover - compiled
    """:func:`backward_update` above the first layer: top down, ``delta_{l-1} = (delta_l
    W_l) * 1[a_{l-1} > 0]`` with the pre-update W_l, then W_l's and b_l's SGD update; ends
    with ``deltas[0]`` = dloss/dz_1 (the first layer's update is the caller's)."""
    zero, one = np.float32(0.0), np.float32(1.0)
    for l in range(len(ws) - 1, -1, -1):
        gemm(deltas[l + 1], False, ws[l], False, deltas[l], one, zero, work)
        relu_mask(deltas[l], acts[l])
        nlr_l = nlr_head if l == len(ws) - 1 else nlr
        if nlr_l != zero:
            weight_update(
                ws[l], deltas[l + 1], acts[l], grads[l + 1], aws[l], nlr_l, decay, pull, work
            )
            bias_update(bs[l], deltas[l + 1], abs_[l], nlr_l, decay, pull)


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def train_batches(
    net, inputs, y, order, start, batch, present, sgd, dp, cbp, cbp_pass, cursor,
):  # fmt: skip  # pragma: no cover - compiled; covered through MiniBatchEngine in tests
    """The prequential pass over ``order[start:]`` in mini-batches of ``batch`` (the last one
    may be smaller, as the reference's slicing gives): each batch is scored with the
    pre-update weights, then trained on (module docstring), then, when ``cbp.on``, put
    through Continual Backprop's generate-and-test
    (:func:`~plasticollapse.engines.minibatch_cbp_kernels.batch_cbp_step`).

    The groups are the fast engine's (:mod:`~plasticollapse.engines.fast_forms`):
    ``net`` (:class:`Network`: ``w1t`` W_1 transposed, in x h1; ``ws``/``bs`` the deeper
    layers, classifier last), ``inputs`` (CSR or dense rows), ``sgd`` (``head_lr`` 0 and
    ``head_frozen`` for a fixed classifier), ``dp`` (:class:`DecayPull`: decay, pull and
    the anchors, zeros without a pull; its scaled-layer fields unused here), ``cbp``
    (:class:`CbpState`, a placeholder when off) and ``cbp_pass`` (:class:`CbpPass`: the
    inverse column permutation and the uniform stream ``buffer[cursor:]``, of which a step
    takes at most ``need`` numbers; ``in_abs1`` unused here). ``present``: the classes the
    head scores.

    Returns ``(correct, loss_sum, stop, cursor)``: ``loss_sum`` = sum over batches of the
    batch's float32 mean loss times its size; the pass stopped before ``order[stop]``
    (``len(order)`` when done; earlier when fewer than ``need`` numbers were left).
    """
    w1t, b1, ws, bs = net.w1t, net.b1, net.ws, net.bs
    a1t, ab1, aws, abs_ = dp.a1t, dp.ab1, dp.aws, dp.abs_
    inv, has_perm, buffer, need = cbp_pass.inv, cbp_pass.has_perm, cbp_pass.buffer, cbp_pass.need
    n_dense = len(ws)
    n_in, h1 = w1t.shape
    width = h1
    for l in range(n_dense):
        width = max(width, ws[l].shape[0])
    xb, acts, deltas, grads = step_buffers(batch, n_in, ws, h1)
    mags, taken, chosen, nsel = cbp_scratch(n_dense, width)
    work = gemm_work()
    nlr = np.float32(-sgd.lr)
    nlr_head = np.float32(-sgd.head_lr)
    f_decay = np.float32(dp.decay)
    f_pull = np.float32(dp.pull)
    correct = 0
    loss_sum = 0.0
    n = order.shape[0]
    lo = start
    while lo < n:
        if cbp.on and buffer.shape[0] - cursor < need:
            break
        hi = min(lo + batch, n)
        nb = hi - lo
        if nb < xb.shape[0]:  # the pass's last, partial batch: buffers of its size
            xb, acts, deltas, grads = step_buffers(nb, n_in, ws, h1)
        gather_inputs(
            xb, inputs.sparse, inputs.indptr, inputs.indices, inputs.values, inputs.xd, order, lo
        )
        forward(w1t, b1, ws, bs, xb, acts, work)
        c, loss = score_batch(acts[n_dense], present, y, order, lo, deltas[n_dense])
        correct += c
        loss_sum += float(loss) * nb
        backward_update(
            w1t, b1, ws, bs, a1t, ab1, aws, abs_, xb, acts, deltas, grads, nlr, nlr_head,
            f_decay, f_pull, work,
        )  # fmt: skip
        if cbp.on:
            cursor = batch_cbp_step(
                w1t, b1, ws, bs, acts, nb, inv, has_perm, sgd.head_frozen, mags, taken, chosen,
                nsel, cbp, buffer, cursor,
            )  # fmt: skip
        lo = hi
    return correct, loss_sum, lo, cursor
