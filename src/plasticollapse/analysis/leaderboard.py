"""The predictor leaderboard: which representation metric tracks or predicts plasticity loss.

:func:`predictors` takes the tidy long table of :func:`~.tidy.load_results` and, for every
study present, every outcome it records and every metric (one canonical name per
metric: :mod:`.aliases`), estimates with :mod:`.inference`

* ``detrended_r_diff`` and ``detrended_r_trend``: the within-run association with the
  outcome on detrended series (first differences; residuals after a polynomial trend);
* ``lead_lag`` (and ``follows``, the reverse): whether the metric's change precedes the
  outcome's beyond the outcome's own past;
* ``across_runs_r`` and ``across_runs_partial_r``: the metric at an early step against the
  outcome's mean over later steps, across runs, raw and given the run-defining settings;
* ``paper_mean_curve_r`` and ``paper_per_seed_r``: the paper's conventions, by name;

each with a seed-bootstrap interval (or Newey-West for a lone run) and its n (runs, seeds,
steps). Within each (study, group, outcome, statistic) the metrics are ranked by how far
their interval lies from 0 (0 when it covers 0), then by |estimate|;
:func:`rank_across_studies` averages those ranks over studies.

The outcome is named: online ``accuracy``, ``pl`` (= acc0 - acc_i, which carries the first
task's accuracy into every task: across runs it differs from accuracy exactly where the
first task differs, e.g. with first-task epochs), ``full_test_acc``, ``retrained_gap``,
``plasticity_score``, ``test_accuracy``, wherever a study records them.

``plasticollapse predictors RUNS... [--out DIR]`` (parsed in :mod:`plasticollapse.predictors_cli`,
run by :func:`main`) writes predictors.csv, predictors_rank.csv, aliases.csv and one forest
plot per study and outcome.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plasticollapse.analysis import inference
from plasticollapse.analysis.aliases import (
    aliases_of,
    canonical_metrics,
    find_aliases,
    per_step_matrix,
)
from plasticollapse.analysis.clusters import cluster_draws
from plasticollapse.analysis.tidy import load_results, setting_label, sort_key

#: Outcomes a study may record, in the order the leaderboard shows them.
OUTCOMES = (
    "accuracy",
    "pl",
    "full_test_acc",
    "test_accuracy",
    "retrained_gap",
    "plasticity_score",
)
#: Per-step keys that are bookkeeping, not representation metrics.
BOOKKEEPING = {
    "epoch",
    "task",
    "step",
    "task_epochs",
    "seconds",
    "diverged",
    "nc1_threshold_reached",
    "finetune_epochs",
}
#: Names (regular expressions) of performance measures: outcomes, never predictors.
PERFORMANCE = re.compile(
    r"^(accuracy.*|.*_accuracy|.*_acc|loss|.*_loss|eval_.*|test_loss|full_test_.*|"
    r"retrained_.*|plasticity_score|probe_loss_.*|finetune_.*|warmup_.*|task0_.*|pl)$"
)
#: Class indices and counts: integers that label classes, not measurements.
LABELS = re.compile(r"^(closest_pair_[ab]|num_classes_(present|absent))(_.*)?$")
#: The statistics, in the order of the table and the forest plot's panels.
STATISTICS = (
    "detrended_r_diff",
    "detrended_r_trend",
    "lead_lag",
    "follows",
    "across_runs_r",
    "across_runs_partial_r",
    "paper_mean_curve_r",
    "paper_per_seed_r",
)
#: The columns of predictors.csv.
COLUMNS = [
    "study",
    "group",
    "outcome",
    "metric",
    "aliases",
    "statistic",
    "estimate",
    "ci_low",
    "ci_high",
    "n_runs",
    "n_seeds",
    "n_steps",
    "interval",
    "rank",
]
#: The table's identity columns; every other column is a setting.
CORE = {"run_id", "experiment", "seed", "step", "metric", "value"}


def is_predictor(metric: str) -> bool:
    """A representation metric the leaderboard ranks (not bookkeeping or performance)."""
    return not (metric in BOOKKEEPING or PERFORMANCE.match(metric) or LABELS.match(metric))


# =========================================================================== the leaderboard


def predictors(
    table: pd.DataFrame,
    outcomes: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    by_setting: bool = False,
    horizon: int = 1,
    own_lags: int = 2,
    degree: int = 3,
    early_step: float | None = None,
    late_from: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """The leaderboard: one row per (study, group, outcome, metric, statistic).

    ``table`` is the tidy long table (:func:`~.tidy.load_results`). ``outcomes`` default to
    every one of :data:`OUTCOMES` a study records; ``metrics`` to every per-step metric
    :func:`is_predictor` accepts, aliases listed (column ``aliases``) under their canonical
    name and not ranked again. ``by_setting`` makes each setting of a study its own group
    (default: one group of all its runs, ``"all runs"``). ``horizon`` (k) and ``own_lags``
    (p) set the lead-lag regression, ``degree`` the polynomial trend; ``early_step`` (default
    the first step) and ``late_from`` (default the middle of the step range; the outcome is
    averaged over steps >= it) set the across-run design. Intervals: ``n_boot`` seed
    bootstrap replicates from ``seed``, at ``level``.

    Columns: :data:`COLUMNS`. Raises ValueError when the table has no per-step rows, or
    no study records any of the named outcomes or metrics.
    """
    _check_options(horizon, own_lags, degree, n_boot, level)
    missing_columns = sorted(
        {"run_id", "experiment", "seed", "step", "metric", "value"} - set(table)
    )
    if missing_columns:
        raise ValueError(
            f"the table lacks the column(s) {', '.join(missing_columns)}; pass the tidy table of "
            "plasticollapse.analysis.load_results"
        )
    steps = table[table["step"].notna()]
    if not len(steps):
        raise ValueError("the table has no per-step rows; give run folders with metrics.jsonl")
    present = set(steps["metric"])
    if outcomes is not None:
        missing = [o for o in outcomes if o not in present]
        if len(missing) == len(outcomes):
            raise ValueError(
                f"no study records the outcome(s) {', '.join(missing)}; recorded outcomes: "
                f"{', '.join(o for o in OUTCOMES if o in present) or 'none'}"
            )
    if metrics is not None and not present & set(metrics):
        raise ValueError(
            f"none of the metrics {', '.join(metrics)} is recorded; recorded predictors: "
            f"{', '.join(m for m in sorted(present) if is_predictor(m)) or 'none'}"
        )
    options = dict(horizon=horizon, own_lags=own_lags, degree=degree, early_step=early_step)
    options.update(late_from=late_from, n_boot=n_boot, seed=seed, level=level)
    rows: list[dict[str, Any]] = []
    for study in dict.fromkeys(steps["experiment"]):
        rows += _study_rows(
            steps[steps["experiment"] == study], outcomes, metrics, by_setting, options
        )
    board = pd.DataFrame(rows, columns=COLUMNS[:-1])
    return rank_board(board)


def _check_options(horizon: int, own_lags: int, degree: int, n_boot: int, level: float) -> None:
    """A clear error for a setting no statistic can use."""
    for name, value, least in (("horizon", horizon, 1), ("own_lags", own_lags, 0)):
        if value < least:
            raise ValueError(f"{name} must be >= {least}, got {value}")
    if degree < 0 or n_boot < 0:
        raise ValueError(f"degree and the bootstrap count must be >= 0, got {degree}, {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level} (0.95 for 95% intervals)")


def _study_rows(table, outcomes, metrics, by_setting, options) -> list[dict[str, Any]]:
    study = str(table["experiment"].iloc[0])
    recorded = sorted(set(table["metric"]))
    chosen = [o for o in (outcomes or OUTCOMES) if o in recorded]
    candidates = [m for m in (metrics or recorded) if m in recorded and is_predictor(m)]
    aliases = find_aliases(table, candidates)
    listed = aliases_of(aliases)
    settings = [c for c in table.columns if c not in CORE and table[c].notna().any()]
    cube = Curves(table, [*chosen, *candidates])
    rows = []
    for group, runs in _groups(table, settings, by_setting):
        draws = cluster_draws(
            runs["seed"].to_numpy(dtype=object), options["n_boot"], options["seed"]
        )
        given = inference.run_defining_columns(runs[settings]) if settings else None
        seeds = runs["seed"].to_numpy(dtype=object)
        for outcome in chosen:
            for metric in canonical_metrics(candidates, aliases):
                head = dict(study=study, group=group, outcome=outcome, metric=metric)
                head["aliases"] = listed.get(metric, "")
                x, y, steps = cube.pair(metric, outcome, list(runs["run_id"]))
                for estimate in metric_estimates(x, y, steps, seeds, given, draws, options):
                    rows.append({**head, **_row(estimate)})
    return rows


def _groups(table: pd.DataFrame, settings: list[str], by_setting: bool):
    """``(label, runs)``: one group of all runs, or one per setting in the settings' order;
    ``runs`` has one row per run (run_id, seed, settings) in the table's order."""
    runs = table.drop_duplicates("run_id")[["run_id", "seed", *settings]].reset_index(drop=True)
    if not by_setting or not settings:
        yield "all runs", runs
        return
    keys = runs[settings].astype(object).where(runs[settings].notna(), None)
    labels = [
        setting_label(dict(zip(settings, row, strict=True))) for row in keys.itertuples(index=False)
    ]
    order = sorted(set(labels), key=lambda lab: [sort_key(v) for v in keys.iloc[labels.index(lab)]])
    for label in order:
        yield label, runs[[lab == label for lab in labels]].reset_index(drop=True)


