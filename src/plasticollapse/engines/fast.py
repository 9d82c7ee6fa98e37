"""The fast engine: a fused, compiled per-sample SGD step for ReLU MLPs on the CPU.

With batch size 1 the reference loop (autograd + ``torch.optim.SGD``) spends nearly all of
its time in per-step overhead: about 3,000 steps/s for the 784-100-100-100-10 MLP, so the
paper's Permuted MNIST study (~409 million updates) would take ~40 CPU-hours. This engine
runs the whole prequential pass inside one Numba-compiled function.

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

backward (the gradient of the loss w.r.t. z_l is delta_l)::

    delta_L     = p - onehot(y)
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
  units. It is copied in at the start of :meth:`FastEngine.train` and written back to the
  model's weight at the end (also on error), so the model is always current between
  calls. The whole step is ~4x faster than with a gathering first layer in the out x in
  layout (``FastEngine(..., layout="torch")``; see ``benchmarks/online_speed.py``). The
  forward sweeps four nonzeros per pass over ``z_1`` (same summation order, a quarter of
  the loads and stores).
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

Shared parameters
-----------------
On the CPU, ``linear.weight.detach().numpy()`` is a NumPy view of the parameter's own
memory. The compiled step writes into these views, so the model is updated in place and
nothing is copied back (except the transposed W_1). Views are taken afresh at every
:meth:`FastEngine.train` call, so a parameter that was replaced in between (e.g.
``linear.weight.data = ...``) is picked up; each view is checked to be C-contiguous,
float32, writable and to start at the parameter's ``data_ptr()``; a parameter that is not
contiguous is trained on a contiguous copy that is written back at the end. After a pass
every parameter's autograd version counter is bumped, as an in-place torch op would do.

Threads
-------
The step is single-threaded (no ``parallel=True``, no BLAS) and releases the GIL
(``nogil=True``). A study runs one run per process with one thread each, so W workers use
exactly W cores. ``cache=True`` writes the compiled code to ``__pycache__`` (or
``NUMBA_CACHE_DIR``): compilation (a few seconds) is paid once per machine and network
depth, later processes load it in well under a second.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit
from torch import nn

from plasticollapse.engines.stats import OnlineStats
from plasticollapse.models import MLP

__all__ = ["LAYOUTS", "FastEngine", "unsupported_reason", "warmup"]

#: Where :class:`FastEngine` keeps the weights during a pass (see its ``layout`` argument).
LAYOUTS = ("views", "torch")

#: Above this fraction of nonzero inputs, the first layer reads ``x`` densely (skipping
#: exact zeros on the fly) instead of building CSR rows, which would take more memory than x.
DENSE_THRESHOLD = 0.5

# Contraction lets LLVM use fused multiply-adds, as PyTorch's CPU kernels do. Only the
# forward dot products may also be reassociated (so that they vectorise); nowhere
# nnan/ninf/nsz/afn, so NaN and inf propagate as in PyTorch.
_STEP_MATH = {"contract"}
_DOT_MATH = {"contract", "reassoc"}


# --------------------------------------------------------------------------------------
# Applicability
# --------------------------------------------------------------------------------------


def _sequential_linears(seq: nn.Sequential) -> list[nn.Linear] | str:
    """Linear layers of ``[Flatten] Linear (ReLU Linear)*``, or why it is not that shape."""
    mods = list(seq)
    if mods and isinstance(mods[0], nn.Flatten):
        if (mods[0].start_dim, mods[0].end_dim) != (1, -1):
            return "its Flatten does not flatten to (N, features)"
        mods = mods[1:]
    linears: list[nn.Linear] = []
    expect_linear = True
    for m in mods:
        # Exact types: a subclass (LoRA linear, ...) may compute something else.
        if expect_linear and type(m) is nn.Linear:
            linears.append(m)
        elif not expect_linear and type(m) is nn.ReLU:
            pass
        else:
            return f"it is not Linear, ReLU, Linear, ..., Linear (found {type(m).__name__})"
        expect_linear = not expect_linear
    if not linears or expect_linear:
        return "it does not end in a Linear layer"
    return linears


def _model_linears(model: nn.Module) -> list[nn.Linear] | str:
    """The linear layers in forward order, or why the model's forward is not a plain ReLU
    MLP that the engine reproduces."""
    if isinstance(model, MLP):
        # A subclass may change what forward computes; only the stock forward is known.
        if type(model).forward is not MLP.forward or type(model).features is not MLP.features:
            return f"{type(model).__name__} overrides MLP.forward/features"
        mods = list(model.body)
        if len(mods) % 2:
            return "its body is not (Linear, ReLU) pairs"
        for i, m in enumerate(mods):
            want = nn.Linear if i % 2 == 0 else nn.ReLU
            if type(m) is not want:  # a subclass may compute something else
                return f"its body holds a {type(m).__name__} where a {want.__name__} belongs"
        return [*mods[::2], model.classifier]
    if isinstance(model, nn.Sequential):
        return _sequential_linears(model)
    return f"{type(model).__name__} is not a models.MLP or an nn.Sequential of Linear/ReLU"


def unsupported_reason(model: nn.Module, batch_size: int) -> str | None:
    """``None`` if :class:`FastEngine` reproduces the reference engine for this model and
    batch size; otherwise a short human-readable reason.

    Supported: a :class:`~plasticollapse.models.MLP`, or an ``nn.Sequential`` of
    ``[Flatten,] Linear, ReLU, ..., Linear`` with at least one hidden layer, all
    parameters float32 on the CPU, trainable, with biases, no hooks; batch size 1.
    """
    if batch_size != 1:
        return f"batch size is {batch_size} (the fast engine trains one sample per step)"
    linears = _model_linears(model)
    if isinstance(linears, str):
        return linears
    if len(linears) < 2:
        return "it has no hidden layer (the fast engine needs at least one)"
    params = list(model.parameters())
    n_expected = 2 * len(linears)
    if len({id(p) for p in params}) != n_expected or len(params) != n_expected:
        return "its parameters are not exactly one weight and one bias per Linear"
    for i, lin in enumerate(linears):
        if lin.bias is None:
            return f"Linear layer {i} has no bias"
        if i and lin.in_features != linears[i - 1].out_features:
            return f"Linear layer {i} does not chain to layer {i - 1}"
    for p in params:
        if p.device.type != "cpu":
            return f"the model is on {p.device} (the fast engine runs on the CPU)"
        if p.dtype != torch.float32:
            return f"its parameters are {p.dtype}, not float32"
        if not p.requires_grad:
            return "some parameters are frozen (requires_grad=False)"
    for m in model.modules():
        if (
            m._forward_hooks
            or m._forward_pre_hooks
            or m._backward_hooks
            or getattr(m, "_backward_pre_hooks", None)
        ):
            return "it has forward/backward hooks, which the fast engine would bypass"
    for p in params:
        if getattr(p, "_backward_hooks", None) or getattr(p, "_post_accumulate_grad_hooks", None):
            return "a parameter has gradient hooks, which the fast engine would bypass"
    return None


# --------------------------------------------------------------------------------------
# Compiled kernels
# --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _row_nonzeros(x):
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
def _fill_csr(x, indptr, indices, values):
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


@njit(cache=True, nogil=True, fastmath=_DOT_MATH)
def _dot_row(w, j, a, l, n):
    """sum_k w[j, k] a[l, k] for k < n: row j of a weight times row l of the activations.

    The only function compiled with reassociation (``_DOT_MATH``), so that LLVM may split
    the sum into SIMD partial sums; its order then differs from the BLAS that PyTorch
    calls, as two BLAS libraries differ from each other: float32 rounding.
    """
    acc = np.float32(0.0)
    for k in range(n):
        acc += w[j, k] * a[l, k]
    return acc


@njit(cache=True, nogil=True, fastmath=_DOT_MATH)
def _dot_rows4(w, j, a, l, n):
    """The dot products of rows j..j+3 of ``w`` with row l of ``a``: each ``a[l, k]`` is
    loaded once for four rows. Each sum is reassociated, as in :func:`_dot_row`."""
    s0 = s1 = s2 = s3 = np.float32(0.0)
    for k in range(n):
        ak = a[l, k]
        s0 += w[j, k] * ak
        s1 += w[j + 1, k] * ak
        s2 += w[j + 2, k] * ak
        s3 += w[j + 3, k] * ak
    return s0, s1, s2, s3


@njit(cache=True, nogil=True, fastmath=_STEP_MATH)
def _train_pass(
    w1, w1_transposed, b1, ws, bs, sparse, indptr, indices, values, xd, y, order, lr
):  # pragma: no cover - compiled; covered through FastEngine in tests
    """One prequential SGD pass over ``order``; returns ``(correct, loss_sum)``.

    ``w1``: first layer weight, (in x h1) if ``w1_transposed`` else (h1 x in); ``b1``: its
    bias. ``ws``/``bs``: the deeper layers' weights (out x in) and biases, the classifier
    last. Inputs are CSR rows (``indptr``, ``indices``, ``values``) if ``sparse``, else the
    dense rows ``xd``. All parameter arrays are updated in place.

    Arrays are indexed element-wise, never sliced, inside the loops: a slice is a new
    array object whose reference counting would cost more than the arithmetic.
    """
    nlr = np.float32(-lr)
    zero = np.float32(0.0)
    one = np.float32(1.0)
    h1 = b1.shape[0]
    n_in1 = xd.shape[1]
    n_dense = len(ws)
    width = h1
    for l in range(n_dense):
        width = max(width, ws[l].shape[0])
    # acts[0] = a_1 (first hidden layer); acts[l] = output of ws[l-1]; acts[n_dense] = logits.
    acts = np.zeros((n_dense + 1, width), np.float32)
    delta = np.zeros(width, np.float32)
    dprev = np.zeros(width, np.float32)
    active = np.zeros(width, np.int64)
    n_cls = ws[n_dense - 1].shape[0]
    correct = 0
    loss_sum = 0.0
    for t in range(order.shape[0]):
        s = order[t]
        lo = indptr[s] if sparse else 0
        hi = indptr[s + 1] if sparse else 0
        # ---- layer 1 forward: z_1 = W_1 x + b_1 over the nonzero inputs only
        if w1_transposed:
            for j in range(h1):
                acts[0, j] = zero
            if sparse:
                # Contiguous rows k of W_1^T: vectorised axpys, four nonzeros per sweep so
                # that a_1 is loaded and stored once per four (same summation order).
                p = lo
                while p + 4 <= hi:
                    k0, k1, k2, k3 = indices[p], indices[p + 1], indices[p + 2], indices[p + 3]
                    v0, v1, v2, v3 = values[p], values[p + 1], values[p + 2], values[p + 3]
                    for j in range(h1):
                        acts[0, j] = (
                            ((acts[0, j] + w1[k0, j] * v0) + w1[k1, j] * v1) + w1[k2, j] * v2
                        ) + w1[k3, j] * v3
                    p += 4
                while p < hi:
                    k = indices[p]
                    v = values[p]
                    for j in range(h1):
                        acts[0, j] += w1[k, j] * v
                    p += 1
            else:
                for k in range(n_in1):
                    v = xd[s, k]
                    if v != zero:
                        for j in range(h1):
                            acts[0, j] += w1[k, j] * v
        else:
            for j in range(h1):
                if sparse:  # gathered dot product over the nonzeros, 4 partial sums
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
                    acts[0, j] = _dot_row(w1, j, xd, s, n_in1)
        for j in range(h1):
            z = acts[0, j] + b1[j]
            acts[0, j] = zero if z < zero else z  # relu; NaN passes, as in torch
        # ---- deeper layers forward: z_l = W_l a_{l-1} + b_l
        for l in range(n_dense):
            w = ws[l]
            b = bs[l]
            n_out, n_in = w.shape
            hidden = l < n_dense - 1
            j = 0
            while j + 4 <= n_out:  # four rows at a time: each a_{l-1}[k] is loaded once
                z0, z1, z2, z3 = _dot_rows4(w, j, acts, l, n_in)
                acts[l + 1, j] = z0 + b[j]
                acts[l + 1, j + 1] = z1 + b[j + 1]
                acts[l + 1, j + 2] = z2 + b[j + 2]
                acts[l + 1, j + 3] = z3 + b[j + 3]
                j += 4
            while j < n_out:
                acts[l + 1, j] = _dot_row(w, j, acts, l, n_in) + b[j]
                j += 1
            if hidden:
                for j in range(n_out):
                    if acts[l + 1, j] < zero:  # relu; NaN passes, as in torch
                        acts[l + 1, j] = zero
        # ---- score, loss, delta_L = softmax(z_L) - onehot(y), all before any update
        m = acts[n_dense, 0]
        pred = 0
        for c in range(1, n_cls):
            v = acts[n_dense, c]
            # torch.argmax: the first maximum; NaN beats everything, the first NaN wins.
            if (v > m or v != v) and m == m:  # noqa: PLR0124 (NaN tests)
                m = v
                pred = c
        ssum = zero
        for c in range(n_cls):
            ssum += math.exp(acts[n_dense, c] - m)
        lse = np.float32(math.log(ssum))
        yi = y[s]
        # torch: log_softmax = (z - m) - lse, loss = -log_softmax[y], p = exp(log_softmax)
        loss_sum -= float((acts[n_dense, yi] - m) - lse)
        if pred == yi:
            correct += 1
        for c in range(n_cls):
            delta[c] = np.float32(math.exp((acts[n_dense, c] - m) - lse))
        delta[yi] -= one
        # ---- deeper layers, top down: dprev = W_l^T delta_l (pre-update W_l), then update
        for l in range(n_dense - 1, -1, -1):
            w = ws[l]
            b = bs[l]
            n_out, n_in = w.shape
            for k in range(n_in):
                dprev[k] = zero
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
                b[j0] = b[j0] + nlr * d0
                b[j1] = b[j1] + nlr * d1
                b[j2] = b[j2] + nlr * d2
                b[j3] = b[j3] + nlr * d3
                for k in range(n_in):
                    ak = acts[l, k]
                    w0, w1_, w2, w3 = w[j0, k], w[j1, k], w[j2, k], w[j3, k]
                    # pre-update weights into dprev, rows in ascending order
                    dprev[k] = (((dprev[k] + w0 * d0) + w1_ * d1) + w2 * d2) + w3 * d3
                    # float32 gradient d*a, then w + (-eta) g with an fma, as torch does
                    w[j0, k] = w0 + nlr * (d0 * ak)
                    w[j1, k] = w1_ + nlr * (d1 * ak)
                    w[j2, k] = w2 + nlr * (d2 * ak)
                    w[j3, k] = w3 + nlr * (d3 * ak)
                q += 4
            while q < n_act:
                j = active[q]
                dj = delta[j]
                b[j] = b[j] + nlr * dj
                for k in range(n_in):
                    wk = w[j, k]
                    dprev[k] += wk * dj
                    w[j, k] = wk + nlr * (dj * acts[l, k])
                q += 1
            for k in range(n_in):
                delta[k] = dprev[k] if acts[l, k] > zero else zero  # relu'(z) = 1[a > 0]
        # ---- layer 1 update: W_1 -= eta delta_1 x^T over the nonzero inputs; no dL/dx
        for j in range(h1):
            b1[j] = b1[j] + nlr * delta[j]
        if w1_transposed:
            if sparse:
                for p in range(lo, hi):
                    k = indices[p]
                    v = values[p]
                    for j in range(h1):
                        w1[k, j] = w1[k, j] + nlr * (delta[j] * v)
            else:
                for k in range(n_in1):
                    v = xd[s, k]
                    if v != zero:
                        for j in range(h1):
                            w1[k, j] = w1[k, j] + nlr * (delta[j] * v)
        else:
            for j in range(h1):
                dj = delta[j]
                if dj == zero:
                    continue
                if sparse:
                    for p in range(lo, hi):
                        k = indices[p]
                        w1[j, k] = w1[j, k] + nlr * (dj * values[p])
                else:
                    for k in range(n_in1):
                        w1[j, k] = w1[j, k] + nlr * (dj * xd[s, k])
    return correct, loss_sum


# --------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------


def _param_array(p: torch.Tensor) -> tuple[np.ndarray, bool]:
    """A writable C-contiguous float32 array for ``p``: its own memory where possible.

    Returns ``(array, is_view)``; when ``is_view`` is False the array is a copy that the
    caller must write back into ``p``.
    """
    arr = p.detach().numpy()
    is_view = (
        arr.dtype == np.float32
        and arr.flags.c_contiguous
        and arr.flags.writeable
        and arr.ctypes.data == p.data_ptr()
    )
    if is_view:
        return arr, True
    return np.ascontiguousarray(arr, dtype=np.float32).copy(), False


class _SparseRows:
    """The inputs of one data tensor as CSR rows, or as dense rows when too dense."""

    __slots__ = ("density", "indices", "indptr", "sparse", "values", "xd")

    def __init__(self, x2: np.ndarray, dense_threshold: float):
        counts = _row_nonzeros(x2)
        nnz = int(counts.sum())
        self.density = nnz / max(x2.size, 1)
        self.sparse = self.density <= dense_threshold
        if self.sparse:
            self.indptr = np.zeros(len(counts) + 1, np.int64)
            np.cumsum(counts, out=self.indptr[1:])
            # One spare slot: _fill_csr's branchless cursor may write one past the end.
            self.indices = np.empty(nnz + 1, np.int32)
            self.values = np.empty(nnz + 1, np.float32)
            _fill_csr(x2, self.indptr, self.indices, self.values)
            self.xd = np.empty((0, x2.shape[1]), np.float32)  # unused; keeps types fixed
        else:
            self.indptr = np.zeros(1, np.int64)
            self.indices = np.empty(0, np.int32)
            self.values = np.empty(0, np.float32)
            self.xd = x2


def _permutation(columns: torch.Tensor, n_in: int) -> np.ndarray:
    """``columns`` as an int64 array, checked to be a permutation of ``range(n_in)``."""
    perm = np.ascontiguousarray(torch.as_tensor(columns).detach().cpu().numpy(), dtype=np.int64)
    if perm.shape != (n_in,) or not np.array_equal(np.sort(perm), np.arange(n_in)):
        raise ValueError(f"columns must be a permutation of range({n_in}) (the model's inputs)")
    return perm


def _first_layer_in(w1: np.ndarray, transposed: bool, perm: np.ndarray | None) -> np.ndarray:
    """W_1 (out x in) as the kernel takes it: transposed (in x out) or the view itself; with
    ``perm`` = P, the columns are permuted by P^-1, so that ``x`` reads as ``x[:, P]``."""
    if perm is None:
        return np.ascontiguousarray(w1.T) if transposed else w1
    inverse = np.empty_like(perm)
    inverse[perm] = np.arange(len(perm))
    return w1.T[inverse] if transposed else np.ascontiguousarray(w1[:, inverse])


def _first_layer_out(first: np.ndarray, w1: np.ndarray, transposed: bool, perm) -> None:
    """Write the kernel's copy of W_1 back into the parameter's array ``w1`` (out x in)."""
    if perm is None:
        w1[...] = first.T  # only the transposed layout copies without a permutation
    else:
        w1[...] = first[perm].T if transposed else first[:, perm]


def _cache_key(x: torch.Tensor) -> tuple:
    """What identifies the content of ``x`` as the engine reads it.

    The engine keeps a reference to the cached ``x``, so its memory cannot be freed and
    reused by another tensor while the entry lives: the same address, layout and dtype
    mean the same memory, and the version counter (shared by all views of a tensor and
    bumped by every in-place torch op) means the same content. A contiguous tensor is
    keyed by its flattened (N, features) layout, so any view of it (images or vectors,
    e.g. ``Dataset.flat()`` called anew each epoch) hits the same entry.
    """
    n = x.shape[0] if x.dim() else 0
    layout = (n, x.numel() // max(n, 1)) if x.is_contiguous() else (x.shape, x.stride())
    return (x.device, x.data_ptr(), layout, x.dtype, x._version)


class FastEngine:
    """Prequential SGD at batch size 1 through one compiled, fused per-sample step.

    Same contract as :class:`~plasticollapse.engines.reference.ReferenceEngine` with
    ``batch_size=1``: :meth:`train` makes one pass over ``x[order]``; each sample is scored
    (argmax of the logits) and its cross-entropy recorded *before* its SGD update, and the
    model's parameters are updated in place.

    Args:
        model: a ReLU MLP that :func:`unsupported_reason` accepts.
        lr: the SGD learning rate (no momentum, no weight decay).
        layout: where the weights live during a pass. ``"views"`` (default, fastest): the
            first layer's weight as a transposed copy (in x out), written back into the
            model at the end of every pass; the deeper ones trained in place through views
            of the parameters' memory. ``"torch"``: every weight trained in place through
            views, nothing copied (the first layer then gathers its nonzero columns).
        dense_threshold: inputs denser than this fraction are read densely, not as CSR.

    The CSR form of the last ``x`` is cached (keyed by its memory, shape, strides, dtype
    and autograd version counter) and reused by the next call with the same data, e.g.
    the next epoch. The cache holds a reference to that ``x``. Writes that bypass torch's
    version counter (through ``x.numpy()`` or ``x.data``) are not seen: call
    :meth:`clear_cache` after such writes.
    """

    name = "fast"
    #: :meth:`train` takes ``columns`` (a permutation of the inputs) itself.
    permutes_inputs = True

    def __init__(
        self,
        model: nn.Module,
        lr: float,
        *,
        layout: str = "views",
        dense_threshold: float = DENSE_THRESHOLD,
    ):
        reason = unsupported_reason(model, 1)
        if reason is not None:
            raise ValueError(f"the fast engine does not apply: {reason}")
        self.model = model
        self.lr = float(lr)
        self.batch_size = 1
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.layout = layout
        self.dense_threshold = float(dense_threshold)
        self._cached_x: torch.Tensor | None = None
        self._cached_key: tuple | None = None
        self._cached_rows: _SparseRows | None = None

    def clear_cache(self) -> None:
        """Forget the cached input rows (and the reference to their ``x``)."""
        self._cached_x = self._cached_key = self._cached_rows = None

    def _rows(self, x: torch.Tensor, n_in: int) -> _SparseRows:
        key = _cache_key(x)
        if self._cached_rows is not None and self._cached_key == key:
            return self._cached_rows
        self.clear_cache()  # drop the old rows before building new ones (peak memory)
        x2 = x.detach()
        if x2.device.type != "cpu":
            x2 = x2.cpu()
        x2 = x2.reshape(x2.shape[0], -1)
        if x2.shape[1] != n_in:
            raise ValueError(f"x has {x2.shape[1]} features per sample, the model takes {n_in}")
        if not x2.is_floating_point():
            raise TypeError(f"x must be floating point, got {x2.dtype}")
        x2 = x2.to(torch.float32).contiguous()
        rows = _SparseRows(x2.numpy(), self.dense_threshold)
        self._cached_x, self._cached_key, self._cached_rows = x, key, rows
        return rows

    def train(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        order: torch.Tensor,
        columns: torch.Tensor | None = None,
    ) -> OnlineStats:
        """One pass over ``x[order]``; returns online accuracy and mean loss over the pass.

        ``columns``, a permutation P of the input features, trains on ``x[:, P]`` without
        building it: since ``x[:, P] W^T = x (W[:, P^-1])^T``, the pass runs on ``x`` with
        the first layer's columns permuted by P^-1 (and permuted back when written into
        the model), an exact rewriting of every update. The CSR rows of ``x`` are then
        cached across permutations, e.g. across the tasks of Permuted MNIST. Only the
        first layer's summation order changes (a sample's nonzeros are visited in the
        order of ``x``'s columns, not of ``x[:, P]``'s): float32 rounding.
        """
        reason = unsupported_reason(self.model, 1)  # the model may have moved since __init__
        if reason is not None:
            raise ValueError(f"the fast engine does not apply: {reason}")
        self.model.train()  # parity with the reference (no layer here depends on the mode)
        linears = _model_linears(self.model)
        assert not isinstance(linears, str)
        n_in = linears[0].in_features
        n_cls = linears[-1].out_features

        n = int(x.shape[0])
        order_np = np.ascontiguousarray(order.detach().cpu().numpy(), dtype=np.int64)
        if order_np.ndim != 1:
            raise ValueError(f"order must be 1-D, got shape {tuple(order.shape)}")
        if len(order_np) == 0:
            return OnlineStats(correct=0, count=0, loss_sum=0.0)
        # The compiled loop does not bounds-check: check here, and wrap negative indices
        # as x[order] would.
        if order_np.min() < -n or order_np.max() >= n:
            raise IndexError(f"order indexes outside x's {n} samples")
        if order_np.min() < 0:
            order_np = order_np % n
        y_np = np.ascontiguousarray(y.detach().cpu().numpy(), dtype=np.int64)
        if y_np.shape != (n,):
            raise ValueError(f"y must have shape ({n},), got {tuple(y.shape)}")
        used = y_np[order_np]
        if used.min() < 0 or used.max() >= n_cls:
            raise ValueError(f"labels must lie in [0, {n_cls})")

        perm = None if columns is None else _permutation(columns, n_in)
        rows = self._rows(x, n_in)

        params = [p for lin in linears for p in (lin.weight, lin.bias)]
        arrays = [_param_array(p) for p in params]
        # The kernel takes float32 C-contiguous arrays; in the "views" layout W_1 is a
        # private transposed copy, written back below (so is a column-permuted W_1).
        weights = [a for a, _ in arrays[0::2]]
        biases = tuple(a for a, _ in arrays[1::2])
        transposed = self.layout == "views"
        first = _first_layer_in(weights[0], transposed, perm)
        try:
            correct, loss_sum = _train_pass(
                first,
                transposed,
                biases[0],
                tuple(weights[1:]),
                biases[1:],
                rows.sparse,
                rows.indptr,
                rows.indices,
                rows.values,
                rows.xd,
                y_np,
                order_np,
                self.lr,
            )
        finally:
            # Write back whatever is not the parameter's own memory (the transposed
            # weights, copies of non-contiguous parameters), even if the pass was
            # interrupted, so the model is current whenever anyone reads it.
            with torch.no_grad():
                if first is not weights[0]:
                    _first_layer_out(first, weights[0], transposed, perm)
                for p, (arr, is_view) in zip(params, arrays, strict=True):
                    if not is_view:
                        p.copy_(torch.from_numpy(arr))
                # Tell autograd the parameters changed in place, as optimizer.step() does.
                torch.autograd.graph.increment_version(params)
        return OnlineStats(correct=int(correct), count=len(order_np), loss_sum=float(loss_sum))


def warmup(hidden_layers: int = 3) -> float:
    """Compile (or load from the cache) the kernels for MLPs with ``hidden_layers`` hidden
    layers (the paper's: 3) and return the seconds it took.

    The compiled step is specialised on the network's depth, not its widths: each depth
    compiles once per machine (a few seconds), later processes load it from the cache.
    Worth calling once in each worker process before timing anything.
    """
    import time

    start = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    model = MLP(16, (8,) * hidden_layers, 3)
    x = torch.rand(4, 16, generator=gen) * (torch.rand(4, 16, generator=gen) < 0.3)
    y = torch.tensor([0, 1, 2, 0])
    FastEngine(model, 0.01).train(x, y, torch.arange(4))
    return time.perf_counter() - start
