"""The matrix's numbers: each run's final values, the study x remedy table with seed-bootstrap
intervals and each remedy's difference from the baseline (paired by seed), and per study the
correlation of collapse with performance across remedies, with its leave-one-remedy-out range.

A run's value of a metric is the mean of its last ``last`` finite values in metrics.jsonl
(``last = 1``: the value at the last step where the run measured it). Only complete runs
count (a summary.json; a diverged run counts with the rows it measured before diverging,
and the table says how many diverged). A metric that a study's rows never hold is NaN
("n/a" in matrix.md), never an error.

Scale. A metric in :data:`LOG_METRICS` (NC1: a ratio of spreads that spans orders of
magnitude, one seed's 8e5 next to another's 0.3) is averaged on log10: the cell is the
geometric mean over seeds, and its difference from the baseline is the mean log10 ratio,
shown as a factor. Every other metric is averaged as it is.

For each (study, remedy) and metric, over the seeds s that have a value v_s (on that scale):

* the mean over seeds, mean_s v_s, with a 95 % percentile interval from a bootstrap over
  seeds (:func:`plasticollapse.analysis.inference.estimate_with_interval`, resampling
  weights :func:`~plasticollapse.analysis.clusters.cluster_draws`); none with fewer than
  :data:`~plasticollapse.analysis.inference.MIN_SEEDS` seeds (two seeds give three distinct
  replicates, one the estimate itself: a "range", not an interval);
* the difference from the baseline remedy PAIRED by seed, d_s = v_s(remedy) - v_s(baseline)
  over the seeds both have, mean_s d_s with its seed-bootstrap interval: a seed's first task,
  data order and initialisation are shared by every remedy, so pairing removes what the
  seeds share; and whether that interval excludes 0 (``<m>_excludes_0``);
* the standardised difference z = mean d / (sd(d) / sqrt(n)) (sd with n - 1; a paired t
  statistic), 0 when every d_s is 0 and +-inf when they are equal and nonzero, which the
  heatmap clips: its colour cannot be set by another cell's size.

Across remedies (per study, per (x, y) pair of ``config.correlate``): Pearson r of the
per-remedy means (on the metrics' scales), with a seed-bootstrap interval (a replicate
redraws the seeds and recomputes every remedy's mean) and the range of r when each remedy
in turn is left out (leave-one-remedy-out): a remedy that alone makes the correlation shows
as a range that reaches far from r. Spearman rho of the means, and r across runs (one point
per remedy and seed) with its seed-bootstrap interval, beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from plasticollapse.analysis.clusters import cluster_draws, weighted_mean, weighted_r_rows
from plasticollapse.analysis.inference import Estimate, across_runs, estimate_with_interval
from plasticollapse.analysis.stats import correlation
from plasticollapse.matrix.config import MatrixConfig
from plasticollapse.matrix.plan import Cell
from plasticollapse.runs.folder import RunFolder
from plasticollapse.studies.common import finite

#: Metrics averaged and compared on log10 (geometric means, ratios).
LOG_METRICS = ("nc1", "test_nc1")
#: Bootstrap seed: the same resamples on every run of the command.
BOOTSTRAP_SEED = 0


def finite_values(rows: Sequence[dict[str, Any]], key: str) -> list[float]:
    """The finite values of ``key`` over ``rows``, in row order (rows without it skipped)."""
    return [float(r[key]) for r in rows if finite(r.get(key))]


def final_value(rows: Sequence[dict[str, Any]], metric: str, last: int = 1) -> float:
    """Mean of the last ``last`` finite values of ``metric`` over ``rows`` (NaN: none)."""
    values = finite_values(rows, metric)
    return float(np.mean(values[-last:])) if values else math.nan


#: Counts a run's rows hold per task, given in runs.csv as the run's total: whether a remedy
#: acted at all at its setting (Continual Backprop at a rate too low for a small network
#: replaces no unit, and its row then equals plain's for want of action, not of effect).
RUN_TOTALS = ("cbp_units_replaced",)


def run_total(rows: Sequence[dict[str, Any]], key: str) -> float:
    """The sum of ``key`` over the rows that hold it (NaN: none does)."""
    values = finite_values(rows, key)
    return float(sum(values)) if values else math.nan


def run_values(cells: Sequence[Cell], metrics: Sequence[str], last: int = 1) -> pd.DataFrame:
    """One row per cell: study, remedy, seed, status, folder, reason, each metric's final
    value (NaN unless the run is complete and measured it) and each of :data:`RUN_TOTALS`
    summed over the run's rows (NaN where no row holds it)."""
    records = []
    for cell in cells:
        record: dict[str, Any] = {
            "study": cell.study,
            "remedy": cell.remedy,
            "seed": cell.seed,
            "status": cell.status,
            "folder": cell.spec.folder if cell.spec is not None else "",
            "reason": cell.reason,
        }
        rows: list[dict[str, Any]] = []
        if cell.spec is not None and record["status"] == "complete":
            folder = RunFolder(cell.spec.folder)
            rows = folder.read_metrics()
            record["status"] = (folder.read_summary() or {}).get("status", "complete")
        record.update({m: final_value(rows, m, last) for m in metrics})
        record.update({key: run_total(rows, key) for key in RUN_TOTALS})
        records.append(record)
    columns = ["study", "remedy", "seed", "status", "folder", "reason", *metrics, *RUN_TOTALS]
    return pd.DataFrame(records, columns=columns)


