"""Every metric of ``measure_model(hidden_layers=True)`` for the plain ReLU MLP, in one sweep.

:func:`mlp_metrics` is what :func:`plasticollapse.studies.permuted.run.measure` and the
streams' :func:`~plasticollapse.studies.streams.measure.measure_split` run on the CPU for
the package's plain :class:`~plasticollapse.models.MLP` (with an ``nn.Linear`` head): the
same keys and formulas as :func:`~plasticollapse.metrics.measure.measure_model` with
``hidden_layers=True`` (and ``layer_collapse``), from one pass over the data in blocks of
:data:`BLOCK` rows that keeps only the sufficient statistics of each layer (the features
alone are kept, for NC4; with ``layer_collapse`` every hidden layer's outputs, which then
go through the second sweep as the features do):

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
Chunks and threads. The rows are swept in fixed chunks of :data:`CHUNK` (4,096) rows, each
summing its own blocks; the chunks' sums are then added in chunk order. So threads can
sweep chunks side by side (the kernels and BLAS calls release the GIL; each thread's BLAS
and torch pools on one thread) and the result is the same bit for bit on any number of
threads (tests/test_fast_statistics.py). ``threads=None`` takes torch's thread count of the
calling thread: a run alone on the machine (``threads = 0``, torch's default: the cores)
measures on every core, a worker of a sweep that fills the cores on its one.
Measured (``benchmarks/online_speed.py --quick``, a 2-core AMD EPYC, 2026-12-03): a task of
60,000 MNIST-like images 0.146 s wall on 2 threads against 0.319 s on one (Fashion-MNIST
0.171 against 0.332); on one thread the chunks cost nothing measurable (best of 7, before
and after them in one session: 0.21-0.29 s either way, that machine's noise). The
streams' 784-300-150-10 network (label_permuted) with ``layer_collapse``, one thread:
0.060 s on 2,500 rows and 0.157 s on 10,000, against ``measure_model``'s 0.096 and 0.296.

A non-finite activation or logit returns None: the caller then measures
through ``measure_model``, whose checks say what diverged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple, TypeGuard, TypeVar

import numpy as np
import torch
from numba import njit

from plasticollapse.engines import fast
from plasticollapse.engines.fast_measure import SPARSE_DENSITY, first_layer_rows
from plasticollapse.metrics.collapse_formulas import ClassStatistics, metrics_from_statistics
from plasticollapse.metrics.measure import LAYER_COLLAPSE_KEYS, LAYER_KEYS
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
#: Rows per chunk of a sweep: each chunk sums its blocks, and the chunks' sums are added in
#: chunk order, so that the metrics are the same on any number of threads (and, for at
#: most CHUNK rows, the single sequential sum).
CHUNK = 16 * BLOCK
#: gamma_{B+2} = (B + 2) u / (1 - (B + 2) u), u = 2^-24: the bound of the module docstring.
GRAM_RTOL = (BLOCK + 2) * 2.0**-24 / (1 - (BLOCK + 2) * 2.0**-24)
#: The loops' float64 sums may be reassociated, so that they vectorise along a row (a row's
#: squares, its dot products with the class means): rounding-level changes of float64 sums.
#: No nnan/ninf: a non-finite activation still reaches the finiteness check.
SUM_MATH = {"reassoc", "contract"}

_T = TypeVar("_T")


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
    :func:`~plasticollapse.engines.fast_measure.applies`) and a plain ``nn.Linear`` head
    (a class-incremental stream's masked head changes the logits)."""
    from plasticollapse.engines import fast_measure

    return (
        fast_measure.applies(model, x)
        and type(model.classifier) is torch.nn.Linear
        and all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
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


def mlp_metrics(
    model: MLP,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    columns: torch.Tensor | None = None,
    tau: float = DORMANT_TAU,
    threads: int | None = None,
    layer_collapse: bool = False,
) -> dict[str, float] | None:
    """``measure_model(model, x[:, P], y, num_classes, hidden_layers=True,
    layer_collapse=layer_collapse)``'s dict (P = ``columns``, never built) from one sweep of
    sufficient statistics (module docstring); None when an activation or logit is not
    finite. With ``layer_collapse`` every hidden layer's outputs are kept and go through the
    second sweep as the features do (its class statistics, NC4 and uncentred gram).

    ``threads`` sweep the chunks of :data:`CHUNK` rows side by side (None: torch's thread
    count in the calling thread, which a run's ``threads`` setting fixes; 1 inside a
    :func:`~plasticollapse.metrics.threads.one_thread` block). The result does not depend
    on it: the chunks are fixed and their sums added in chunk order."""
    count = torch.get_num_threads() if threads is None else int(threads)
    if count < 1:
        raise ValueError(f"threads must be >= 1 (or None: torch's count), got {threads}")
    return _mlp_metrics(model, x, y, num_classes, columns, tau, count, layer_collapse)


class _Layers(NamedTuple):
    """What every chunk of the first sweep reads: the inputs (CSR rows, or dense rows for a
    BLAS product), the layers' transposed weights and biases, the labels."""

    rows: Any
    x_dense: torch.Tensor | None
    w1t: np.ndarray
    w1t_tensor: torch.Tensor
    b1: np.ndarray
    deeper: list[tuple[np.ndarray, np.ndarray]]
    head_t: np.ndarray
    head_b: np.ndarray
    labels: np.ndarray
    widths: list[int]
    num_classes: int


class _ChunkSums(NamedTuple):
    """One chunk's first-sweep sums: per hidden layer sum_i a_i and sum_i ||a_i|| (float64,
    (w,) and (1,)); the grams of the layers below the features (none when every layer goes
    through the second sweep); the class sums of the features (of every hidden layer, with
    layer collapse) and the class counts; the cross-entropy sum and the correct count."""

    abs_sums: list[np.ndarray]
    norm_sums: list[np.ndarray]
    grams: list[np.ndarray]
    sums: list[np.ndarray]
    counts: np.ndarray
    loss: float
    correct: int


def _sweep_chunk(
    layers: _Layers, kept: list[np.ndarray], predictions: np.ndarray, lo: int, hi: int
) -> _ChunkSums:
    """The first sweep over rows lo:hi in blocks of :data:`BLOCK`: the layers' outputs, their
    sums and grams, the logits' cross-entropy and argmax. ``kept``: the outputs kept for the
    second sweep (the features last; every hidden layer's with layer collapse), whose rows
    lo:hi it writes, as those of ``predictions`` (each chunk its own rows)."""
    widths, rows = layers.widths, layers.rows
    n_blocks = len(widths) - len(kept)  # the layers whose outputs live one block at a time
    blocks = [np.empty((BLOCK, w), np.float32) for w in widths[:n_blocks]]
    logits = np.empty((BLOCK, layers.num_classes), np.float32)
    abs_sums = [np.zeros(w) for w in widths]
    norm_sums = [np.zeros(1) for _ in widths]
    grams = [np.zeros((w, w)) for w in widths[:n_blocks]]  # the kept's come from pass 2
    sums = [np.zeros((layers.num_classes, a.shape[1])) for a in kept]
    counts = np.zeros(layers.num_classes, np.int64)
    recounted = np.zeros_like(counts)  # the other layers' counts of the same labels, unread
    loss, correct = 0.0, 0
    for start in range(lo, hi, BLOCK):
        stop = min(start + BLOCK, hi)
        m = stop - start
        outs = [b[:m] for b in blocks] + [a[start:stop] for a in kept]
        if layers.x_dense is not None:
            _dense_first_layer(
                layers.x_dense[start:stop], layers.w1t_tensor, layers.b1, outs[0], abs_sums[0],
                norm_sums[0],
            )  # fmt: skip
        else:
            indptr = rows.indptr[start : stop + 1]  # absolute offsets into indices, values
            first_layer_rows(
                layers.w1t, layers.b1, True, indptr, rows.indices, rows.values, rows.xd, outs[0]
            )
            unit_sums(outs[0], abs_sums[0], norm_sums[0])
        for k, (wt, b) in enumerate(layers.deeper):
            _relu_layer(outs[k], wt, b, outs[k + 1], abs_sums[k + 1], norm_sums[k + 1])
        for k, layer_gram in enumerate(grams):
            add_block_gram(layer_gram, outs[k])
        z = np.dot(outs[-1], layers.head_t, out=logits[:m])
        z += layers.head_b
        block = cross_entropy_sums(z, layers.labels[start:stop], predictions[start:stop])
        loss += block[0]
        correct += block[1]
        for k, layer_sums in enumerate(sums):
            counted = counts if k == 0 else recounted  # the labels are counted once
            class_sums(outs[n_blocks + k], layers.labels[start:stop], layer_sums, counted)
    return _ChunkSums(abs_sums, norm_sums, grams, sums, counts, loss, correct)


def _one_torch_thread() -> None:
    """A sweeping thread's torch pool on one thread: a new thread's own OpenMP team would
    otherwise take every core (torch's count is per thread; measured: a worker's 4000^2
    matmul ran on 2 threads with the main thread's count at 1)."""
    torch.set_num_threads(1)


def _map_chunks(fn: Callable[[int, int], _T], n: int, threads: int) -> list[_T]:
    """``[fn(lo, hi) for each chunk of CHUNK rows of range(n)]``, in chunk order, run by up
    to ``threads`` threads (the kernels release the GIL, so chunks run side by side)."""
    chunks = [(lo, min(lo + CHUNK, n)) for lo in range(0, n, CHUNK)]
    if threads == 1 or len(chunks) == 1:
        return [fn(lo, hi) for lo, hi in chunks]
    workers = min(threads, len(chunks))
    with ThreadPoolExecutor(workers, initializer=_one_torch_thread) as pool:
        return list(pool.map(lambda chunk: fn(*chunk), chunks))


def _added(parts: list[np.ndarray]) -> np.ndarray:
    """The sum of the chunks' arrays, added in chunk order (so the same for any threads)."""
    total = np.zeros_like(parts[0])
    for part in parts:
        total += part
    return total


@torch.no_grad()
@on_one_thread  # each thread's BLAS products are small: one BLAS thread (metrics/threads.py)
def _mlp_metrics(
    model: MLP,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    columns: torch.Tensor | None,
    tau: float,
    threads: int,
    layer_collapse: bool,
) -> dict[str, float] | None:
    """:func:`mlp_metrics` on ``threads`` sweeping threads."""
    linears = model.hidden_linears
    n, n_in = len(x), linears[0].in_features
    widths = [layer.out_features for layer in linears]
    rows = fast.shared_rows(x, n_in)
    dense = rows.density > SPARSE_DENSITY  # a BLAS product beats the sparse rows
    w1t = _first_weights(model, columns)
    head_t, head_b = _transposed(model.classifier)
    layers = _Layers(
        rows=rows,
        x_dense=x.detach().reshape(n, -1).to(torch.float32).contiguous() if dense else None,
        w1t=w1t,
        w1t_tensor=torch.from_numpy(w1t),
        b1=np.ascontiguousarray(linears[0].bias.detach().numpy()),
        deeper=[_transposed(layer) for layer in linears[1:]],
        head_t=head_t,
        head_b=head_b,
        labels=np.ascontiguousarray(y.detach().cpu().numpy(), dtype=np.int64),
        widths=widths,
        num_classes=num_classes,
    )
    # The outputs kept for the second sweep: the features (NC4 needs the class means
    # first), and with layer collapse every hidden layer's.
    kept_widths = widths if layer_collapse else widths[-1:]
    kept = [np.empty((n, w), np.float32) for w in kept_widths]
    predictions = np.empty(n, np.int64)
    chunks = _map_chunks(lambda lo, hi: _sweep_chunk(layers, kept, predictions, lo, hi), n, threads)
    abs_sums = [_added([c.abs_sums[k] for c in chunks]) for k in range(len(widths))]
    norm_sums = [_added([c.norm_sums[k] for c in chunks]) for k in range(len(widths))]
    grams = [_added([c.grams[k] for c in chunks]) for k in range(len(chunks[0].grams))]
    sums = [_added([c.sums[k] for c in chunks]) for k in range(len(kept))]
    counts = _added([c.counts for c in chunks])
    loss = sum((c.loss for c in chunks), 0.0)
    correct = sum(c.correct for c in chunks)
    finite = [math.isfinite(loss), *(np.isfinite(a).all() for a in (*sums, *grams))]
    if not all(finite):
        return None

    # The second sweep, per kept layer: class statistics, NC4, the uncentred gram.
    second = [
        _class_statistics(a, layers.labels, predictions, layer_sums, counts, threads)
        for a, layer_sums in zip(kept, sums, strict=True)
    ]
    stats, features_gram, agreement = second[-1]
    weight = model.classifier.weight.detach().to(torch.float64)
    out = metrics_from_statistics(stats, num_classes, weight)
    out["nc4_agreement"] = agreement
    out["nc4_mismatch"] = 1.0 - agreement
    out["accuracy"] = correct / n
    out["loss"] = loss / n
    last = len(widths) - 1
    out.update(_unit_metrics(abs_sums[last], norm_sums[last], features_gram, n, tau))
    out["weight_magnitude"] = weight_magnitude(model)
    kept_grams = [torch.from_numpy(g) for g in grams] + [gram for _, gram, _ in second]
    for k in range(len(widths)):
        values = _unit_metrics(abs_sums[k], norm_sums[k], kept_grams[k], n, tau)
        out.update({f"{key}_layer{k + 1}": values[key] for key in LAYER_KEYS})
    if layer_collapse:
        for k, (layer_stats, _, layer_agreement) in enumerate(second):
            values = metrics_from_statistics(layer_stats, num_classes)
            values["nc4_agreement"] = layer_agreement
            out.update({f"{key}_layer{k + 1}": values[key] for key in LAYER_COLLAPSE_KEYS})
    return out


def _centred_chunk(features, labels, predictions, means, centred, offsets, present, lo, hi):
    """The second sweep over rows lo:hi (:func:`_class_statistics`): the chunk's class sums
    of d and ||d||^2, its scatter sum_i d_i d_i^T and its NC4 hits."""
    d_sums, d_squares = np.zeros_like(means), np.zeros(len(means))
    scatter = np.zeros((features.shape[1], features.shape[1]))
    block = np.empty((BLOCK, features.shape[1]), np.float32)
    hits = 0
    for start in range(lo, hi, BLOCK):
        stop = min(start + BLOCK, hi)
        h, d = features[start:stop], block[: stop - start]
        centred_rows(h, labels[start:stop], means, d, d_sums, d_squares)
        add_block_gram(scatter, d)
        hits += nearest_mean_hits(h, centred, offsets, present, predictions[start:stop])
    return d_sums, d_squares, scatter, hits


def _class_statistics(features, labels, predictions, sums, counts, threads: int = 1):
    """(ClassStatistics, the features' uncentred gram, NC4 agreement) from the kept
    features and their class sums: the second sweep, over d_i = h_i - mu_{y_i}, in chunks
    of :data:`CHUNK` rows on ``threads`` threads (added in chunk order).

    With t_c = sum_{y_i = c} d_i (rounding-small), m_c = t_c / n_c refines the means,
    var_c = (1/n_c) sum ||d_i||^2 - ||m_c||^2, N Sigma_W = sum_i d_i d_i^T - sum_c n_c m_c m_c^T,
    and sum_i h_i h_i^T = sum_i d_i d_i^T + sum_c (mu_c t_c^T + t_c mu_c^T + n_c mu_c mu_c^T)
    (CollapseAccumulator's shifted statistics with the shift s_c = mu_c)."""
    n = features.shape[0]
    present = np.flatnonzero(counts)
    means = sums / np.maximum(counts, 1)[:, None]
    n_present = counts[present].astype(np.float64)
    global_mean = (n_present[:, None] * means[present]).sum(0) / n
    centred = means[present] - global_mean
    # nearest class mean: argmin_c ||mc_c||^2 + 2 mc_c.mu_G - 2 h.mc_c (nearest_and_linear's)
    offsets = np.ascontiguousarray((centred**2).sum(1) + 2 * (centred @ global_mean))
    centred = np.ascontiguousarray(centred)
    chunks = _map_chunks(
        lambda lo, hi: _centred_chunk(
            features, labels, predictions, means, centred, offsets, present, lo, hi
        ),
        n,
        threads,
    )
    d_sums, d_squares, scatter = (_added([c[i] for c in chunks]) for i in range(3))
    hits = sum(c[3] for c in chunks)
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
