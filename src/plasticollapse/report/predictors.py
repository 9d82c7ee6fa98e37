"""The reports' metric ranking: dependence-aware statistics, each with its interval and n.

A study's ranking is the predictor leaderboard (:func:`plasticollapse.analysis.predictors`,
docs/statistics.md) over its runs, one group per setting, for one named outcome:

* the headline is ``detrended_r_diff``: per run r(Δx_t, Δy_t) of first differences,
  Fisher-z pooled over the runs, with a 95 % percentile bootstrap interval over SEEDS;
  a metric that only shares the outcome's trend reads about 0 there;
* the paper's convention (``paper_mean_curve_r`` for Permuted, ``paper_per_seed_r`` for
  the warm start) stands beside it by name, with its own seed-bootstrap interval, so the
  number the paper would print is not lost, and is not the one that orders the table;
* aliases (``dead_fraction`` = ``dead_fraction_layer<L>``) are ranked once and listed.

Ranks come from the leaderboard: within each setting, the interval farthest from 0 first
(0 when it covers 0), then |estimate|. No p-value is computed: the steps of a run are
autocorrelated, so a p-value from their count would be false.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pandas as pd

from plasticollapse.analysis import predictors
from plasticollapse.report.format import DASH, fmt

#: The statistic that orders a report's ranking (docs/statistics.md).
HEADLINE = "detrended_r_diff"


def interval_text(estimate: float, low: float, high: float) -> str:
    """``-0.52 [-0.60, -0.41]``; the estimate alone when there is no interval."""
    if not math.isfinite(estimate):
        return DASH
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{fmt(estimate, 'r')} (no interval)"
    return f"{fmt(estimate, 'r')} [{fmt(low, 'r')}, {fmt(high, 'r')}]"


def predictor_board(
    table: pd.DataFrame,
    outcome: str,
    exclude: Sequence[str] = (),
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """The leaderboard of one study's tidy ``table`` by setting, for ``outcome``, without
    the ``exclude`` metrics (bookkeeping the leaderboard does not already skip). Empty when
    the study does not record the outcome or has no metric to rank."""
    table = table[~table["metric"].isin(set(exclude) - {outcome})]
    steps = table[table["step"].notna()]
    if outcome not in set(steps["metric"]) or steps["metric"].nunique() < 2:
        return pd.DataFrame()
    return predictors(table, outcomes=[outcome], by_setting=True, n_boot=n_boot, seed=seed)


def ranking_view(
    board: pd.DataFrame,
    convention: str,
    top: int,
    also: Callable[[str], bool],
    headline: str = HEADLINE,
) -> pd.DataFrame:
    """The report's table: per setting the ``top`` metrics by the ``headline`` statistic's
    rank and those ``also(metric)`` picks wherever they rank, with the headline and the
    paper's ``convention`` as ``estimate [95 % interval]``, the n behind them and the
    aliases each canonical name stands for."""
    if not len(board):
        return pd.DataFrame()
    head = board[(board["statistic"] == headline) & board["rank"].notna()]
    paper = board[board["statistic"] == convention].set_index(["group", "metric"])
    shown = head[(head["rank"] <= top) | head["metric"].map(also).astype(bool)]
    rows = []
    for row in shown.itertuples(index=False):
        other = (
            paper.loc[(row.group, row.metric)] if (row.group, row.metric) in paper.index else None
        )
        rows.append(
            {
                "setting": row.group,
                "rank": fmt(row.rank, "int"),
                "metric": row.metric,
                f"{headline} [95% CI]": interval_text(row.estimate, row.ci_low, row.ci_high),
                "runs / seeds / steps": f"{row.n_runs} / {row.n_seeds} / {row.n_steps}",
                f"{convention} [95% CI]": DASH
                if other is None
                else interval_text(other["estimate"], other["ci_low"], other["ci_high"]),
                "aliases": row.aliases or DASH,
            }
        )
    return pd.DataFrame(rows)


def ranking_caption(outcome: str, convention: str, top: int, board: pd.DataFrame) -> str:
    """What the ranking table shows and how its intervals were made."""
    intervals = sorted(set(board["interval"])) if len(board) else []
    return (
        f"Per setting, the top {top} metrics by {HEADLINE} with {outcome} (per run r of "
        "first differences, Fisher-z pooled over runs; a metric that only shares the trend "
        f"reads about 0), and the NC1 variants wherever they rank; beside it {convention}, "
        "the paper's convention (r of levels, which reads a shared trend as a relation). "
        "95% intervals: " + ("; ".join(intervals) or DASH) + ". Aliases are ranked once. "
        "No p-values: the steps of a run are autocorrelated. Every statistic: "
        "metric_ranking.csv."
    )
