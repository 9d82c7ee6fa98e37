"""Inference on dependent data: associations between a metric and performance that respect
how the runs were generated.

The steps of a run are not independent draws: metrics and performance trend together over
a run (lag-1 autocorrelation 0.95 for mean accuracy over Permuted tasks), so a Pearson r
over steps and its p-value read a shared trend as a relation. Runs are not independent
either when several settings share a seed (they share its first task, data order and
initialisation). Every statistic here therefore

* works on detrended series or on one number per run, never on raw levels alone;
* is one number per run (or one per study over runs), pooled over runs;
* gets its interval by bootstrap over SEEDS (:func:`~.clusters.cluster_draws`: runs of one
  seed resampled together), or, for a single run, from Newey-West (HAC) standard errors
  of the within-run regression (``statsmodels``), and never a p-value from an
  autocorrelated n;
* carries its n: runs, seeds and steps (:class:`Estimate`).

Statistics (x: a metric, y: performance, both (runs x steps); t indexes a run's steps)

* ``detrended_r_diff``: per run r(Δx_t, Δy_t) of first differences Δx_t = x_t - x_{t-1};
  pooled over runs as the Fisher-z mean tanh(mean atanh r_run).
* ``detrended_r_trend``: per run r of the residuals after a least-squares polynomial of
  degree ``degree`` in the step (the smooth trend), pooled the same way.
* ``lead_lag``: does the metric's change at t precede performance's change over t..t+k,
  beyond what performance's own past predicts? Per run, the partial correlation of
  y_{t+k} - y_t with Δx_t given Δy_t, ..., Δy_{t-p+1} (p = ``own_lags``): the
  standardised form of the coefficient of Δx_t in the regression
  y_{t+k} - y_t = a + b Δx_t + sum_j c_j Δy_{t-j} + e (a Granger-style test; Granger
  1969). A metric that merely follows performance (x_t = y_{t-1} + noise) adds nothing to
  Δy_{t-1} once p >= 2, so it reads ~0. ``follows`` swaps the roles (does performance's
  change precede the metric's?). Pooled by Fisher-z mean.
* ``across_runs_r`` / ``across_runs_partial_r``: one number per run, the metric at a fixed
  early step against the outcome's mean over later steps (the paper's NC-threshold design,
  for any metric); the partial r is given the variables that define the runs (first-task
  epochs, the remedy), as indicator columns: the association within settings.
* The paper's conventions, kept by name beside the above: ``paper_mean_curve_r`` (r across
  steps of the per-step means over runs: the Permuted headline) and ``paper_per_seed_r``
  (the mean over runs of each run's r of levels over its steps: the warm-start numbers).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from plasticollapse.analysis.clusters import (
    cluster_codes,
    cluster_draws,
    percentile_interval,
    weighted_mean,
    weighted_partial_r,
    weighted_r,
    weighted_r_rows,
)
from plasticollapse.analysis.stats import per_run_r

#: How a series is detrended: first differences, or residuals after a polynomial in step.
DETRENDS = ("diff", "trend")
#: Largest |r| before the Fisher transform (atanh(±1) is infinite).
R_CLIP = 1 - 1e-9


@dataclass(frozen=True)
class Estimate:
    """One statistic with its interval and its n.

    ``interval`` says where the interval came from: ``"seed bootstrap"`` (percentile, over
    ``n_seeds`` seeds), ``"Newey-West (one run)"``, or ``"none: <why>"`` (then the bounds
    are NaN). ``n_steps`` is the median number of steps (pairs, or regression rows) a run
    contributes; for an across-run statistic, the steps its outcome averages over.
    """

    statistic: str
    estimate: float
    ci_low: float
    ci_high: float
    n_runs: int
    n_seeds: int
    n_steps: int
    interval: str
    level: float = 0.95

    def row(self) -> dict[str, Any]:
        return asdict(self)


# =========================================================================== detrending


def first_differences(values: Any) -> np.ndarray:
    """Δv_t = v_t - v_{t-1} along the steps of each run (row); one step fewer."""
    v = np.atleast_2d(np.asarray(values, dtype=np.float64))
    return v[:, 1:] - v[:, :-1]


def trend_residuals(values: Any, steps: Any, degree: int = 3) -> np.ndarray:
    """v_t - p(s_t) per run, p the least-squares polynomial of ``degree`` in the step s
    (``numpy.polynomial.Polynomial.fit``, which maps the steps onto [-1, 1] so the fit is
    well conditioned), fitted to the run's finite values. A run with fewer than
    degree + 3 finite values is all NaN (too few points left to correlate)."""
    v = np.atleast_2d(np.asarray(values, dtype=np.float64))
    s = np.asarray(steps, dtype=np.float64)
    if s.size != v.shape[1]:
        raise ValueError(f"{s.size} steps for curves of {v.shape[1]} steps")
    out = np.full(v.shape, np.nan)
    for i, row in enumerate(v):
        ok = np.isfinite(row) & np.isfinite(s)
        if ok.sum() >= degree + 3:
            trend = np.polynomial.Polynomial.fit(s[ok], row[ok], degree)
            out[i, ok] = row[ok] - trend(s[ok])
    return out


def detrend(values: Any, steps: Any, how: str = "diff", degree: int = 3) -> np.ndarray:
    """:func:`first_differences` (``"diff"``) or :func:`trend_residuals` (``"trend"``)."""
    if how == "diff":
        return first_differences(values)
    if how == "trend":
        return trend_residuals(values, steps, degree)
    raise ValueError(f"detrend must be one of {DETRENDS}, not {how!r}")


# =========================================================================== one run: HAC


def newey_west_lags(n: int) -> int:
    """Newey & West's (1994) rule for the HAC bandwidth: floor(4 (n / 100)^(2/9))."""
    return int(math.floor(4 * (n / 100) ** (2 / 9)))