def _row(estimate: inference.Estimate) -> dict[str, Any]:
    row = estimate.row()
    row.pop("level")
    return row


class Curves:
    """Every metric of a study's runs on one (runs x steps) grid, pivoted once."""

    def __init__(self, table: pd.DataFrame, metrics: Sequence[str]):
        matrix = per_step_matrix(table, metrics)
        self.run_ids = list(dict.fromkeys(table["run_id"]))
        self.steps = np.unique(table["step"].dropna().to_numpy(dtype=float))
        full = pd.MultiIndex.from_product([self.run_ids, self.steps], names=["run_id", "step"])
        values = matrix.reindex(index=full, columns=list(dict.fromkeys(metrics)))
        shape = (len(self.run_ids), len(self.steps), values.shape[1])
        self.values = values.to_numpy(dtype=np.float64).reshape(shape)
        self.column = {m: i for i, m in enumerate(values.columns)}
        self.row = {r: i for i, r in enumerate(self.run_ids)}

    def pair(
        self, x: str, y: str, run_ids: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x, y, steps)``: two metrics of ``run_ids`` (rows, in that order) on the steps
        where both are recorded in some of those runs (a metric measured every k steps is
        compared at those steps, so its differences span k steps, not NaN)."""
        rows = [self.row[r] for r in run_ids]
        a = self.values[rows][:, :, self.column[x]]
        b = self.values[rows][:, :, self.column[y]]
        keep = np.isfinite(a).any(axis=0) & np.isfinite(b).any(axis=0)
        return a[:, keep], b[:, keep], self.steps[keep]


def metric_estimates(
    x: np.ndarray,
    y: np.ndarray,
    steps: np.ndarray,
    seeds: np.ndarray,
    given: np.ndarray | None,
    draws: np.ndarray,
    options: dict[str, Any],
) -> list[inference.Estimate]:
    """Every statistic of :data:`STATISTICS` for one metric ``x`` and outcome ``y``, both
    (runs x steps) on the grid ``steps``, ``seeds`` one label per run."""
    level = options["level"]
    lags = dict(horizon=options["horizon"], own_lags=options["own_lags"])
    common = dict(draws=draws, level=level)
    out = [
        inference.detrended_association(x, y, steps, seeds, "diff", options["degree"], **common),
        inference.detrended_association(x, y, steps, seeds, "trend", options["degree"], **common),
        inference.lead_lag(x, y, seeds, **lags, **common),
        inference.follows(x, y, seeds, **lags, **common),
    ]
    early, late, n_late = _across_run_values(x, y, steps, options)
    out.append(inference.across_runs(early, late, seeds, None, n_late, **common))
    if given is not None and given.shape[1]:
        out.append(inference.across_runs(early, late, seeds, given, n_late, **common))
    else:
        why = "none: the runs differ in no setting"
        out.append(
            inference.Estimate(
                "across_runs_partial_r", math.nan, math.nan, math.nan, 0, 0, 0, why, level
            )
        )
    out.append(inference.paper_mean_curve_r(x, y, seeds, **common))
    out.append(inference.paper_per_seed_r(x, y, seeds, **common))
    return out


def _across_run_values(x, y, steps, options) -> tuple[np.ndarray, np.ndarray, int]:
    """Per run the metric at the early step and the outcome's mean over the late steps."""
    if not steps.size:
        return np.full(len(x), np.nan), np.full(len(x), np.nan), 0
    early_step = steps[0] if options["early_step"] is None else options["early_step"]
    late_from = options["late_from"]
    if late_from is None:
        late_from = (steps[0] + steps[-1]) / 2
    at = np.flatnonzero(steps == early_step)
    early = x[:, at[0]] if at.size else np.full(len(x), np.nan)
    late_columns = (steps >= late_from) & (steps > early_step)
    late = y[:, late_columns]
    with np.errstate(invalid="ignore"):
        counts = np.isfinite(late).sum(axis=1)
        means = np.where(counts > 0, np.nansum(late, axis=1) / np.maximum(counts, 1), np.nan)
    return early, means, int(late_columns.sum())


