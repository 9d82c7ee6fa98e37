"""Selections and pivots of the tidy table that every study's report needs.

* :func:`setting_groups` splits a run table into its distinct settings (sorted), each
  with its runs (ordered by seed);
* :func:`curves` pivots one metric to a (runs x steps) DataFrame: index ``run_id``,
  columns the steps, NaN where a run has no value; :func:`paired_curves` gives two
  metrics on one grid; :func:`between` keeps the steps of a range;
* :func:`band` is the per-step mean and population std (ddof = 0) over runs, as the
  paper's bands; :func:`summary_values` reads summary.json scalars from the summaries.

Missing values compare equal (None and NaN), and 1 equals 1.0, when matching settings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from plasticollapse.analysis.tidy import normalise_setting, sort_key


def same(a: Any, b: Any) -> bool:
    """Setting equality: None and NaN alike, 1 == 1.0, lists compared as joined strings."""
    a, b = normalise_setting(a), normalise_setting(b)
    a_missing = a is None or (isinstance(a, float) and math.isnan(a))
    b_missing = b is None or (isinstance(b, float) and math.isnan(b))
    if a_missing or b_missing:
        return a_missing and b_missing
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def setting_groups(
    runs: pd.DataFrame, settings: Sequence[str]
) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """``[(setting, its runs), ...]``: distinct values of the ``settings`` columns, sorted
    (numbers numerically), each with its rows of ``runs`` in the run table's order."""
    groups: dict[str, tuple[dict[str, Any], list[int]]] = {}
    for i, row in enumerate(runs[list(settings)].itertuples(index=False, name=None)):
        setting = dict(zip(settings, row, strict=True))
        groups.setdefault(repr(row), (setting, []))[1].append(i)
    ordered = sorted(groups.values(), key=lambda g: [sort_key(v) for v in g[0].values()])
    return [(setting, runs.iloc[rows]) for setting, rows in ordered]


def metrics(table: pd.DataFrame) -> list[str]:
    """The metric names of a long table (the tidy table's per-step ones, or the summaries')."""
    return sorted(set(table["metric"]))


def curves(
    table: pd.DataFrame,
    metric: str,
    run_ids: Sequence[str],
    steps: Sequence[float] | np.ndarray | None = None,
) -> pd.DataFrame:
    """One per-step metric as a (runs x steps) DataFrame: rows ``run_ids`` in that order,
    columns ``steps`` (default: the sorted steps where any of the runs has the metric).

    A run without a value at a step holds NaN there; a step repeated in a run: last wins.
    """
    rows = table[(table["metric"] == metric) & table["step"].notna()]
    rows = rows[rows["run_id"].isin(list(run_ids))].drop_duplicates(["run_id", "step"], keep="last")
    grid = np.unique(rows["step"].to_numpy()) if steps is None else np.asarray(steps, float)
    pivot = rows.pivot(index="run_id", columns="step", values="value")
    return pivot.reindex(index=list(run_ids), columns=grid).astype("float64")


def paired_curves(
    table: pd.DataFrame, x: str, y: str, run_ids: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two metrics on the same runs and the same step grid (the union of both)."""
    grid = np.union1d(curves(table, x, run_ids).columns, curves(table, y, run_ids).columns)
    return curves(table, x, run_ids, grid), curves(table, y, run_ids, grid)


def between(frame: pd.DataFrame, lo: float = -math.inf, hi: float = math.inf) -> pd.DataFrame:
    """The step columns s with ``lo < s <= hi`` (the window rule used throughout)."""
    steps = frame.columns.to_numpy(dtype=float)
    return frame.loc[:, (steps > lo) & (steps <= hi)]


def band(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(steps, mean, std)`` over the runs that have a value at each step (std: ddof 0)."""
    return (
        frame.columns.to_numpy(dtype=float),
        frame.mean(axis=0).to_numpy(dtype=float),
        frame.std(axis=0, ddof=0).to_numpy(dtype=float),
    )


def at(frame: pd.DataFrame, step: float) -> np.ndarray:
    """Per-run values at exactly ``step`` (NaN for every run when no run has that step)."""
    if step in frame.columns:
        return frame[step].to_numpy(dtype=float)
    return np.full(len(frame), np.nan)


def summary_values(summaries: pd.DataFrame, metric: str, run_ids: Sequence[str]) -> pd.Series:
    """run id -> the summary.json scalar ``metric`` (completed runs that report it), from
    the summaries table (:func:`plasticollapse.analysis.load_summaries`)."""
    rows = summaries[summaries["metric"] == metric]
    rows = rows[rows["run_id"].isin(list(run_ids))]
    return pd.Series(rows["value"].to_numpy(), index=rows["run_id"].to_numpy(), dtype=float)