def hac_slope_interval(
    target: Any, regressor: Any, level: float = 0.95
) -> tuple[float, float, float]:
    """``(slope, low, high)`` of the OLS line z(target) = a + b z(regressor) + e, both sides
    standardised (so b is their Pearson r), with a Newey-West (HAC) interval
    (``statsmodels`` OLS, ``cov_type="HAC"``, :func:`newey_west_lags` lags): the interval
    for ONE run's r whose residuals are autocorrelated. Bounds clipped to [-1, 1]; NaN
    with fewer than 5 finite pairs or a constant side."""
    import statsmodels.api as sm

    t = np.asarray(target, dtype=np.float64).ravel()
    x = np.asarray(regressor, dtype=np.float64).ravel()
    ok = np.isfinite(t) & np.isfinite(x)
    t, x = t[ok], x[ok]
    if t.size < 5 or np.ptp(t) == 0 or np.ptp(x) == 0:
        return math.nan, math.nan, math.nan
    zt, zx = (t - t.mean()) / t.std(), (x - x.mean()) / x.std()
    fit = sm.OLS(zt, sm.add_constant(zx)).fit(
        cov_type="HAC", cov_kwds={"maxlags": newey_west_lags(t.size)}
    )
    low, high = fit.conf_int(alpha=1 - level)[1]
    return float(fit.params[1]), max(-1.0, float(low)), min(1.0, float(high))


# =========================================================================== pooling over runs


def fisher_mean(values: Any, weights: np.ndarray) -> np.ndarray:
    """tanh of the weighted mean of atanh(r): the usual way to average correlations."""
    r = np.clip(np.asarray(values, dtype=np.float64), -R_CLIP, R_CLIP)
    return np.tanh(weighted_mean(np.arctanh(r), weights))


#: Fewest seeds for a bootstrap interval: 2 seeds give 3 distinct replicates, one of them
#: the estimate itself, so the "interval" is a point, not a statement of uncertainty.
MIN_SEEDS = 3
#: Below this many seeds a percentile interval over seeds is rough (few distinct draws).
FEW_SEEDS = 5
#: Fewest replicates (as a fraction) where the statistic must be defined for an interval.
MIN_VALID = 0.5