# =========================================================================== scale


def to_scale(values: Any, metric: str) -> np.ndarray:
    """Values on the scale the matrix averages ``metric`` on: log10 for :data:`LOG_METRICS`
    (a value <= 0 has no logarithm: NaN), else unchanged."""
    v = np.asarray(values, dtype=np.float64)
    if metric not in LOG_METRICS:
        return v
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v > 0, np.log10(np.where(v > 0, v, 1.0)), np.nan)


def from_scale(value: float, metric: str) -> float:
    """The inverse of :func:`to_scale` for one number (a mean of logs -> geometric mean)."""
    return 10.0**value if metric in LOG_METRICS and math.isfinite(value) else value


# =========================================================================== per seed


def seed_mean(values: Any, seeds: Any, n_boot: int, level: float = 0.95) -> Estimate:
    """The mean of one number per seed with its seed-bootstrap interval (see the module doc);
    NaN values are left out."""
    v = np.asarray(values, dtype=np.float64).ravel()
    draws = cluster_draws(seeds, n_boot, seed=BOOTSTRAP_SEED) if n_boot else None
    return estimate_with_interval(
        "mean", lambda w: weighted_mean(v, w), np.isfinite(v), seeds, 1, draws, level=level
    )


def paired_differences(group: pd.DataFrame, base: pd.DataFrame, metric: str) -> pd.Series:
    """d_s = v_s(group) - v_s(base) on the metric's scale, by seed, for the seeds both have."""
    mine = pd.Series(to_scale(group[metric], metric), index=group["seed"].to_numpy())
    theirs = pd.Series(to_scale(base[metric], metric), index=base["seed"].to_numpy())
    d = (mine - theirs.reindex(mine.index)).dropna()
    return d


def standardised(d: np.ndarray) -> float:
    """mean(d) / (sd(d) / sqrt(n)), sd with n - 1: 0 when every d is 0, +-inf when the d are
    equal and nonzero, NaN with fewer than 2 values."""
    if d.size < 2:
        return math.nan
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(mean)):
        return 0.0 if mean == 0 else math.copysign(math.inf, mean)
    return mean / (sd / math.sqrt(d.size))


