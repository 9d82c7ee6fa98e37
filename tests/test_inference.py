"""Inference on dependent data (plasticollapse.analysis.inference and the cluster tools of
stats): known answers on synthetic series, each beside the naive statistic it replaces."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm

from plasticollapse.analysis import inference, stats


def covers_zero(estimate: inference.Estimate) -> bool:
    return estimate.ci_low <= 0 <= estimate.ci_high


def excludes_zero(estimate: inference.Estimate) -> bool:
    return estimate.ci_low > 0 or estimate.ci_high < 0


# =========================================================================== seed bootstrap


def test_cluster_draws_move_the_runs_of_a_seed_together():
    seeds = [0, 0, 1, 1, 1, 2, 3.0, 3]
    w = stats.cluster_draws(seeds, n_boot=200, seed=1)
    assert w.shape == (200, 8)
    for members in ([0, 1], [2, 3, 4], [6, 7]):  # 3 and 3.0 are one seed
        assert (w[:, members] == w[:, members[:1]]).all()
    # Each replicate draws as many seeds as there are (4).
    codes = stats.cluster_codes(seeds)
    first = [int(np.flatnonzero(codes == c)[0]) for c in range(4)]
    assert (w[:, first].sum(axis=1) == 4).all()
    assert np.array_equal(w, stats.cluster_draws(seeds, n_boot=200, seed=1))


def test_weighted_statistics_are_the_statistics_of_the_resampled_runs():
    rng = np.random.default_rng(3)
    x, z = rng.normal(size=12), rng.normal(size=12)
    y = x + z + rng.normal(size=12)
    w = stats.cluster_draws(np.repeat(np.arange(6), 2), n_boot=5, seed=0)
    for b in range(5):
        k = w[b].astype(int)
        xs, ys, zs = np.repeat(x, k), np.repeat(y, k), np.repeat(z, k)
        assert stats.weighted_r(x, y, w[b : b + 1])[0] == pytest.approx(stats.correlate(xs, ys))
        partial = stats.weighted_partial_r(x, y, z, w[b : b + 1])[0]
        assert partial == pytest.approx(stats.partial_r(xs, ys, zs))


# =========================================================================== within runs


def trending_runs(n_runs=5, steps=60, shared=0.0, seed=0):
    """x = trend + e_x, y = -trend + shared * e_x + e_y: both trend; they share the
    detrended signal only as far as ``shared`` says."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps, dtype=float)
    trend = t / steps
    e_x, e_y = rng.normal(0, 0.05, (2, n_runs, steps))
    x = trend + e_x
    y = -trend + shared * e_x + e_y
    return x, y, t, np.arange(n_runs)


@pytest.mark.parametrize("how", inference.DETRENDS)
def test_a_shared_trend_alone_is_no_association_once_detrended(how):
    x, y, t, seeds = trending_runs(shared=0.0)
    draws = stats.cluster_draws(seeds, 1000, 0)
    got = inference.detrended_association(x, y, t, seeds, how, draws=draws)
    assert covers_zero(got) and abs(got.estimate) < 0.15
    assert (got.n_runs, got.n_seeds) == (5, 5)
    assert got.n_steps == (59 if how == "diff" else 60)
    assert got.interval == "seed bootstrap"
    # The naive statistics read the trend as a strong relation, with a tiny p-value.
    naive = inference.paper_mean_curve_r(x, y, seeds, draws)
    assert naive.estimate < -0.9
    assert stats.p_value(naive.estimate, 60) < 1e-10
    assert inference.paper_per_seed_r(x, y, seeds, draws).estimate < -0.8


@pytest.mark.parametrize("how", inference.DETRENDS)
def test_a_shared_detrended_signal_is_found(how):
    x, y, t, seeds = trending_runs(shared=1.0)
    got = inference.detrended_association(
        x, y, t, seeds, how, draws=stats.cluster_draws(seeds, 1000, 0)
    )
    assert got.estimate > 0.5 and excludes_zero(got)  # r(e_x, e_x + e_y) = 1/sqrt(2)


