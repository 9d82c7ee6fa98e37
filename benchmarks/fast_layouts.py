"""A second weight layout for the fast engine, kept only to time against the package's.

The package's :class:`~plasticollapse.engines.fast.FastEngine` trains the first layer on a
transposed copy of W_1 (in x out): each nonzero input ``x_k`` then touches one contiguous
row ``W_1^T[k]``, in the forward (``z_1 += W_1^T[k] x_k``) and in the update. The obvious
alternative keeps W_1 in PyTorch's own out x in layout, trained in place through a view of
the parameter with nothing copied, and *gathers* the nonzero columns instead: for each
output unit j, ``z_1[j] = sum_p W_1[j, indices[p]] values[p]`` and
``W_1[j, indices[p]] -= eta delta_1[j] values[p]``. :class:`GatheredFastEngine` is that
alternative; ``benchmarks/online_speed.py`` reports how much slower it is (~4x for the
whole step on MNIST-like data), which is why the package runs the transposed layout only.

Both layouts share everything past the first layer (the package's compiled pieces in
:mod:`plasticollapse.engines.fast_kernels`) and the engine's preparation of the data and
parameters; :func:`check_same_training` confirms that they train alike before anything is
timed.

The kernels here are compiled without ``cache=True``: they inline the package's kernels, and
Numba's cache does not notice when a function in another file changes, so a cached copy
could time stale code. Compiling them takes a few seconds per benchmark run.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from numba import njit

from plasticollapse.engines import fast_kernels
from plasticollapse.engines.fast import FastEngine, inverse_permutation
from plasticollapse.engines.fast_kernels import STEP_MATH

# --------------------------------------------------------------------------------------
# The gathering first layer: W_1 (out x in), as PyTorch stores it
# --------------------------------------------------------------------------------------


@njit(nogil=True, fastmath=STEP_MATH)
def gathered_first_layer_forward(w1, b1, acts, sparse, indices, values, xd, s, lo, hi):
    """a_1 = relu(W_1 x + b_1) into ``acts[0]``: per output unit, a dot product gathered
    over the sample's nonzero columns (four partial sums) or, for dense inputs, a
    reassociated dot product with the whole row."""
    zero = np.float32(0.0)
    h1 = b1.shape[0]
    for j in range(h1):
        if sparse:
            s0 = s1 = s2 = s3 = zero
            p = lo
            while p + 4 <= hi:
                s0 += w1[j, indices[p]] * values[p]
                s1 += w1[j, indices[p + 1]] * values[p + 1]
                s2 += w1[j, indices[p + 2]] * values[p + 2]
                s3 += w1[j, indices[p + 3]] * values[p + 3]
                p += 4
            while p < hi:
                s0 += w1[j, indices[p]] * values[p]
                p += 1
            acts[0, j] = (s0 + s1) + (s2 + s3)
        else:
            acts[0, j] = fast_kernels.dot_row(w1, j, xd, s, xd.shape[1])
    for j in range(h1):
        z = acts[0, j] + b1[j]
        acts[0, j] = zero if z < zero else z  # relu; NaN passes, as in torch


@njit(nogil=True, fastmath=STEP_MATH)
def gathered_first_layer_update(w1, b1, delta, sparse, indices, values, xd, s, lo, hi, nlr):
    """W_1 -= eta delta_1 x^T and b_1 -= eta delta_1, row by row of W_1 (skipping units
    with delta_1[j] = 0), scattering into the sample's nonzero columns."""
    zero = np.float32(0.0)
    h1 = b1.shape[0]
    for j in range(h1):
        b1[j] = b1[j] + nlr * delta[j]
    for j in range(h1):
        dj = delta[j]
        if dj == zero:
            continue
        if sparse:
            for p in range(lo, hi):
                k = indices[p]
                w1[j, k] = w1[j, k] + nlr * (dj * values[p])
        else:
            for k in range(xd.shape[1]):
                w1[j, k] = w1[j, k] + nlr * (dj * xd[s, k])


@njit(nogil=True, fastmath=STEP_MATH)
def gathered_train_pass(net, inputs, targets, order, lr, head_lr):
    """:func:`plasticollapse.engines.fast_kernels.train_pass` with the gathering first
    layer: same arguments, except that ``net.w1t`` is W_1 in PyTorch's layout (out x in)."""
    w1, b1, ws, bs = net.w1t, net.b1, net.ws, net.bs
    sparse, indptr, indices, values, xd = (
        inputs.sparse, inputs.indptr, inputs.indices, inputs.values, inputs.xd
    )  # fmt: skip
    nlr = np.float32(-lr)
    nlr_head = np.float32(-head_lr)
    acts, delta, dprev, active = fast_kernels.step_buffers(b1.shape[0], ws)
    n_dense = len(ws)
    n_cls = ws[n_dense - 1].shape[0]
    correct = 0
    loss_sum = 0.0
    for t in range(order.shape[0]):
        s = order[t]
        lo = indptr[s] if sparse else 0
        hi = indptr[s + 1] if sparse else 0
        gathered_first_layer_forward(w1, b1, acts, sparse, indices, values, xd, s, lo, hi)
        fast_kernels.deeper_forward(ws, bs, acts)
        yi = targets.labels[s]  # classifiers only
        pred, log_p = fast_kernels.score_and_output_delta(acts, n_dense, n_cls, yi, delta)
        loss_sum -= log_p
        if pred == yi:
            correct += 1
        fast_kernels.deeper_backward_update(ws, bs, acts, delta, dprev, active, nlr, nlr_head)
        gathered_first_layer_update(w1, b1, delta, sparse, indices, values, xd, s, lo, hi, nlr)
    return correct, loss_sum


# --------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------


class GatheredFastEngine(FastEngine):
    """:class:`~plasticollapse.engines.fast.FastEngine` with W_1 trained in place, in
    PyTorch's layout, through a view of the parameter (copied only to permute its columns
    when ``train`` is given ``columns``)."""

    _train_pass = staticmethod(gathered_train_pass)

    @staticmethod
    def _first_layer_in(w1: np.ndarray, perm: np.ndarray | None) -> np.ndarray:
        if perm is None:
            return w1  # the parameter's own memory: nothing to write back
        return np.ascontiguousarray(w1[:, inverse_permutation(perm)])

    @staticmethod
    def _first_layer_out(first: np.ndarray, w1: np.ndarray, perm: np.ndarray | None) -> None:
        if first is not w1:
            w1[...] = first[:, perm]


def check_same_training(model: torch.nn.Module, x, y, order, rtol: float = 1e-4) -> float:
    """Train copies of ``model`` over ``x[order]`` with both layouts and return the largest
    relative difference of their parameters; raise if it exceeds ``rtol`` or the online
    statistics differ by more than two predictions, since the timings would then compare
    engines that do not do the same work. The two layouts sum the first layer in different
    orders, so they agree to float32 rounding, not bit for bit."""
    views, gathered = copy.deepcopy(model), copy.deepcopy(model)
    a = FastEngine(views, 0.01).train(x, y, order)
    b = GatheredFastEngine(gathered, 0.01).train(x, y, order)
    worst = 0.0
    for p, q in zip(views.parameters(), gathered.parameters(), strict=True):
        p, q = p.detach().double(), q.detach().double()
        worst = max(worst, float((p - q).norm() / p.norm().clamp_min(1e-30)))
    if worst > rtol or abs(a.correct - b.correct) > 2:
        raise AssertionError(
            f"the gathered layout trains differently: parameters differ by {worst:.1e} "
            f"(relative), correct {a.correct} vs {b.correct}"
        )
    return worst