def excludes_zero(low: float, high: float) -> Any:
    """True when the interval [low, high] lies on one side of 0, False when it covers 0,
    None when there is no interval."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    return bool(low > 0 or high < 0)


def metric_columns(
    group: pd.DataFrame, base: pd.DataFrame | None, metric: str, n_boot: int
) -> dict[str, Any]:
    """One (study, remedy)'s columns of ``metric``: the mean and its interval (back on the
    metric's own scale), n, and (``base`` not None) the paired difference from the baseline,
    its interval, n, z and whether the interval excludes 0 (on the averaging scale)."""
    level = seed_mean(to_scale(group[metric], metric), group["seed"], n_boot)
    columns: dict[str, Any] = {
        metric: from_scale(level.estimate, metric),
        f"{metric}_low": from_scale(level.ci_low, metric),
        f"{metric}_high": from_scale(level.ci_high, metric),
        f"{metric}_n": level.n_seeds,
    }
    diff = {"estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n_seeds": 0}
    z, excludes = math.nan, None
    if base is not None:
        d = paired_differences(group, base, metric)
        if len(d):
            estimate = seed_mean(d.to_numpy(), d.index.to_numpy(), n_boot)
            diff = vars(estimate)
            z = standardised(d.to_numpy())
            excludes = excludes_zero(estimate.ci_low, estimate.ci_high)
    columns.update(
        {
            f"{metric}_diff": diff["estimate"],
            f"{metric}_diff_low": diff["ci_low"],
            f"{metric}_diff_high": diff["ci_high"],
            f"{metric}_diff_n": diff["n_seeds"],
            f"{metric}_z": z,
            f"{metric}_excludes_0": excludes,
        }
    )
    return columns


def matrix_table(values: pd.DataFrame, config: MatrixConfig) -> pd.DataFrame:
    """One row per (study, remedy), in the preset's order: ``study, remedy, runs`` (complete
    of planned), ``note``, and per metric ``<m>, <m>_low, <m>_high, <m>_n`` (mean over seeds,
    geometric for :data:`LOG_METRICS`, and its seed-bootstrap interval) and ``<m>_diff,
    <m>_diff_low, <m>_diff_high, <m>_diff_n, <m>_z, <m>_excludes_0`` (the paired difference
    from ``config.baseline``, on the averaging scale; NaN on the baseline's own row)."""
    complete = values[_done(values)]
    records = []
    for (study, remedy), group in values.groupby(["study", "remedy"], sort=False):
        done = _done(group)
        base = None
        if remedy != config.baseline:
            base = complete[(complete["study"] == study) & (complete["remedy"] == config.baseline)]
        record: dict[str, Any] = {
            "study": study,
            "remedy": remedy,
            "runs": f"{int(done.sum())}/{len(group)}",
            "note": _note(group),
        }
        for m in config.metrics:
            record.update(metric_columns(group[done], base, m, config.bootstrap))
        records.append(record)
    return pd.DataFrame(records)


def _done(values: pd.DataFrame) -> pd.Series:
    """The runs that count: complete, or diverged (with the rows measured before)."""
    return values["status"].isin(["complete", "diverged"])


def _note(group: pd.DataFrame) -> str:
    reasons = sorted(set(group["reason"]) - {""})
    if reasons:
        return "not applicable: " + "; ".join(reasons)
    diverged = int((group["status"] == "diverged").sum())
    pending = int((~group["status"].isin(["complete", "diverged"])).sum())
    notes = [f"{diverged} diverged"] * bool(diverged) + [f"{pending} not complete"] * bool(pending)
    return ", ".join(notes)


# =========================================================================== across remedies


def remedy_seed_grid(runs: pd.DataFrame, metric: str, seeds: Sequence[Any]) -> pd.DataFrame:
    """remedies x seeds of the metric's final values on its averaging scale (NaN: none)."""
    frame = runs.assign(value=to_scale(runs[metric], metric))
    grid = frame.pivot_table(index="remedy", columns="seed", values="value", aggfunc="mean")
    return grid.reindex(index=list(dict.fromkeys(runs["remedy"])), columns=list(seeds))


def replicate_means(grid: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(replicates x remedies): each remedy's weighted mean over seeds for each row of
    ``weights`` (replicates x seeds); NaN where no weighted seed has a value."""
    ok = np.isfinite(grid)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ np.where(ok, grid, 0.0).T) / (weights @ ok.T)


def r_of_means(gx: np.ndarray, gy: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per replicate, Pearson r across remedies of the two metrics' replicate means."""
    mx, my = replicate_means(gx, weights), replicate_means(gy, weights)
    both = np.isfinite(mx) & np.isfinite(my)
    return weighted_r_rows(np.where(both, mx, 0.0), np.where(both, my, 0.0), both * 1.0)


def leave_one_out(mx: np.ndarray, my: np.ndarray, remedies: Sequence[str]) -> dict[str, Any]:
    """r across remedies with each remedy left out in turn: the lowest and highest r and the
    remedy whose removal gives each (NaN / "" when fewer than 3 remedies would be left)."""
    both = np.isfinite(mx) & np.isfinite(my)
    found: list[tuple[float, str]] = []
    for i in np.flatnonzero(both).tolist():
        keep = both.copy()
        keep[i] = False
        if keep.sum() >= 3:
            r = float(weighted_r_rows(mx[keep], my[keep], np.ones((1, int(keep.sum()))))[0])
            if math.isfinite(r):
                found.append((r, remedies[i]))
    if not found:
        return {"loo_low": math.nan, "loo_high": math.nan, "loo_low_without": "",
                "loo_high_without": ""}  # fmt: skip
    low, high = min(found), max(found)
    return {"loo_low": low[0], "loo_high": high[0], "loo_low_without": low[1],
            "loo_high_without": high[1]}  # fmt: skip


def across_remedies(
    runs: pd.DataFrame, x: str, y: str, seeds: Sequence[Any], n_boot: int
) -> dict[str, Any]:
    """One study's across-remedy statistics of (x, y) (see the module doc)."""
    gx, gy = remedy_seed_grid(runs, x, seeds), remedy_seed_grid(runs, y, seeds)
    remedies = list(gx.index)
    gx_, gy_ = gx.to_numpy(dtype=float), gy.to_numpy(dtype=float)
    ones = np.ones((1, len(seeds)))
    mx, my = replicate_means(gx_, ones)[0], replicate_means(gy_, ones)[0]
    both = np.isfinite(mx) & np.isfinite(my)
    has_seed = (np.isfinite(gx_) & np.isfinite(gy_)).any(axis=0)
    draws = cluster_draws(list(seeds), n_boot, seed=BOOTSTRAP_SEED) if n_boot else None
    r = estimate_with_interval(
        "r_remedies", lambda w: r_of_means(gx_, gy_, w), has_seed, list(seeds), 1, draws
    )
    rho = correlation(mx[both], my[both])["spearman_rho"] if both.sum() >= 3 else math.nan
    sx, sy = to_scale(runs[x], x), to_scale(runs[y], y)
    run_draws = cluster_draws(runs["seed"], n_boot, seed=BOOTSTRAP_SEED) if n_boot else None
    pooled = across_runs(sx, sy, runs["seed"].to_numpy(), draws=run_draws)
    return {
        "r_remedies": r.estimate,
        "r_remedies_low": r.ci_low,
        "r_remedies_high": r.ci_high,
        **leave_one_out(mx, my, remedies),
        "rho_remedies": rho,
        "n_remedies": int(both.sum()),
        "n_seeds": r.n_seeds,
        "r_runs": pooled.estimate,
        "r_runs_low": pooled.ci_low,
        "r_runs_high": pooled.ci_high,
        "n_runs": pooled.n_runs,
    }


def correlations(values: pd.DataFrame, config: MatrixConfig) -> pd.DataFrame:
    """Per study and (x, y) pair of ``config.correlate``: :func:`across_remedies` (x and y
    on their averaging scales: log10 NC1). NaN where the study lacks x or y, or has fewer
    than 3 remedies with both; ``values`` is :func:`run_values` with both metrics."""
    records = []
    for study, runs in values.groupby("study", sort=False):
        runs = runs[_done(runs)]
        for x, y in config.correlate:
            stats = across_remedies(runs, x, y, config.seeds, config.bootstrap)
            records.append({"study": study, "x": x, "y": y, **stats})
    return pd.DataFrame(records)