def test_trend_residuals_remove_a_polynomial_exactly():
    t = np.arange(20.0)
    v = 3 + 0.5 * t - 0.01 * t**2 + 1e-4 * t**3
    assert np.allclose(inference.trend_residuals(v, t, degree=3), 0, atol=1e-9)
    assert not np.allclose(inference.trend_residuals(v, t, degree=1), 0, atol=1e-3)
    with pytest.raises(ValueError, match="detrend must be one of"):
        inference.detrend(v, t, "loess")


def ar1(rng, phi, n, scale=1.0):
    out = np.zeros(n)
    for i in range(1, n):
        out[i] = phi * out[i - 1] + scale * rng.normal()
    return out


def test_one_run_gets_a_newey_west_interval_wider_than_the_naive_one():
    # Two independent, strongly autocorrelated series: their r is noisy, and an interval
    # that treats the 200 points as independent is too narrow.
    rng = np.random.default_rng(5)
    x, y = ar1(rng, 0.9, 200), ar1(rng, 0.9, 200)
    r, low, high = inference.hac_slope_interval(y, x)
    assert r == pytest.approx(stats.correlate(x, y))
    zx, zy = (x - x.mean()) / x.std(), (y - y.mean()) / y.std()
    naive = sm.OLS(zy, sm.add_constant(zx)).fit().conf_int()[1]
    assert high - low > 1.5 * (naive[1] - naive[0])
    got = inference.detrended_association(x[None], y[None], np.arange(200), [0], "trend")
    assert got.interval == "Newey-West (one run)" and np.isfinite(got.ci_low)
    assert (got.n_runs, got.n_seeds) == (1, 1)


def test_several_runs_of_one_seed_get_no_interval():
    x, y, t, _ = trending_runs(n_runs=3, shared=1.0)
    got = inference.detrended_association(x, y, t, [4, 4, 4], draws=stats.cluster_draws([4] * 3))
    assert math.isnan(got.ci_low) and got.interval == "none: 1 seed (a bootstrap needs 3)"
    assert (got.n_runs, got.n_seeds) == (3, 1)
    # Two seeds: 3 distinct replicates, one the estimate itself; no interval either.
    two = inference.detrended_association(x, y, t, [0, 0, 1], draws=stats.cluster_draws([0, 0, 1]))
    assert math.isnan(two.ci_high) and two.interval == "none: 2 seeds (a bootstrap needs 3)"


# =========================================================================== lead-lag


def lagged_runs(shift: int, n_runs=6, steps=120, phi=0.8, seed=0):
    """y with autocorrelated changes (AR(1) increments); x_t = y_{t - shift} + noise:
    shift 1, the metric follows performance; shift -1, it moves one step ahead."""
    rng = np.random.default_rng(seed)
    x, y = np.zeros((n_runs, steps)), np.zeros((n_runs, steps))
    for i in range(n_runs):
        level = np.cumsum(ar1(rng, phi, steps + 2, 0.01))
        y[i] = level[1:-1]
        x[i] = level[1 - shift : steps + 1 - shift] + rng.normal(0, 0.002, steps)
    return x, y, np.arange(n_runs)


def test_a_metric_that_follows_performance_is_not_reported_as_leading():
    x, y, seeds = lagged_runs(shift=1)
    draws = stats.cluster_draws(seeds, 1000, 0)
    got = inference.lead_lag(x, y, seeds, horizon=1, own_lags=2, draws=draws)
    assert covers_zero(got) and abs(got.estimate) < 0.15
    assert inference.follows(x, y, seeds, draws=draws).estimate > 0.5
    # The naive version, without performance's own past, reads the echo as a lead.
    naive = inference.lead_lag(x, y, seeds, horizon=1, own_lags=0, draws=draws)
    assert naive.estimate > 0.3 and excludes_zero(naive)


def test_a_metric_that_moves_first_is_reported_as_leading():
    x, y, seeds = lagged_runs(shift=-1)
    draws = stats.cluster_draws(seeds, 1000, 0)
    got = inference.lead_lag(x, y, seeds, draws=draws)
    assert got.estimate > 0.5 and excludes_zero(got)
    assert got.n_steps == 120 - 2 - 1  # t from own_lags to steps - horizon - 1