# =========================================================================== ranking


def rank_board(board: pd.DataFrame) -> pd.DataFrame:
    """``rank`` within each (study, group, outcome, statistic): 1 = the interval farthest
    from 0 (0 when it covers 0 or is missing), ties broken by |estimate|; NaN estimates
    unranked. Rows sorted by study, group, outcome, statistic (in :data:`STATISTICS`
    order) and rank."""
    board = board.copy()
    lo, hi = board["ci_low"].to_numpy(float), board["ci_high"].to_numpy(float)
    with np.errstate(invalid="ignore"):
        clear = np.where(lo > 0, lo, np.where(hi < 0, -hi, 0.0))
    board["_clear"] = np.nan_to_num(clear, nan=0.0)
    board["_size"] = board["estimate"].abs()
    keys = ["study", "group", "outcome", "statistic"]
    ranks = pd.Series(np.nan, index=board.index, dtype=float)
    for _, part in board[board["estimate"].notna()].groupby(keys, sort=False):
        ordered = part.sort_values(["_clear", "_size"], ascending=False, kind="stable")
        ranks[ordered.index] = np.arange(1, len(ordered) + 1)
    board["rank"] = ranks
    # Studies, groups and outcomes keep the order they came in (settings sorted by value,
    # not as text: fte 2 before fte 10); statistics in STATISTICS order.
    order = [board[k].map({v: i for i, v in enumerate(dict.fromkeys(board[k]))}) for k in keys[:3]]
    for i, column in enumerate(order):
        board[f"_{i}"] = column
    board["_3"] = board["statistic"].map({s: i for i, s in enumerate(STATISTICS)})
    board = board.sort_values(["_0", "_1", "_2", "_3", "rank"], kind="stable", na_position="last")
    return board.reset_index(drop=True)[COLUMNS]


