"""Statistics on run results: one correlation, bootstrap intervals over seeds, sliding windows.

Correlation
-----------
:func:`correlate` is the one Pearson / Spearman coefficient of the package (the report, the
figures and every run's summary.json use it); :func:`correlation` adds the two-sided
p-values and the number of pairs. Both drop the pairs where either value is NaN, inf or
None first, and give NaN with fewer than 3 pairs or a constant series.

Bootstrap
---------
:func:`bootstrap_ci` puts a percentile interval on any statistic of a set of runs with
``scipy.stats.bootstrap``, resampling RUNS (seeds) with replacement and never the steps of
a run (consecutive steps of one run are not independent draws).
:func:`bootstrap_over_seeds` applies it to correlations of (runs x steps) curves,
:func:`bootstrap_mean` to the mean of per-seed numbers.

Sliding windows
---------------
:func:`sliding_window_r` correlates x and y inside windows of steps;
:func:`windowed_r` does it for every run of a pair of (runs x steps) curves on one grid of
window ends.

Across runs
-----------
:func:`across_runs_r` correlates one number per run with a per-step quantity, at every
step (the NC-threshold analysis: NC1 after pre-training vs PL_i, for each task i), and
:func:`gaussian_smooth` smooths such a series as the authors plotted it.

Clusters
--------
The seed-cluster bootstrap (:func:`cluster_draws`, :func:`weighted_r`, ...) is
:mod:`plasticollapse.analysis.clusters`; its names are importable from here too.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage, stats

# The seed-cluster bootstrap moved to its own module; these names keep older imports working.
from plasticollapse.analysis.clusters import (  # noqa: F401
    cluster_codes,
    cluster_draws,
    percentile_interval,
    weighted_mean,
    weighted_partial_r,
    weighted_r,
    weighted_r_rows,
)

METHODS = ("pearson", "spearman")


# =========================================================================== correlation


def _finite_pairs(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (x_i, y_i) where both are finite numbers (None counts as missing)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length: {x.size} vs {y.size}")
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def _coefficient(x: np.ndarray, y: np.ndarray, method: str) -> float:
    """r of finite pairs; NaN with fewer than 3 pairs or a constant side."""
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    if method == "spearman":  # Spearman rho is Pearson r of the ranks, ties averaged
        x, y = stats.rankdata(x), stats.rankdata(y)
    dx, dy = x - x.mean(), y - y.mean()
    r = float(np.sum(dx * dy) / math.sqrt(float(np.sum(dx * dx) * np.sum(dy * dy))))
    return min(1.0, max(-1.0, r))  # rounding can step just outside [-1, 1]


def correlate(x: Any, y: Any, method: str = "pearson") -> float:
    """Pearson r (or Spearman rho) of the finite pairs (x_i, y_i).

    r = sum (x_i - x̄)(y_i - ȳ) / sqrt(sum (x_i - x̄)^2 sum (y_i - ȳ)^2);
    rho = r of the ranks, ties given their average rank (as ``scipy.stats.spearmanr``).
    Pairs where either value is NaN, inf or None are dropped first. NaN with fewer than 3
    pairs or when either side is constant (r is undefined or meaningless there).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    return _coefficient(*_finite_pairs(x, y), method)


def p_value(r: float, n: int) -> float:
    """Two-sided p-value of a correlation r over n pairs under no association.

    t = r sqrt((n - 2) / (1 - r^2)) follows Student's t with n - 2 degrees of freedom
    (exact for Pearson r of normal data, as ``scipy.stats.pearsonr``; the usual
    approximation for Spearman rho, as ``scipy.stats.spearmanr``); p = 2 P(T > |t|).
    """
    if not math.isfinite(r) or n < 3:
        return math.nan
    if abs(r) >= 1.0:
        return 0.0
    t = abs(r) * math.sqrt((n - 2) / (1.0 - r * r))
    return float(2.0 * stats.t.sf(t, n - 2))


def correlation(x: Any, y: Any) -> dict[str, float]:
    """Both coefficients of the finite pairs with their p-values (see :func:`correlate`).

    Returns ``{"pearson_r", "pearson_p", "spearman_rho", "spearman_p", "n"}``; ``n`` is
    the number of finite pairs, reported even when the coefficients are NaN.
    """
    fx, fy = _finite_pairs(x, y)
    r, rho = _coefficient(fx, fy, "pearson"), _coefficient(fx, fy, "spearman")
    n = int(fx.size)
    return {
        "pearson_r": r,
        "pearson_p": p_value(r, n),
        "spearman_rho": rho,
        "spearman_p": p_value(rho, n),
        "n": n,
    }


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    """Per-column mean over the rows that have a value there (all-NaN columns: NaN, quietly)."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=0)


def nanmean(values: Any) -> float:
    """The mean of the finite values, NaN when there are none."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def mean_curve_r(x: np.ndarray, y: np.ndarray, method: str = "pearson") -> float:
    """corr over steps of the per-step means over runs: corr_s(mean_r x[r, s], mean_r y[r, s])."""
    return correlate(_nanmean_rows(x), _nanmean_rows(y), method)