def estimate_with_interval(
    statistic: str,
    value: Callable[[np.ndarray], np.ndarray],
    used: np.ndarray,
    seeds: Any,
    n_steps: int,
    draws: np.ndarray | None = None,
    one_run_interval: Callable[[], tuple[float, float, float]] | None = None,
    level: float = 0.95,
) -> Estimate:
    """The Estimate of a statistic ``value(weights)`` of the runs (one weight per run; a
    row of ones is the statistic itself), over the runs ``used`` (those with a value).

    The interval is the percentile interval of ``value`` over ``draws`` (seed bootstrap
    weights from :func:`~.clusters.cluster_draws`) when the used runs come from
    :data:`MIN_SEEDS` or more seeds and the statistic is defined in at least
    :data:`MIN_VALID` of the replicates; with a single run, the Newey-West interval
    ``one_run_interval()`` gives; otherwise none: runs of one or two seeds are not enough
    independent replicates, and no interval is better than a false one. With fewer than
    :data:`FEW_SEEDS` seeds the ``interval`` text says the bootstrap is rough.
    """
    used = np.asarray(used, dtype=bool)
    codes = cluster_codes(seeds)
    n_runs, n_seeds = int(used.sum()), len(set(codes[used]))
    estimate = float(value(np.ones((1, used.size)))[0]) if n_runs else math.nan
    low = high = math.nan
    if n_seeds >= MIN_SEEDS and draws is not None and len(draws):
        replicates = value(draws)
        if np.isfinite(replicates).mean() >= MIN_VALID:
            low, high = percentile_interval(replicates, level)
            how = "seed bootstrap"
            if n_seeds < FEW_SEEDS:
                how += f" (only {n_seeds} seeds: rough)"
        else:
            how = "none: the statistic is undefined in most bootstrap replicates"
    elif n_runs == 1 and one_run_interval is not None:
        _, low, high = one_run_interval()
        how = "Newey-West (one run)"
    elif not n_runs:
        how = "none: no run has a value"
    else:
        how = f"none: {n_seeds} seed{'s' * (n_seeds != 1)} (a bootstrap needs {MIN_SEEDS})"
    return Estimate(statistic, estimate, low, high, n_runs, n_seeds, n_steps, how, level)


def pooled_over_runs(
    statistic: str,
    per_run: Any,
    seeds: Any,
    n_steps: int,
    draws: np.ndarray | None = None,
    one_run_interval: Callable[[], tuple[float, float, float]] | None = None,
    level: float = 0.95,
) -> Estimate:
    """One number per run (a per-run r) pooled by :func:`fisher_mean`, with
    :func:`estimate_with_interval`'s interval."""
    values = np.asarray(per_run, dtype=np.float64).ravel()
    return estimate_with_interval(
        statistic,
        lambda w: fisher_mean(values, w),
        np.isfinite(values),
        seeds,
        n_steps,
        draws,
        one_run_interval,
        level,
    )


def _median_pairs(a: np.ndarray, b: np.ndarray) -> int:
    pairs = (np.isfinite(a) & np.isfinite(b)).sum(axis=1)
    return int(np.median(pairs)) if pairs.size else 0


def _only_run(per_run: np.ndarray, a: np.ndarray, b: np.ndarray, level: float):
    """The Newey-West interval of the one run that has a value (for :func:`pooled_over_runs`)."""
    index = int(np.flatnonzero(np.isfinite(per_run))[0]) if np.isfinite(per_run).any() else 0
    return lambda: hac_slope_interval(b[index], a[index], level)


# =========================================================================== within runs


def detrended_association(
    x: Any,
    y: Any,
    steps: Any,
    seeds: Any,
    how: str = "diff",
    degree: int = 3,
    draws: np.ndarray | None = None,
    level: float = 0.95,
) -> Estimate:
    """``detrended_r_<how>``: per run r of the detrended metric and performance, Fisher-z
    pooled over runs (see the module doc). ``x`` and ``y`` are (runs x steps) on one grid
    ``steps``; ``seeds`` one label per run; ``draws`` the seed bootstrap weights."""
    dx, dy = detrend(x, steps, how, degree), detrend(y, steps, how, degree)
    r = per_run_r(dx, dy)
    one_run = _only_run(r, dx, dy, level)
    n_steps = _median_pairs(dx, dy)
    return pooled_over_runs(f"detrended_r_{how}", r, seeds, n_steps, draws, one_run, level)