def _order(outcome: str) -> int:
    """Where an outcome comes in :data:`OUTCOMES` (any other name after them)."""
    return OUTCOMES.index(outcome) if outcome in OUTCOMES else len(OUTCOMES)


def rank_across_studies(board: pd.DataFrame, outcome: str | None = None) -> pd.DataFrame:
    """Per (statistic, metric) the mean over studies (and groups) of the metric's rank as a
    fraction of the metrics ranked there (1/m for the best of m; so a study with many
    metrics does not outweigh one with few), the number of such rankings, and the order
    by that mean (``overall_rank``, 1 = best).

    Each study counts once: with its ``outcome`` when named, else with its first outcome
    in :data:`OUTCOMES` order (accuracy before pl: within runs they are one signal turned
    over, and counting both would count the study twice). ``outcomes`` lists what each
    study contributed."""
    ranked = board[board["rank"].notna()]
    if outcome is not None:
        ranked = ranked[ranked["outcome"] == outcome]
    else:
        first = ranked.groupby("study", sort=False)["outcome"].agg(lambda o: min(o, key=_order))
        ranked = ranked[ranked["outcome"] == ranked["study"].map(first)]
    ranked = ranked.assign(used=ranked["study"] + ": " + ranked["outcome"])
    keys = ["study", "group", "outcome", "statistic"]
    ranked["fraction"] = ranked["rank"] / ranked.groupby(keys)["rank"].transform("max")
    summary = (
        ranked.groupby(["statistic", "metric"])
        .agg(
            mean_rank_fraction=("fraction", "mean"),
            mean_rank=("rank", "mean"),
            n_rankings=("rank", "size"),
            outcomes=("used", lambda u: "; ".join(dict.fromkeys(u))),
        )
        .reset_index()
    )
    summary["overall_rank"] = summary.groupby("statistic")["mean_rank_fraction"].rank(method="min")
    summary["_statistic"] = summary["statistic"].map({s: i for i, s in enumerate(STATISTICS)})
    summary = summary.sort_values(["_statistic", "overall_rank"], kind="stable")
    return summary.drop(columns="_statistic").reset_index(drop=True)


