"""Full-batch SGD on one fixed batch, its first layer kept in the batch's span.

The plasticity probe (:func:`~plasticollapse.metrics.trainability.plasticity_score`) takes
n plain SGD steps of the mean cross-entropy on one fixed batch X (B x d, B = 256 samples)
of a ReLU MLP. Every gradient of the first layer's weight is a combination of the batch's
rows, ``dL/dW_1 = D_1^T X`` (D_1 = dL/dZ_1, B x h_1), so after t steps of rate eta::

    W_1(t) = W_1(0) + E(t)^T X,      E(t + 1) = E(t) - eta D_1(t)      (E(0) = 0, B x h_1)

and the first layer's pre-activations need no product with the d-wide weight::

    Z_1(t) = X W_1(t)^T + b_1 = Z_0 + G E(t) + b_1,   Z_0 = X W_1(0)^T,   G = X X^T (B x B)

Exact in real arithmetic for plain SGD (no decay, no momentum: what the probe takes). Z_0
and G are two products made once; a step's first layer is then one B x B x h_1 product
instead of two B x d x h_1 ones (forward and weight gradient), and W_1 is formed once at the
end, ``W_1 <- W_1 + E^T X``. On label_permuted's probe (d = 784, 784-300-150-10, B = 256)
a step's multiply-adds fall from ~156M to ~55M; ``benchmarks/probe_speed.py`` (one thread of
a 2-core AMD EPYC, 100 steps on 256 samples): 0.212 s against 0.570 for the mini-batch
engine's pass over the batch repeated and 0.698 on autograd (random_labels' 784-100-100-10:
0.070, 0.175, 0.271). The deeper layers, the loss, its gradient
and every update are the mini-batch engine's (:mod:`.minibatch_kernels`: the reference's
``F.cross_entropy`` mean, ``torch.optim.SGD``, a masked head's absent classes, a frozen
classifier not updated).

Rounding: float32 throughout, like the model; W_1 is never rounded between steps (E is),
and Z_1 sums G E + Z_0 instead of X W_1^T: another summation order than autograd's, float32
rounding apart, checked against autograd's steps in tests/test_full_batch.py.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit
from torch import nn

from plasticollapse.engines import fast
from plasticollapse.engines.blas import gemm, gemm_work
from plasticollapse.engines.minibatch import present_classes
from plasticollapse.engines.minibatch_kernels import (
    add_bias,
    bias_update,
    deeper_backward_update,
    score_batch,
)
from plasticollapse.metrics.threads import one_thread


@njit(cache=True, nogil=True)
def fixed_batch_pass(x, y, present, w1, b1, ws, bs, nlr, nlr_head, steps):  # pragma: no cover
    """``steps`` full-batch SGD steps (``nlr`` = -eta; the classifier's ``nlr_head``, 0:
    frozen) on the batch ``x`` (B x d) with labels ``y``, in place on W_1 (``w1``, out x in,
    PyTorch's layout), b_1 and the deeper layers ``ws``/``bs`` (classifier last), the first
    layer in the batch's span (module docstring). ``present``: the classes the head scores."""
    zero, one = np.float32(0.0), np.float32(1.0)
    nb, h1 = x.shape[0], w1.shape[0]
    work = gemm_work()
    order = np.arange(nb)
    z0 = np.empty((nb, h1), np.float32)
    gemm(x, False, w1, True, z0, one, zero, work)  # Z_0 = X W_1^T
    g = np.empty((nb, nb), np.float32)
    gemm(x, False, x, True, g, one, zero, work)  # G = X X^T
    e = np.zeros((nb, h1), np.float32)
    a1 = np.empty((nb, h1), np.float32)
    d1 = np.empty((nb, h1), np.float32)
    acts, deltas = [a1], [d1]
    unread = [w1]  # the gradient buffers plain SGD never reads: one per layer
    for l in range(len(ws)):
        acts.append(np.empty((nb, ws[l].shape[0]), np.float32))
        deltas.append(np.empty((nb, ws[l].shape[0]), np.float32))
        unread.append(ws[l])
    last = len(ws)
    for _ in range(steps):
        gemm(g, False, e, False, a1, one, zero, work)  # G E
        for i in range(nb):
            for j in range(h1):
                a1[i, j] += z0[i, j]
        add_bias(a1, b1, True)
        for l in range(len(ws)):
            gemm(acts[l], False, ws[l], True, acts[l + 1], one, zero, work)
            add_bias(acts[l + 1], bs[l], l < last - 1)
        score_batch(acts[last], present, y, order, 0, deltas[last])
        # Plain SGD: no decay or pull, so the anchors and gradient buffers are never read
        # (the weights themselves stand in for them).
        deeper_backward_update(
            ws, bs, ws, bs, acts, deltas, unread, nlr, nlr_head, zero, zero, work
        )  # fmt: skip
        bias_update(b1, d1, b1, nlr, zero, zero)
        for i in range(nb):
            for j in range(h1):
                e[i, j] += nlr * d1[i, j]  # E <- E - eta D_1
    gemm(e, True, x, False, w1, one, one, work)  # W_1 <- W_1 + E^T X


def fixed_batch_steps(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float
) -> None:
    """``steps`` full-batch plain SGD steps (rate ``lr``) of the mean cross-entropy on
    (x, y), in place, for a model the mini-batch engine runs (check it first:
    :func:`~plasticollapse.training.full_batch.compiled_steps_apply`)."""
    linears = fast._model_linears(model)
    if isinstance(linears, str):
        raise ValueError(f"the fixed-batch steps do not apply: {linears}")
    n_cls = linears[-1].out_features
    if steps <= 0 or len(x) == 0:
        return
    checked = fast.pass_arrays(x, y, torch.arange(len(x)), n_cls)
    assert checked is not None  # a non-empty batch
    _, labels, used = checked
    present = present_classes(model, used, n_cls)
    inputs = x.detach().cpu().reshape(len(x), -1).to(torch.float32).contiguous().numpy()
    if inputs.shape[1] != linears[0].in_features:
        raise ValueError(
            f"x has {inputs.shape[1]} features per sample, the model takes {linears[0].in_features}"
        )
    head_frozen = not linears[-1].weight.requires_grad  # the fixed ETF head
    params = [p for linear in linears for p in (linear.weight, linear.bias)]
    arrays = [fast._param_array(p) for p in params]
    weights = [a for a, _ in arrays[0::2]]
    biases = [a for a, _ in arrays[1::2]]
    nlr = np.float32(-lr)
    try:
        with one_thread():  # small products: one BLAS thread (metrics/threads.py)
            fixed_batch_pass(
                inputs, labels, present, weights[0], biases[0], tuple(weights[1:]),
                tuple(biases[1:]), nlr, np.float32(0.0) if head_frozen else nlr, int(steps),
            )  # fmt: skip
    finally:
        with torch.no_grad():
            fast.write_back(params, arrays)