def test_lead_lag_design_by_hand():
    x = np.array([0.0, 1, 3, 6, 10, 15])
    y = np.array([0.0, 2, 2, 5, 9, 9])
    future, driver, own = inference.lead_lag_design(x, y, horizon=2, own_lags=1)
    # t = 1, 2, 3: future y_{t+2} - y_t, driver x_t - x_{t-1}, own y_t - y_{t-1}
    assert future.tolist() == [3.0, 7.0, 4.0]
    assert driver.tolist() == [1.0, 2.0, 3.0]
    assert own[:, 0].tolist() == [2.0, 0.0, 3.0]
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        inference.lead_lag_design(x, y, horizon=0)


# =========================================================================== across runs


def nested_runs(n_seeds=8, seed=0):
    """Runs = seeds x first-task epochs {1, 5, 20}. The late outcome depends on the
    setting and on a per-seed effect u; metric "setting_only" follows the setting, metric
    "seed_effect" measures u."""
    rng = np.random.default_rng(seed)
    fte = np.tile([1.0, 5.0, 20.0], n_seeds)
    seeds = np.repeat(np.arange(n_seeds), 3)
    u = rng.normal(size=n_seeds)[seeds]
    late = 0.05 * np.log(fte) + 0.02 * u + 0.004 * rng.normal(size=fte.size)
    setting_only = -np.log(fte) + 0.1 * rng.normal(size=fte.size)
    seed_effect = u + 0.2 * rng.normal(size=fte.size)
    return fte, seeds, late, setting_only, seed_effect


def test_across_runs_partial_r_removes_what_the_setting_explains():
    fte, seeds, late, setting_only, seed_effect = nested_runs()
    draws = stats.cluster_draws(seeds, 1000, 0)
    given = inference.run_defining_columns({"first_task_epochs": fte})
    raw = inference.across_runs(setting_only, late, seeds, None, 5, draws)
    partial = inference.across_runs(setting_only, late, seeds, given, 5, draws)
    # The naive r (and its p-value over 24 "independent" runs) credits the setting.
    assert raw.estimate < -0.5 and stats.p_value(raw.estimate, 24) < 0.01
    assert covers_zero(partial) and abs(partial.estimate) < 0.3
    found = inference.across_runs(seed_effect, late, seeds, given, 5, draws)
    assert found.statistic == "across_runs_partial_r"
    assert found.estimate > 0.7 and excludes_zero(found)
    assert (found.n_runs, found.n_seeds, found.n_steps) == (24, 8, 5)


def test_runs_nested_in_a_seed_widen_the_interval_as_they_should():
    # Three near-copies of each of 6 seeds: 6 independent units, not 18.
    rng = np.random.default_rng(2)
    x6, y6 = rng.normal(size=(2, 6))
    seeds = np.repeat(np.arange(6), 3)
    x = x6[seeds] + 1e-3 * rng.normal(size=18)
    y = 0.5 * x6[seeds] + y6[seeds] + 1e-3 * rng.normal(size=18)
    by_seed = inference.across_runs(x, y, seeds, draws=stats.cluster_draws(seeds, 2000, 0))
    by_run = inference.across_runs(x, y, seeds, draws=stats.cluster_draws(np.arange(18), 2000, 0))
    assert by_seed.estimate == pytest.approx(by_run.estimate)
    width = by_seed.ci_high - by_seed.ci_low
    assert width > 1.3 * (by_run.ci_high - by_run.ci_low)
    assert by_seed.n_seeds == 6


def test_run_defining_columns_code_settings_as_indicators():
    z = inference.run_defining_columns(
        {
            "fte": [1, 5, 1, 5, 1, 5],
            "remedy": ["none", "cbp", "l2", "none", "cbp", "l2"],
            "lr": [0.1] * 6,
            "threshold": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        }
    )
    # fte: 1 indicator; remedy: 2; lr (constant): none; threshold (a value per run): a number.
    assert z.shape == (6, 4)
    assert z[:, 0].tolist() == [0, 1, 0, 1, 0, 1]
    assert z[:, 1:3].sum(axis=0).tolist() == [2.0, 2.0]
    assert z[:, 3].tolist() == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