# =========================================================================== files and command


def write_predictors(board: pd.DataFrame, aliases: pd.DataFrame, out: str | Path) -> list[Path]:
    """predictors.csv, predictors_rank.csv, aliases.csv and the forest plots into ``out``."""
    from plasticollapse.analysis.forest import forest_plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "predictors.csv", out / "predictors_rank.csv", out / "aliases.csv"]
    board.to_csv(written[0], index=False)
    rank_across_studies(board).to_csv(written[1], index=False)
    aliases.to_csv(written[2], index=False)
    return written + forest_plots(board, out)


def study_aliases(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`~.aliases.find_aliases` of each study's predictors, with a ``study`` column."""
    frames = []
    steps = table[table["step"].notna()]
    for study in dict.fromkeys(steps["experiment"]):
        rows = steps[steps["experiment"] == study]
        found = find_aliases(rows, [m for m in sorted(set(rows["metric"])) if is_predictor(m)])
        frames.append(found.assign(study=study))
    columns = ["study", "alias", "canonical", "relation", "a", "b", "n"]
    return (
        pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    )


def default_out(runs: Sequence[str]) -> Path:
    """``<first RUNS folder>/predictors`` (beside it when a run's file is given)."""
    first = Path(runs[0])
    return (first.parent if first.is_file() else first) / "predictors"


def main(args: argparse.Namespace, _: list[str] | None = None) -> int:
    """The command: load the runs, build the leaderboard, write its files, print where."""
    for path in args.runs:
        if not Path(path).exists():
            raise ValueError(f"{path}: no such file or folder; give run folders or their parents")
    table = load_results(args.runs)
    if not len(table):
        raise ValueError(
            f"no run folders (config.json + metrics.jsonl) under {' '.join(args.runs)}"
        )
    board = predictors(
        table,
        outcomes=args.outcome,
        metrics=args.metrics,
        by_setting=args.by_setting,
        horizon=args.horizon,
        own_lags=args.own_lags,
        degree=args.degree,
        early_step=args.early_step,
        late_from=args.late_from,
        n_boot=args.bootstrap,
        seed=args.seed,
    )
    for path in write_predictors(board, study_aliases(table), args.out or default_out(args.runs)):
        print(path)
    return 0