def per_run_r(x: np.ndarray, y: np.ndarray, method: str = "pearson") -> np.ndarray:
    """One correlation per run (row): r_r = corr_s(x[r, s], y[r, s])."""
    x, y = np.atleast_2d(x), np.atleast_2d(y)
    return np.array([correlate(a, b, method) for a, b in zip(x, y, strict=True)])


def pooled_r(x: np.ndarray, y: np.ndarray, method: str = "pearson") -> float:
    """corr of all (x[r, s], y[r, s]) points of all runs pooled together."""
    return correlate(np.ravel(x), np.ravel(y), method)


#: The statistics :func:`bootstrap_over_seeds` can resample.
STATISTICS: dict[str, Callable[[np.ndarray, np.ndarray, str], float]] = {
    "mean_curve": mean_curve_r,
    "mean_of_runs": lambda x, y, m: nanmean(per_run_r(x, y, m)),
    "pooled": pooled_r,
}


# =========================================================================== bootstrap


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    n_runs: int,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """Percentile bootstrap interval over runs for any ``statistic(indices) -> float``.

    ``scipy.stats.bootstrap`` draws ``n_boot`` index vectors of length ``n_runs`` uniformly
    with replacement (``numpy.random.default_rng(seed)``: deterministic), evaluates
    ``statistic`` on each, and returns the (1 - level)/2 and (1 + level)/2 quantiles of the
    draws (``method="percentile"``). Draws where the statistic is undefined (NaN: e.g. every
    drawn run has a constant curve) are left out of the quantiles. The interval is NaN with
    fewer than 2 runs (resampling one run says nothing about the spread over seeds) or when
    ``n_boot`` is 0.

    Returns ``{"estimate", "low", "high", "n_boot", "n_runs", "level", "n_valid"}``;
    ``estimate`` is the statistic on the original runs, ``n_valid`` the finite draws.
    """
    estimate = float(statistic(np.arange(n_runs))) if n_runs else math.nan
    out = {"estimate": estimate, "low": math.nan, "high": math.nan}
    out.update({"n_boot": int(n_boot), "n_runs": int(n_runs), "level": level, "n_valid": 0})
    if n_runs < 2 or n_boot <= 0:
        return out
    with warnings.catch_warnings():
        # NaN draws make scipy's interval NaN and warn; the finite draws are used below.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(
            (np.arange(n_runs),),
            statistic,
            n_resamples=n_boot,
            vectorized=False,
            confidence_level=level,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    draws = np.asarray(result.bootstrap_distribution, dtype=np.float64)
    finite = draws[np.isfinite(draws)]
    out["n_valid"] = int(finite.size)
    low, high = result.confidence_interval
    if finite.size == draws.size:
        out["low"], out["high"] = float(low), float(high)
    elif finite.size:
        tail = (1 - level) / 2
        out["low"], out["high"] = (float(v) for v in np.quantile(finite, [tail, 1 - tail]))
    return out


