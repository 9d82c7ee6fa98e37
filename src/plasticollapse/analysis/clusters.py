"""The seed-cluster bootstrap: weights that resample whole SEEDS, and statistics evaluated
under every replicate's weights at once.

:func:`cluster_draws` gives seed-bootstrap weights that resample whole SEEDS, so runs nested
in one seed (settings sharing its first task) travel together; :func:`weighted_mean`,
:func:`weighted_r` and :func:`weighted_partial_r` evaluate a statistic under every
replicate's weights at once (frequency weights: a statistic of replicate b equals the
unweighted one of its runs written out with their repeats), and
:func:`percentile_interval` turns the draws into an interval.
:mod:`plasticollapse.analysis.inference` builds its statistics on them. Percentile
intervals as in :func:`plasticollapse.analysis.stats.bootstrap_ci`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def cluster_codes(clusters: Any) -> np.ndarray:
    """One integer per run naming its cluster (its seed): equal labels, equal codes.

    Missing labels (None, NaN) all share one code: runs whose seed is unknown cannot be
    told apart from one another, so they count as one cluster (the cautious reading)."""
    labels = [_cluster_label(c) for c in np.asarray(clusters, dtype=object).ravel()]
    _, codes = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
    return codes.astype(np.int64).ravel()


def _cluster_label(value: Any) -> str:
    """Seed 1 and 1.0 are one seed; None and NaN are "missing"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "\0missing"
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return repr(float(value))
    return str(value)


def cluster_draws(clusters: Any, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Bootstrap weights resampling whole CLUSTERS (seeds) with replacement.

    Each of ``n_boot`` replicates draws as many clusters as there are, uniformly with
    replacement (``numpy.random.default_rng(seed)``: deterministic); a run enters the
    replicate once per draw of its cluster, so runs nested in one seed (settings that share
    the seed's first task, or its data order) always travel together. Returns the
    (n_boot, n_runs) matrix of those counts: a statistic evaluated with frequency weights
    w[b] equals the statistic of replicate b's runs written out with their repeats.
    """
    codes = cluster_codes(clusters)
    n_clusters = int(codes.max()) + 1 if codes.size else 0
    if n_clusters == 0 or n_boot <= 0:
        return np.zeros((0, codes.size))
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n_clusters, size=(n_boot, n_clusters))
    counts = np.zeros((n_boot, n_clusters))
    np.add.at(counts, (np.repeat(np.arange(n_boot), n_clusters), drawn.ravel()), 1.0)
    return counts[:, codes]


def percentile_interval(draws: Any, level: float = 0.95) -> tuple[float, float]:
    """The (1 - level)/2 and (1 + level)/2 quantiles of the finite bootstrap draws (the
    percentile interval, as :func:`bootstrap_ci`); NaN when no draw is finite."""
    d = np.asarray(draws, dtype=np.float64).ravel()
    d = d[np.isfinite(d)]
    if not d.size:
        return math.nan, math.nan
    tail = (1 - level) / 2
    low, high = np.quantile(d, [tail, 1 - tail])
    return float(low), float(high)


def weighted_mean(values: Any, weights: np.ndarray) -> np.ndarray:
    """Per replicate (row of ``weights``) the weighted mean of the finite ``values``
    (one per run); NaN for a replicate that puts no weight on a finite value."""
    v = np.asarray(values, dtype=np.float64).ravel()
    ok = np.isfinite(v)
    w = np.atleast_2d(weights)[:, ok]
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, w @ v[ok] / total, np.nan)


def weighted_r(x: Any, y: Any, weights: np.ndarray) -> np.ndarray:
    """Per replicate the Pearson r of the finite pairs (x_i, y_i) with frequency weights
    w_i (= r of the pairs written out w_i times each):

        r_w = sum w (x - x̄_w)(y - ȳ_w) / sqrt(sum w (x - x̄_w)^2 sum w (y - ȳ_w)^2)

    NaN where fewer than 3 distinct pairs carry weight or a side is constant."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if not x.size == y.size == w.shape[1]:
        raise ValueError(f"x, y and the weights' columns differ: {x.size}, {y.size}, {w.shape[1]}")
    ok = np.isfinite(x) & np.isfinite(y)
    return weighted_r_rows(x[ok], y[ok], w[:, ok])


def weighted_r_rows(x: np.ndarray, y: np.ndarray, w: np.ndarray, min_pairs: int = 3):
    """Row-wise weighted r: x and y are (n,) or (replicates, n), ``w`` (replicates, n)."""
    x, y = np.broadcast_to(x, w.shape), np.broadcast_to(y, w.shape)
    total = w.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = x - (w * x).sum(axis=1, keepdims=True) / total
        dy = y - (w * y).sum(axis=1, keepdims=True) / total
        sxy, sxx, syy = ((w * a * b).sum(axis=1) for a, b in ((dx, dy), (dx, dx), (dy, dy)))
        r = sxy / np.sqrt(sxx * syy)
    # A side is constant when its spread is rounding noise against its size.
    flat_x = ~(sxx > 1e-20 * (w * x * x).sum(axis=1))
    flat_y = ~(syy > 1e-20 * (w * y * y).sum(axis=1))
    r[((w > 0).sum(axis=1) < min_pairs) | flat_x | flat_y] = np.nan
    return np.clip(r, -1.0, 1.0)


def weighted_partial_r(x: Any, y: Any, z: Any, weights: np.ndarray) -> np.ndarray:
    """Per replicate the partial correlation of x and y given the columns of z, with
    frequency weights: the weighted r of the residuals of x and of y after a weighted
    least-squares fit on [1, z] (with one column z this is :func:`partial_r`'s
    (r_xy - r_xz r_yz) / sqrt((1 - r_xz^2)(1 - r_yz^2))). ``z`` is (runs,) or
    (runs, k); runs missing any value are left out. NaN where fewer than k + 3 distinct
    runs carry weight (the residuals have no spread left to correlate)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    z = np.asarray(z, dtype=np.float64).reshape(x.size, -1)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if not x.size == y.size == w.shape[1]:
        raise ValueError(f"x, y and the weights' columns differ: {x.size}, {y.size}, {w.shape[1]}")
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(z).all(axis=1)
    x, y, w = x[ok], y[ok], w[:, ok]
    design = np.column_stack([np.ones(x.size), z[ok]])
    # Weighted normal equations per replicate; pinv keeps a replicate whose draws leave a
    # column of z constant finite (that column then explains nothing).
    gram = np.einsum("bn,ni,nj->bij", w, design, design)
    inverse = np.linalg.pinv(gram)
    residuals = []
    for v in (x, y):
        beta = np.einsum("bij,bj->bi", inverse, np.einsum("bn,ni,n->bi", w, design, v))
        residuals.append(v[None, :] - beta @ design.T)
    rx, ry = residuals
    return weighted_r_rows(rx, ry, w, min_pairs=design.shape[1] + 2)
