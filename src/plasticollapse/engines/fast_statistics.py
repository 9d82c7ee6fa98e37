"""Every metric of ``measure_model(hidden_layers=True)`` for the plain ReLU MLP, in one sweep.

:func:`mlp_metrics` is what :func:`plasticollapse.studies.permuted.run.measure` runs on the
CPU for the package's plain :class:`~plasticollapse.models.MLP`: the same keys and formulas
as :func:`~plasticollapse.metrics.measure.measure_model` with ``hidden_layers=True``, from
one pass over the data in blocks of :data:`BLOCK` rows that keeps only the sufficient
statistics of each layer (the features alone are kept, for NC4):

* per hidden layer k: sum_i a_i (= sum_i |a_i|, ReLU outputs), sum_i ||a_i||_2 and the
  uncentred gram sum_i a_i a_i^T (the last layer's comes from the class statistics);
* of the features h (the last ReLU's output): per-class counts and sums, then, once the
  class means mu_c are known, a second sweep over the kept features for
  d_i = h_i - mu_{y_i}: per-class sums and squared norms of d and the within-class scatter
  sum_i d_i d_i^T (Papyan, Han & Donoho 2020's Sigma_W, times N), and the nearest class
  mean of each h_i (NC4);
* of the logits: sum_i CE(z_i, y_i) and the correct argmaxes.

The NC formulas (:func:`~plasticollapse.metrics.collapse_formulas.metrics_from_statistics`)
and the unit metrics (:mod:`~plasticollapse.metrics.plasticity`) then run on those
statistics, as ``measure_model`` runs them on its accumulators' (the shift of every class
is its exact mean here, not its first batch's, so nothing cancels either way).

Rounding. The layers are float32 as in ``model.forward`` (another summation order in the
deeper layers: BLAS through NumPy; the first layer through the sparse rows, or PyTorch's
BLAS on dense inputs). Each block's gram a_b^T a_b is a float32
BLAS product, accumulated in float64. With u = 2^-24 and B = :data:`BLOCK` rows, a block's
entry carries an error of at most gamma_B sum_{r in b} |a_ri| |a_rj|, gamma_B = B u / (1 - B u)
(Higham, *Accuracy and Stability of Numerical Algorithms*, 2002, eq. 3.5), and the float64
sums add N/B rounding errors of 2^-53. With the rows d rounded to float32 (2u more),
|G^ - G|_ij <= gamma_{B+2} sum_r |a_ri| |a_rj| <= GRAM_RTOL sqrt(G_ii G_jj) (Cauchy-Schwarz),
:data:`GRAM_RTOL` = gamma_{B+2} = 1.5e-5 for B = 256. For ReLU outputs (a >= 0) the bound is
relative per entry. Typical errors are ~sqrt(B) u ~ 1e-6; tests/test_fast_statistics.py
checks the bound and the metrics against a float64 reference.

Speed (benchmarks/online_speed.py, 60,000 images, MLP 784-100-100-100-10, one core): the
float64 grams, tensor conversions and scatter-adds of the streaming accumulators cost more
than the forward pass itself; here they are float32 BLAS products and short Numba loops per
block, whose sums along a row vectorise (:data:`SUM_MATH`). On an AVX-512 Xeon, MNIST-like
inputs: ~0.17 s a task, of which the sparse first layer ~0.07 s, the two deeper layers
~0.035 s, the three grams ~0.038 s (``benchmarks/online_speed.py`` prints this breakdown);
on an AMD znver5, 0.138 s (best of 15) since the deeper layers' bias, ReLU and unit sums
are one pass (:func:`bias_relu_unit_sums`; 0.147 s as three), with identical results.
A non-finite activation or logit returns None: the caller then measures
through ``measure_model``, whose checks say what diverged.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, TypeGuard

import numpy as np
import torch
from numba import njit

from plasticollapse.engines import fast
from plasticollapse.engines.fast_measure import SPARSE_DENSITY, first_layer_rows
from plasticollapse.metrics.collapse_formulas import ClassStatistics, metrics_from_statistics
from plasticollapse.metrics.measure import LAYER_KEYS
from plasticollapse.metrics.plasticity import (
    DORMANT_TAU,
    SRANK_DELTA,
    unit_metrics_from_sums,
    weight_magnitude,
)
from plasticollapse.metrics.threads import on_one_thread

if TYPE_CHECKING:
    from plasticollapse.models import MLP

#: Rows per block: a block's activations stay in cache, and its float32 grams' rounding
#: bound gamma_B (see the module docstring) stays ~1e-5.
BLOCK = 256
#: gamma_{B+2} = (B + 2) u / (1 - (B + 2) u), u = 2^-24: the bound of the module docstring.
GRAM_RTOL = (BLOCK + 2) * 2.0**-24 / (1 - (BLOCK + 2) * 2.0**-24)
#: The loops' float64 sums may be reassociated, so that they vectorise along a row (a row's
#: squares, its dot products with the class means): rounding-level changes of float64 sums.
#: No nnan/ninf: a non-finite activation still reaches the finiteness check.
SUM_MATH = {"reassoc", "contract"}


# --------------------------------------------------------------------------- kernels


@njit(cache=True, nogil=True, fastmath=SUM_MATH)
def unit_sums(a, abs_sum, norm_sum):
    """abs_sum[j] += sum_r a[r, j] (a >= 0: |a| = a) and norm_sum[0] += sum_r ||a[r]||_2,
    float64 sums of float32 rows (each row's squares summed in float64, vectorised)."""
    for r in range(a.shape[0]):
        squares = 0.0
        for j in range(a.shape[1]):
            v = float(a[r, j])
            abs_sum[j] += v
            squares += v * v
        norm_sum[0] += math.sqrt(squares)


@njit(cache=True, nogil=True, fastmath=SUM_MATH)
def bias_relu_unit_sums(z, b, abs_sum, norm_sum):
    """z = relu(z + b) in place (float32, as ``out += b; np.maximum(out, 0, out)``: NaN
    passes) and :func:`unit_sums` of the result, in the same pass over the block."""
    zero = np.float32(0.0)
    for r in range(z.shape[0]):
        squares = 0.0
        for j in range(z.shape[1]):
            e = z[r, j] + b[j]
            a = zero if e < zero else e
            z[r, j] = a
            v = float(a)
            abs_sum[j] += v
            squares += v * v
        norm_sum[0] += math.sqrt(squares)


@njit(cache=True, nogil=True)
def class_sums(h, y, sums, counts):
    """sums[c] += sum_{y_r = c} h[r] (float64) and counts[c] += #{r: y_r = c}."""
    for r in range(h.shape[0]):
        c = y[r]
        counts[c] += 1
        for j in range(h.shape[1]):
            sums[c, j] += h[r, j]


@njit(cache=True, nogil=True)
def cross_entropy_sums(z, y, predictions):
    """(sum_r CE(z_r, y_r), #{r: argmax z_r = y_r}) with CE = logsumexp(z_r) - z_r[y_r] in
    float64, and each row's argmax (the first maximum, as torch's) into ``predictions``."""
    loss = 0.0
    correct = 0
    for r in range(z.shape[0]):
        best = 0
        top = z[r, 0]
        for c in range(1, z.shape[1]):
            if z[r, c] > top:
                top, best = z[r, c], c
        total = 0.0
        for c in range(z.shape[1]):
            total += math.exp(float(z[r, c]) - float(top))
        loss += math.log(total) + float(top) - float(z[r, y[r]])
        predictions[r] = best
        correct += best == y[r]
    return loss, correct


@njit(cache=True, nogil=True, fastmath=SUM_MATH)
def centred_rows(h, y, means, d, d_sums, d_squares):
    """d[r] = h[r] - mu_{y_r} (computed in float64, stored float32) with the float64 class
    sums of d and of ||d||^2 (computed before the float32 rounding)."""
    for r in range(h.shape[0]):
        c = y[r]
        squares = 0.0
        for j in range(h.shape[1]):
            e = float(h[r, j]) - means[c, j]
            d[r, j] = e
            d_sums[c, j] += e
            squares += e * e
        d_squares[c] += squares


@njit(cache=True, nogil=True, fastmath=SUM_MATH)
def nearest_mean_hits(h, centred, offsets, present, predictions):
    """#{r: the class mean nearest h[r] is predictions[r]} (NC4's agreement count).

    argmin_c ||h - mu_c||^2 = argmin_c ||mc_c||^2 + 2 mc_c.mu_G - 2 h.mc_c (mc_c = mu_c - mu_G;
    ``offsets`` holds the first two terms), in float64 as ``nearest_and_linear``'s matmul,
    the first minimum winning as in torch's argmin."""
    hits = 0
    for r in range(h.shape[0]):
        best, top = 0, np.inf
        for c in range(centred.shape[0]):
            dot = 0.0
            for j in range(h.shape[1]):
                dot += float(h[r, j]) * centred[c, j]
            score = offsets[c] - 2.0 * dot
            if score < top:
                best, top = c, score
        hits += present[best] == predictions[r]
    return hits


# --------------------------------------------------------------------------- the sweep


def applies(model: torch.nn.Module, x: torch.Tensor) -> TypeGuard[MLP]:
    """Whether :func:`mlp_metrics` measures ``model`` on ``x``: the fast first layer's
    conditions (a plain ReLU MLP, float32, all on the CPU; see
    :func:`~plasticollapse.engines.fast_measure.applies`)."""
    from plasticollapse.engines import fast_measure

    return fast_measure.applies(model, x) and all(
        p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters()
    )


def _transposed(linear: torch.nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    """(W^T as a C-contiguous float32 array, b) of a linear layer."""
    w = linear.weight.detach().numpy()
    return np.ascontiguousarray(w.T), np.ascontiguousarray(linear.bias.detach().numpy())


def _first_weights(model: MLP, columns: torch.Tensor | None) -> np.ndarray:
    """W_1^T with its rows permuted by P^-1, so that x W_1'^T = x[:, P] W_1^T (as
    :func:`~plasticollapse.studies.permuted.run.reading_unpermuted`)."""
    w1t = model.hidden_linears[0].weight.detach().numpy().T
    if columns is None:
        return np.ascontiguousarray(w1t)
    perm = np.ascontiguousarray(columns.detach().cpu().numpy(), dtype=np.int64)
    return np.ascontiguousarray(w1t[fast.inverse_permutation(perm)])


def add_block_gram(gram: np.ndarray, a: np.ndarray) -> None:
    """gram += a^T a: the float32 BLAS product of one block (at most :data:`BLOCK` rows),
    added in float64; within GRAM_RTOL sum_r |a_ri| |a_rj| of the exact sum (module
    docstring)."""
    gram += np.dot(a.T, a)  # a.T @ a of one buffer: NumPy calls BLAS syrk


def _relu_layer(
    a: np.ndarray, wt: np.ndarray, b: np.ndarray, out: np.ndarray, abs_sum, norm_sum
) -> None:
    """out = relu(a W^T + b), float32, and its unit sums (:func:`bias_relu_unit_sums`)."""
    np.dot(a, wt, out=out)
    bias_relu_unit_sums(out, b, abs_sum, norm_sum)


def _dense_first_layer(
    x: torch.Tensor, w1t: torch.Tensor, b1: np.ndarray, out: np.ndarray, abs_sum, norm_sum
) -> None:
    """out = relu(x W_1^T + b_1) for a block of dense inputs through torch.mm (PyTorch's
    BLAS: at 784 x 100 it ran ~1.2x NumPy's on one thread of an AVX-512 Xeon; ~0.8x on an
    AMD znver5, where NumPy's OpenBLAS ran 0.099 s a task against 0.117), and its unit sums."""
    torch.mm(x, w1t, out=torch.from_numpy(out))
    bias_relu_unit_sums(out, b1, abs_sum, norm_sum)


@torch.no_grad()
@on_one_thread  # its BLAS products are small: one thread (metrics/threads.py says why)
def mlp_metrics(
    model: MLP,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    columns: torch.Tensor | None = None,
    tau: float = DORMANT_TAU,
) -> dict[str, float] | None:
    """``measure_model(model, x[:, P], y, num_classes, hidden_layers=True)``'s dict (P =
    ``columns``, never built) from one sweep of sufficient statistics (module docstring);
    None when an activation or logit is not finite."""
    linears = model.hidden_linears
    n, n_in = len(x), linears[0].in_features
    widths = [layer.out_features for layer in linears]
    rows = fast.shared_rows(x, n_in)
    dense = rows.density > SPARSE_DENSITY  # a BLAS product beats the sparse rows
    x_dense = x.detach().reshape(n, -1).to(torch.float32).contiguous() if dense else None
    w1t = _first_weights(model, columns)
    w1t_tensor = torch.from_numpy(w1t)
    b1 = np.ascontiguousarray(linears[0].bias.detach().numpy())
    deeper = [_transposed(layer) for layer in linears[1:]]
    head_t, head_b = _transposed(model.classifier)
    labels = np.ascontiguousarray(y.detach().cpu().numpy(), dtype=np.int64)

    features = np.empty((n, widths[-1]), np.float32)  # kept for NC4 and the second sweep
    predictions = np.empty(n, np.int64)
    blocks = [np.empty((BLOCK, w), np.float32) for w in widths[:-1]]
    logits = np.empty((BLOCK, num_classes), np.float32)
    abs_sums = [np.zeros(w) for w in widths]
    norm_sums = [np.zeros(1) for _ in widths]
    grams = [np.zeros((w, w)) for w in widths[:-1]]  # the features' comes from pass 2
    sums, counts = np.zeros((num_classes, widths[-1])), np.zeros(num_classes, np.int64)
    loss, correct = 0.0, 0

    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        m = stop - start
        outs = [b[:m] for b in blocks] + [features[start:stop]]
        if dense:
            assert x_dense is not None
            _dense_first_layer(
                x_dense[start:stop], w1t_tensor, b1, outs[0], abs_sums[0], norm_sums[0]
            )
        else:
            indptr = rows.indptr[start : stop + 1]  # absolute offsets into indices, values
            first_layer_rows(w1t, b1, True, indptr, rows.indices, rows.values, rows.xd, outs[0])
            unit_sums(outs[0], abs_sums[0], norm_sums[0])
        for k, (wt, b) in enumerate(deeper):
            _relu_layer(outs[k], wt, b, outs[k + 1], abs_sums[k + 1], norm_sums[k + 1])
        for k, layer_gram in enumerate(grams):
            add_block_gram(layer_gram, outs[k])
        z = np.dot(outs[-1], head_t, out=logits[:m])
        z += head_b
        block = cross_entropy_sums(z, labels[start:stop], predictions[start:stop])
        loss += block[0]
        correct += block[1]
        class_sums(outs[-1], labels[start:stop], sums, counts)
    finite = [math.isfinite(loss), np.isfinite(sums).all(), *(np.isfinite(g).all() for g in grams)]
    if not all(finite):
        return None

    stats, features_gram, agreement = _class_statistics(features, labels, predictions, sums, counts)
    weight = model.classifier.weight.detach().to(torch.float64)
    out = metrics_from_statistics(stats, num_classes, weight)
    out["nc4_agreement"] = agreement
    out["nc4_mismatch"] = 1.0 - agreement
    out["accuracy"] = correct / n
    out["loss"] = loss / n
    last = len(widths) - 1
    out.update(_unit_metrics(abs_sums[last], norm_sums[last], features_gram, n, tau))
    out["weight_magnitude"] = weight_magnitude(model)
    for k in range(len(widths)):
        gram = features_gram if k == last else torch.from_numpy(grams[k])
        values = _unit_metrics(abs_sums[k], norm_sums[k], gram, n, tau)
        out.update({f"{key}_layer{k + 1}": values[key] for key in LAYER_KEYS})
    return out


def _class_statistics(features, labels, predictions, sums, counts):
    """(ClassStatistics, the features' uncentred gram, NC4 agreement) from the kept
    features and their class sums: the second sweep, over d_i = h_i - mu_{y_i}.

    With t_c = sum_{y_i = c} d_i (rounding-small), m_c = t_c / n_c refines the means,
    var_c = (1/n_c) sum ||d_i||^2 - ||m_c||^2, N Sigma_W = sum_i d_i d_i^T - sum_c n_c m_c m_c^T,
    and sum_i h_i h_i^T = sum_i d_i d_i^T + sum_c (mu_c t_c^T + t_c mu_c^T + n_c mu_c mu_c^T)
    (CollapseAccumulator's shifted statistics with the shift s_c = mu_c)."""
    n, dim = features.shape
    present = np.flatnonzero(counts)
    means = sums / np.maximum(counts, 1)[:, None]
    d_sums, d_squares = np.zeros_like(sums), np.zeros(len(counts))
    scatter = np.zeros((dim, dim))
    block = np.empty((BLOCK, dim), np.float32)
    n_present = counts[present].astype(np.float64)
    global_mean = (n_present[:, None] * means[present]).sum(0) / n
    centred = means[present] - global_mean
    # nearest class mean: argmin_c ||mc_c||^2 + 2 mc_c.mu_G - 2 h.mc_c (nearest_and_linear's)
    offsets = np.ascontiguousarray((centred**2).sum(1) + 2 * (centred @ global_mean))
    centred = np.ascontiguousarray(centred)
    hits = 0
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        h, d = features[start:stop], block[: stop - start]
        centred_rows(h, labels[start:stop], means, d, d_sums, d_squares)
        add_block_gram(scatter, d)
        hits += nearest_mean_hits(h, centred, offsets, present, predictions[start:stop])
    t = d_sums[present]
    offset = t / n_present[:, None]
    scaled = offset * np.sqrt(n_present)[:, None]
    mu = means[present]
    cross = mu.T @ t
    uncentred = scatter + (cross + cross.T) + (mu.T * n_present) @ mu
    f64 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))  # noqa: E731
    refined = mu + offset
    stats = ClassStatistics(
        present=torch.from_numpy(present),
        counts=f64(n_present),
        means=f64(refined),
        variances=f64(np.maximum(d_squares[present] / n_present - (offset**2).sum(1), 0)),
        within=f64((scatter - scaled.T @ scaled) / n),
        global_mean=f64((n_present[:, None] * refined).sum(0) / n),
    )
    return stats, f64(uncentred), hits / n


def _unit_metrics(abs_sum, norm_sum, gram, n: int, tau: float) -> dict[str, float]:
    """UnitStatistics.compute's keys from the sums and the float64 gram."""
    total = torch.from_numpy(abs_sum)
    return unit_metrics_from_sums(total, float(norm_sum[0]), n, gram, tau, SRANK_DELTA)