def lead_lag_design(
    x: Any, y: Any, horizon: int = 1, own_lags: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One run's lead-lag regression rows ``(future, driver, own_past)``:

        future_t = y_{t+k} - y_t,   driver_t = x_t - x_{t-1},
        own_past_t = [y_t - y_{t-1}, ..., y_{t-p+1} - y_{t-p}]   (k = horizon, p = own_lags)

    for every t where all are defined and finite (own_past has p columns, none for p = 0).
    """
    if horizon < 1 or own_lags < 0:
        raise ValueError(f"horizon must be >= 1 and own_lags >= 0, got {horizon}, {own_lags}")
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    t = np.arange(max(1, own_lags), x.size - horizon)
    future = y[t + horizon] - y[t]
    driver = x[t] - x[t - 1]
    own = np.empty((t.size, own_lags))
    for j in range(own_lags):
        own[:, j] = y[t - j] - y[t - j - 1]
    ok = np.isfinite(future) & np.isfinite(driver) & np.isfinite(own).all(axis=1)
    return future[ok], driver[ok], own[ok]


def _residual(v: np.ndarray, design: np.ndarray) -> np.ndarray:
    """v minus its least-squares fit on [1, design] (Frisch-Waugh-Lovell)."""
    full = np.column_stack([np.ones(v.size), design])
    beta, *_ = np.linalg.lstsq(full, v, rcond=None)
    return v - full @ beta


def lead_lag_rows(
    x: Any, y: Any, horizon: int = 1, own_lags: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """One run's (future change, metric change) after partialling out performance's own
    past changes from both: their r is the run's lead-lag partial correlation."""
    future, driver, own = lead_lag_design(x, y, horizon, own_lags)
    if future.size < own_lags + 4:
        return np.empty(0), np.empty(0)
    return _residual(future, own), _residual(driver, own)


def lead_lag(
    x: Any,
    y: Any,
    seeds: Any,
    horizon: int = 1,
    own_lags: int = 2,
    draws: np.ndarray | None = None,
    level: float = 0.95,
    statistic: str = "lead_lag",
) -> Estimate:
    """``lead_lag``: per run the partial r of y_{t+k} - y_t with Δx_t given performance's
    own ``own_lags`` past changes (see the module doc), Fisher-z pooled over runs.
    ``own_lags=0`` is the naive version (no control for performance's own past): a metric
    that only follows an autocorrelated performance then reads as leading."""
    x, y = np.atleast_2d(x), np.atleast_2d(y)
    rows = [lead_lag_rows(a, b, horizon, own_lags) for a, b in zip(x, y, strict=True)]
    width = max((f.size for f, _ in rows), default=0)
    future = np.full((len(rows), width), np.nan)
    driver = np.full((len(rows), width), np.nan)
    for i, (f, d) in enumerate(rows):
        future[i, : f.size], driver[i, : d.size] = f, d
    r = per_run_r(driver, future) if width else np.full(len(rows), np.nan)
    one_run = _only_run(r, driver, future, level)
    n_steps = _median_pairs(driver, future)
    return pooled_over_runs(statistic, r, seeds, n_steps, draws, one_run, level)


def follows(x: Any, y: Any, seeds: Any, horizon: int = 1, own_lags: int = 2, **kwargs) -> Estimate:
    """``follows``: :func:`lead_lag` with the roles swapped: does performance's change at t
    precede the metric's change over t..t+k, beyond the metric's own past?"""
    return lead_lag(y, x, seeds, horizon, own_lags, statistic="follows", **kwargs)


# =========================================================================== across runs


def across_runs(
    x: Any,
    y: Any,
    seeds: Any,
    given: Any = None,
    n_steps: int = 1,
    draws: np.ndarray | None = None,
    level: float = 0.95,
) -> Estimate:
    """``across_runs_r`` (``given`` None) or ``across_runs_partial_r``: r over runs of one
    number per run, x_r (the metric at an early step) and y_r (the later outcome), or the
    partial r given the columns of ``given`` (runs x k, the run-defining variables; see
    :func:`~.stats.weighted_partial_r`). Interval: seed bootstrap, runs of a seed drawn
    together; none with fewer than :data:`MIN_SEEDS` seeds."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    used = np.isfinite(x) & np.isfinite(y)
    if given is None or np.asarray(given).size == 0:
        name, value = "across_runs_r", lambda w: weighted_r(x, y, w)
    else:
        z = np.asarray(given, dtype=np.float64).reshape(x.size, -1)
        name, value = "across_runs_partial_r", lambda w: weighted_partial_r(x, y, z, w)
        used &= np.isfinite(z).all(axis=1)
    return estimate_with_interval(name, value, used, seeds, n_steps, draws, None, level)


def run_defining_columns(settings: Any) -> np.ndarray:
    """The run-defining variables as a (runs x k) float matrix for a partial r.

    A setting that takes few values (at most half as many as there are runs: first-task
    epochs 1, 5, 20; a remedy's name) becomes indicator columns of its values but the
    first, so the partial r is the association WITHIN settings, whatever shape the
    setting's own effect has (a line in first-task epochs would leave a log-shaped effect
    behind). A numeric setting with more distinct values enters as a number. Columns
    constant over the runs are dropped."""
    import pandas as pd

    frame = pd.DataFrame(settings).reset_index(drop=True)
    columns = []
    for name in frame.columns:
        values = frame[name]
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all() and values.nunique() > len(frame) / 2:
            columns.append(numeric.to_numpy(dtype=np.float64)[:, None])
        else:
            dummies = pd.get_dummies(values.astype(str), drop_first=True)
            columns.append(dummies.to_numpy(dtype=np.float64))
    if not columns:
        return np.empty((len(frame), 0))
    z = np.hstack(columns)
    return z[:, np.ptp(z, axis=0) > 0] if z.size else z


# =========================================================================== paper conventions


def paper_mean_curve_r(
    x: Any, y: Any, seeds: Any, draws: np.ndarray | None = None, level: float = 0.95
) -> Estimate:
    """``paper_mean_curve_r``: r across steps of the per-step means over runs (the
    Permuted headline, e.g. -0.944). Its seed bootstrap recomputes the mean curves over
    each replicate's runs; a single run gets the Newey-West interval of its levels' r."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    has = (np.isfinite(x) & np.isfinite(y)).any(axis=1)
    n_steps = int(np.isfinite(_means(x, np.ones((1, len(x))))[0]).sum())
    only = int(np.flatnonzero(has)[0]) if has.any() else 0
    return estimate_with_interval(
        "paper_mean_curve_r",
        lambda w: _mean_curve_r(x, y, w),
        has,
        seeds,
        n_steps,
        draws,
        lambda: hac_slope_interval(y[only], x[only], level),
        level,
    )


def _means(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per replicate the per-step weighted mean over the runs that have a value there."""
    ok = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ np.where(ok, values, 0.0)) / (weights @ ok)


def _mean_curve_r(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    mx, my = _means(x, weights), _means(y, weights)
    both = np.isfinite(mx) & np.isfinite(my)
    return weighted_r_rows(np.where(both, mx, 0.0), np.where(both, my, 0.0), both * 1.0)


def paper_per_seed_r(
    x: Any, y: Any, seeds: Any, draws: np.ndarray | None = None, level: float = 0.95
) -> Estimate:
    """``paper_per_seed_r``: the plain mean over runs of each run's r of LEVELS over its
    steps (the warm-start convention, e.g. +0.85 to +0.89 per seed). Seed bootstrap of
    that mean; a single run gets the Newey-West interval of its r."""
    x, y = np.atleast_2d(x), np.atleast_2d(y)
    r = per_run_r(x, y)
    return estimate_with_interval(
        "paper_per_seed_r",
        lambda w: weighted_mean(r, w),
        np.isfinite(r),
        seeds,
        _median_pairs(x, y),
        draws,
        _only_run(r, x, y, level),
        level,
    )


__all__ = [
    "DETRENDS",
    "Estimate",
    "across_runs",
    "cluster_draws",
    "detrend",
    "detrended_association",
    "estimate_with_interval",
    "first_differences",
    "fisher_mean",
    "follows",
    "hac_slope_interval",
    "lead_lag",
    "lead_lag_design",
    "newey_west_lags",
    "paper_mean_curve_r",
    "paper_per_seed_r",
    "pooled_over_runs",
    "run_defining_columns",
    "trend_residuals",
]