def bootstrap_over_seeds(
    x: np.ndarray,
    y: np.ndarray,
    statistic: str = "mean_curve",
    method: str = "pearson",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """A ``level`` (95 %) percentile interval for a correlation, resampling SEEDS (runs).

    ``x`` and ``y`` are (runs x steps) arrays on the same runs and step grid. Each
    bootstrap replicate draws R rows (runs) with replacement, keeps each drawn run's whole
    curve, and recomputes ``statistic``:

    * ``"mean_curve"``: r over steps between the per-step means over the drawn runs (the
      Permuted MNIST headline: mean NC1 vs mean accuracy per task);
    * ``"mean_of_runs"``: the mean over the drawn runs of each run's own r over steps (the
      warm-start per-seed correlations);
    * ``"pooled"``: r over all (x, y) points of the drawn runs pooled.

    See :func:`bootstrap_ci` for the returned dict.
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same (runs, steps) shape: {x.shape} vs {y.shape}")
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {sorted(STATISTICS)}, not {statistic!r}")
    fn = STATISTICS[statistic]
    return bootstrap_ci(lambda idx: fn(x[idx], y[idx], method), x.shape[0], n_boot, seed, level)


def bootstrap_mean(
    values: Sequence[float] | np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """Percentile interval of the mean of per-seed numbers (NaNs ignored), resampling seeds."""
    v = np.asarray(values, dtype=np.float64)
    return bootstrap_ci(lambda idx: nanmean(v[idx]), v.size, n_boot, seed, level)


# =========================================================================== sliding window


def window_ends(
    steps: Any, window: float, stride: float, first_end: float | None = None
) -> np.ndarray:
    """Last steps of the windows: ``first_end, first_end + stride, ...`` up to the last step.

    ``first_end`` defaults to ``window``: warm-up epochs count from 1, so the first window
    (0, window] holds exactly the first ``window`` epochs of warm-up.
    """
    steps = np.asarray(steps, dtype=np.float64)
    steps = steps[np.isfinite(steps)]
    if steps.size == 0 or stride <= 0:
        return np.empty(0)
    start = float(window if first_end is None else first_end)
    last = float(steps.max())
    if start > last:
        return np.empty(0)
    return np.arange(start, last + stride * 1e-9, stride)


def sliding_window_r(
    steps: Any,
    x: Any,
    y: Any,
    window: float = 100,
    stride: float = 5,
    first_end: float | None = None,
    method: str = "pearson",
    min_points: int = 3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correlation of x vs y inside sliding windows of ``window`` steps (not checkpoints).

    The window ending at step e holds the points whose step s satisfies
    ``e - window < s <= e``; ends are :func:`window_ends`. With warm-up checkpoints every 5
    epochs and window 100, the window ending at epoch 100 holds epochs 5, 10, ..., 100
    (20 checkpoints). r is NaN when a window holds fewer than ``min_points`` finite pairs.

    Returns ``(ends, r, n)`` with n the number of finite pairs in each window.
    """
    steps = np.asarray(steps, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ends = window_ends(steps, window, stride, first_end)
    rs, ns = np.full(ends.size, np.nan), np.zeros(ends.size, dtype=int)
    for i, e in enumerate(ends):
        inside = (steps > e - window) & (steps <= e) & np.isfinite(x) & np.isfinite(y)
        ns[i] = int(inside.sum())
        if ns[i] >= min_points:
            rs[i] = correlate(x[inside], y[inside], method)
    return ends, rs, ns


def windowed_r(
    steps: Any,
    x: np.ndarray,
    y: np.ndarray,
    window: float = 100,
    stride: float = 5,
    first_end: float | None = None,
    method: str = "pearson",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`sliding_window_r` for every run (row) of (runs x steps) curves, on one grid.

    All runs share the window ends computed from ``steps``, so means and stds over runs can
    be taken per window end. Returns ``(ends, r, n)`` with r and n of shape (runs, ends).
    """
    x, y = np.atleast_2d(x), np.atleast_2d(y)
    ends = window_ends(steps, window, stride, first_end)
    r = np.full((x.shape[0], ends.size), np.nan)
    n = np.zeros((x.shape[0], ends.size), dtype=int)
    if ends.size:
        for i in range(x.shape[0]):
            e, r_i, n_i = sliding_window_r(steps, x[i], y[i], window, stride, ends[0], method)
            r[i, : e.size], n[i, : e.size] = r_i, n_i
    return ends, r, n


# =========================================================================== across runs


def across_runs_r(x: Any, y: np.ndarray, method: str = "pearson") -> np.ndarray:
    """r_s = corr over runs of (x[r], y[r, s]) for every step s: ``x`` holds one number per
    run (rows of the (runs x steps) ``y``). Runs missing either value at a step are left
    out there; NaN where fewer than 3 remain."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    if y.shape[0] != x.size:
        raise ValueError(f"x has {x.size} runs but y has {y.shape[0]} rows")
    return np.array([correlate(x, y[:, s], method) for s in range(y.shape[1])])


def partial_r(x: Any, y: Any, z: Any) -> float:
    """Pearson's partial correlation of x and y given z, over the entries where all three
    are finite::

        r_xy.z = (r_xy - r_xz r_yz) / sqrt((1 - r_xz^2) (1 - r_yz^2))

    the correlation of the residuals of x and of y after a least-squares line on z (the
    first-order partial correlation; see e.g. Wikipedia, "Partial correlation").
    NaN with fewer than 4 such entries or when z explains x or y exactly."""
    x, y, z = (np.asarray(v, dtype=np.float64).ravel() for v in (x, y, z))
    if not x.size == y.size == z.size:
        raise ValueError(f"x, y and z need one value per run, got {x.size}, {y.size}, {z.size}")
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    if ok.sum() < 4:
        return math.nan
    x, y, z = x[ok], y[ok], z[ok]
    r_xy, r_xz, r_yz = correlate(x, y), correlate(x, z), correlate(y, z)
    denominator = (1 - r_xz**2) * (1 - r_yz**2)
    if not np.isfinite(denominator) or denominator <= 1e-12:
        return math.nan
    return float(np.clip((r_xy - r_xz * r_yz) / math.sqrt(denominator), -1.0, 1.0))


def across_runs_partial_r(x: Any, y: np.ndarray, z: Any) -> np.ndarray:
    """:func:`across_runs_r` with z held fixed: per step s, :func:`partial_r` over runs of
    (x[r], y[r, s]) given z[r] (one number per run, like x)."""
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    return np.array([partial_r(x, y[:, s], z) for s in range(y.shape[1])])


def gaussian_smooth(values: Any, sigma: float = 4.0) -> np.ndarray:
    """Gaussian smoothing with standard deviation ``sigma`` steps, as
    ``scipy.ndimage.gaussian_filter1d`` (mode "reflect", truncated at 4 sigma: the authors'
    call). NaN entries are left out, the finite ones smoothed as one sequence, and NaN put
    back where they were."""
    v = np.asarray(values, dtype=np.float64)
    out = np.full(v.shape, np.nan)
    ok = np.isfinite(v)
    if ok.any():
        out[ok] = ndimage.gaussian_filter1d(v[ok], sigma=sigma) if sigma > 0 else v[ok]
    return out
