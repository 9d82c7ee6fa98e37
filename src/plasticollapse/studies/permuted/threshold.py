"""The NC-threshold variant's across-run statistics, with intervals over seeds.

The variant (docs/paper.md) trains task 0 until NC1 falls below a threshold, then one
epoch per task. Its runs are few and nested: every threshold of one seed starts from the
same initialisation, data order and first-task trajectory (a lower threshold only trains
that trajectory longer), so twelve runs from five seeds are five independent units. And
PL_i = acc_0 - acc_i carries each run's first-task accuracy acc_0 into every task: across
runs, an r with PL can be an r with acc_0 alone. This module therefore gives

* per run (:func:`run_table`): the seed, threshold, pre-training epochs, NC1 after
  pre-training, acc_0, whether the run met its threshold (not the safety cap) and which
  run it duplicates (a seed that met two thresholds in the same epoch ran one run twice),
  and per task block the mean later accuracy acc_i and the mean PL_i;
* per block (:func:`block_estimates`): r across runs of NC1 after pre-training with mean
  PL and, separately, with mean later accuracy acc_i alone; r of acc_0 with mean PL (how
  much of PL is acc_0); r of the epochs with PL; and the partial r of NC1 and each outcome
  given a line in the epochs (a lower threshold takes more epochs). Each is an
  :class:`~plasticollapse.analysis.inference.Estimate`: a 95 % percentile bootstrap over
  SEEDS (the runs of a seed drawn together), n_runs, n_seeds, and the tasks averaged.

The per-task |r| smoothed with a Gaussian is the authors' convention
(:func:`threshold_analysis`); it has no interval, so the block statistics are the ones to
read. When the analysis cannot be done, :func:`threshold_missing` says why (too few runs
that met their threshold, runs stopped at the safety cap, the same run counted twice, no
task after pre-training).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from plasticollapse import analysis
from plasticollapse.analysis import inference
from plasticollapse.report.format import fmt
from plasticollapse.report.predictors import interval_text
from plasticollapse.studies.base import StudyResults

#: The threshold analysis: tasks 1-99 (the authors' first 100 tasks), Gaussian sigma.
THRESHOLD_TASKS, THRESHOLD_SIGMA = (1, 99), 4.0
#: NC1 in the authors' convention first; ``nc1`` for runs that predate ``nc1_pinv``.
AUTHORS_NC1 = ("nc1_pinv", "nc1")


def first_present(table: pd.DataFrame, candidates: Sequence[str]) -> str | None:
    """The first of ``candidates`` the runs report per step (None when none is)."""
    available = set(analysis.metrics(table))
    return next((m for m in candidates if m in available), None)


#: Task blocks the statistics average over: the paper's "tasks 1-40" and the rest of its
#: first 100 tasks.
BLOCKS: tuple[tuple[int, int], ...] = ((1, 40), (41, 99))


def block_name(block: tuple[int, int]) -> str:
    """``1-40``: how a block reads in column names and tables."""
    return f"{block[0]}-{block[1]}"


def run_table(
    seeds: Sequence,
    thresholds: Sequence[float],
    epochs: Sequence[float] | np.ndarray,
    nc1_0: Sequence[float] | np.ndarray,
    reached: Sequence[bool],
    accuracy: pd.DataFrame,
    blocks: Sequence[tuple[int, int]] = BLOCKS,
) -> pd.DataFrame:
    """One row per run: ``seed, nc1_threshold, epochs, nc1_0, acc0, reached, duplicate_of``
    and, per block ``a-b``, ``acc_a-b`` (mean acc_i over tasks a..b; NaN unless the run
    reached all of them) and ``pl_a-b`` (mean PL_i = acc0 - acc_i). ``accuracy`` is
    (runs x tasks) online accuracy, task 0 included, its index the run ids.
    ``duplicate_of`` names the first earlier run with the same NC1 after pre-training and
    seed (the same run twice), else is empty."""
    frame = pd.DataFrame(
        {
            "run_id": list(accuracy.index),
            "seed": list(seeds),
            "nc1_threshold": np.asarray(thresholds, dtype=float),
            "epochs": np.asarray(epochs, dtype=float),
            "nc1_0": np.asarray(nc1_0, dtype=float),
            "acc0": accuracy[0.0].to_numpy(dtype=float),
            "reached": np.asarray(reached, dtype=bool),
        }
    )
    first: dict[tuple, str] = {}
    duplicate = []
    for row in frame.itertuples(index=False):
        key = (str(row.seed), row.nc1_0)
        duplicate.append(first.get(key, ""))
        first.setdefault(key, row.run_id)
    frame["duplicate_of"] = duplicate
    tasks = accuracy.columns.to_numpy(dtype=float)
    for block in blocks:
        inside = accuracy.loc[:, (tasks >= block[0]) & (tasks <= block[1])]
        # A run that has not reached every task of the block has no mean there: a mean
        # over its first tasks only would compare earlier tasks with later ones.
        complete = inside.notna().sum(axis=1).to_numpy() == block[1] - block[0] + 1
        later = np.where(complete, inside.mean(axis=1).to_numpy(dtype=float), np.nan)
        frame[f"acc_{block_name(block)}"] = later
        frame[f"pl_{block_name(block)}"] = frame["acc0"].to_numpy() - later
    return frame


def distinct_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The runs of the variant: each once (no duplicate) and only those that met their
    threshold (a run stopped at the safety cap is not a run of the variant)."""
    return frame[(frame["duplicate_of"].fillna("") == "") & frame["reached"].astype(bool)]


#: (statistic name, x column, outcome prefix, given the epochs?): what :func:`block_estimates`
#: computes per block.
BLOCK_STATISTICS = (
    ("r(NC1 after task 0, mean PL_i)", "nc1_0", "pl", False),
    ("r(NC1 after task 0, mean acc_i)", "nc1_0", "acc", False),
    ("r(acc_0, mean PL_i)", "acc0", "pl", False),
    ("r(pre-training epochs, mean PL_i)", "epochs", "pl", False),
    ("partial r(NC1 after task 0, mean PL_i | epochs)", "nc1_0", "pl", True),
    ("partial r(NC1 after task 0, mean acc_i | epochs)", "nc1_0", "acc", True),
)


def block_estimates(
    frame: pd.DataFrame,
    blocks: Sequence[tuple[int, int]] = BLOCKS,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Every statistic of :data:`BLOCK_STATISTICS` per block over the :func:`distinct_runs`
    of ``frame`` (a :func:`run_table`), with its seed-bootstrap interval and n: columns
    ``block, statistic`` and the :class:`~plasticollapse.analysis.inference.Estimate`
    fields. Also ``r(NC1 after task 0, acc_0)`` once (block ``task 0``)."""
    runs = distinct_runs(frame)
    seeds = runs["seed"].astype(str).to_numpy(dtype=object)
    draws = inference.cluster_draws(seeds, n_boot, seed)
    epochs = runs["epochs"].to_numpy(dtype=float)[:, None]
    rows = []
    first = inference.across_runs(runs["nc1_0"], runs["acc0"], seeds, None, 1, draws)
    rows.append({"block": "task 0", **first.row(), "statistic": "r(NC1 after task 0, acc_0)"})
    for block in blocks:
        name = block_name(block)
        n_tasks = block[1] - block[0] + 1
        for statistic, x, outcome, given in BLOCK_STATISTICS:
            y = runs[f"{outcome}_{name}"]
            estimate = inference.across_runs(
                runs[x], y, seeds, epochs if given else None, n_tasks, draws
            )
            rows.append({"block": name, **estimate.row(), "statistic": statistic})
    columns = ["block", "statistic", "estimate", "ci_low", "ci_high"]
    columns += ["n_runs", "n_seeds", "n_steps", "interval", "level"]
    return pd.DataFrame(rows)[columns]


def nesting_text(frame: pd.DataFrame) -> str:
    """How the runs nest: ``12 distinct runs from 5 seeds (2-3 per seed) ...``."""
    runs = distinct_runs(frame)
    per_seed = runs.groupby(runs["seed"].astype(str)).size()
    duplicates = int((frame["duplicate_of"].fillna("") != "").sum())
    capped = int((~frame["reached"].astype(bool)).sum())
    return (
        f"{len(runs)} distinct runs from {len(per_seed)} seeds ({per_seed.min()}-"
        f"{per_seed.max()} per seed; {len(frame)} run folders, {duplicates} the same run as "
        f"another, {capped} stopped at the epoch cap above its threshold and left out). The "
        "runs of one seed share its initialisation, data order and first-task trajectory, "
        "so the seeds, not the runs, are the independent units: every interval resamples "
        "seeds."
    )


# =========================================================================== from the runs


def threshold_runs(results: StudyResults) -> pd.DataFrame:
    """The runs of the NC-threshold variant (``nc1_threshold`` set), and only those."""
    keep = [c.get("nc1_threshold") is not None for c in results.runs["config"]]
    return results.runs[np.asarray(keep, dtype=bool)]


def capped_runs(results: StudyResults, runs: pd.DataFrame) -> list[str]:
    """The threshold runs whose first task stopped at the safety cap with NC1 still above
    the threshold (``nc1_threshold_reached`` false on their first row). The authors had no
    cap, so every run of theirs met its threshold: these are not runs of the variant."""
    ids = list(runs["run_id"])
    reached = analysis.at(analysis.curves(results.table, "nc1_threshold_reached", ids), 0.0)
    return [run for run, hit in zip(ids, reached, strict=True) if hit == 0]


@dataclass
class ThresholdRuns:
    """The runs the threshold analysis is over, and why it cannot be done when it cannot.

    ``ids`` and ``nc1_0``: the distinct runs that met their threshold, and the NC1 after
    pre-training (``metric``) of each; ``capped``: the runs left out because task 0 stopped
    at the safety cap; ``total``: every threshold run; ``missing``: why there is no analysis
    ("" when there is one)."""

    ids: list[str]
    nc1_0: np.ndarray
    metric: str
    capped: list[str]
    total: int
    missing: str = ""


def select_threshold_runs(results: StudyResults) -> ThresholdRuns:
    """The threshold runs the analysis can use (see :func:`threshold_analysis`).

    Runs that stopped at the safety cap (:func:`capped_runs`) are left out, and runs with the
    same NC1 after pre-training count once (a seed that met two thresholds in the same epoch
    ran the same run twice; the authors' notebook keys its runs by this NC1, which does the
    same). r across runs needs 3 runs: with fewer, ``missing`` says which step lost them.
    """
    runs = threshold_runs(results)
    capped = capped_runs(results, runs)
    ids = [run for run in runs["run_id"] if run not in set(capped)]
    configured = {c.get("threshold_metric") for c in runs["config"]} - {None}
    metric = next(iter(configured)) if len(configured) == 1 else None
    metric = metric or first_present(results.table, AUTHORS_NC1) or "nc1"
    nc1_0 = analysis.at(analysis.curves(results.table, metric, ids), 0.0)
    _, first = np.unique(nc1_0, return_index=True)
    keep = np.sort(first[np.isfinite(nc1_0[first])])
    selected = ThresholdRuns([ids[i] for i in keep], nc1_0[keep], metric, capped, len(runs))
    selected.missing = too_few_reason(selected, met=len(ids))
    return selected


def too_few_reason(selected: ThresholdRuns, met: int) -> str:
    """Why ``selected`` has fewer than 3 runs to correlate across ("" when it has enough)."""
    if len(selected.ids) >= 3:
        return ""
    if selected.total == 0:
        return "no threshold runs (no run sets nc1_threshold)"
    if met < 3 and selected.capped:
        every = "all" if len(selected.capped) == selected.total else f"{len(selected.capped)} of"
        return (
            f"r across runs needs 3 runs that met their NC1 threshold, and {every} "
            f"{selected.total} threshold runs stopped at the safety cap (first_task_epochs) "
            "with NC1 above it; raise first_task_epochs"
        )
    if met < 3:
        return f"r across runs needs 3 threshold runs; there are {selected.total}"
    return (
        f"r across runs needs 3 runs with different NC1 after task 0, and the {met} runs that "
        f"met their threshold give {len(selected.ids)} ({selected.metric} equal across the "
        "others: one seed met several thresholds in the same epoch); add seeds or thresholds"
    )


def threshold_analysis(
    results: StudyResults, sigma: float = THRESHOLD_SIGMA
) -> pd.DataFrame | None:
    """The authors' threshold analysis, over the threshold runs only (None when it cannot be
    done: :func:`threshold_missing` says why).

    Each run gives its NC1 after pre-training (task 0's row, in the convention its
    threshold tested: ``threshold_metric``, else ``nc1_pinv``, else ``nc1``) and its
    pre-training epochs, over the runs :func:`select_threshold_runs` keeps (distinct runs
    that met their threshold). For each task i in 1-99: r across runs of NC1 after
    pre-training and PL_i = acc_0 - acc_i, and of the epochs and PL_i; |r| smoothed with a
    Gaussian of ``sigma`` tasks (:func:`~plasticollapse.analysis.stats.gaussian_smooth`, the
    authors' ``gaussian_filter1d``). Beyond the authors: the partial r of NC1 and PL_i given
    the epochs (:func:`~plasticollapse.analysis.stats.partial_r`), since a lower threshold
    takes more epochs. Returns one row per task: ``task, nc1_metric, r_nc1_pl, abs_r,
    abs_r_smoothed, r_epochs_pl, r_epochs_pl_smoothed, r_nc1_pl_given_epochs,
    r_nc1_pl_given_epochs_smoothed, runs`` (runs with PL_i).
    """
    selected = select_threshold_runs(results)
    if selected.missing:
        return None
    ids, nc1_0, metric = selected.ids, selected.nc1_0, selected.metric
    epochs = analysis.at(analysis.curves(results.table, "task_epochs", ids), 0.0)
    lo, hi = THRESHOLD_TASKS
    pl = analysis.curves(results.table, "pl", ids)
    pl = pl.loc[:, (pl.columns >= lo) & (pl.columns <= hi)]
    if pl.shape[1] == 0:
        return None
    r = analysis.across_runs_r(nc1_0, pl.to_numpy())
    r_epochs = analysis.across_runs_r(epochs, pl.to_numpy())
    # A lower threshold takes more epochs: r of NC1 with the epochs held fixed separates
    # what NC1 says beyond the pre-training length.
    r_given = analysis.across_runs_partial_r(nc1_0, pl.to_numpy(), epochs)
    return pd.DataFrame(
        {
            "task": pl.columns.to_numpy(dtype=float),
            "nc1_metric": metric,
            "r_nc1_pl": r,
            "abs_r": np.abs(r),
            "abs_r_smoothed": analysis.gaussian_smooth(np.abs(r), sigma),
            "r_epochs_pl": r_epochs,
            "r_epochs_pl_smoothed": analysis.gaussian_smooth(r_epochs, sigma),
            "r_nc1_pl_given_epochs": r_given,
            "r_nc1_pl_given_epochs_smoothed": analysis.gaussian_smooth(r_given, sigma),
            "runs": np.isfinite(pl.to_numpy()).sum(axis=0),
        }
    )


def threshold_missing(results: StudyResults, frame: pd.DataFrame | None) -> str:
    """Why the threshold analysis ``frame`` (of :func:`threshold_analysis`) has no r:
    too few usable runs, no task after pre-training, or r undefined at every task; ""
    when it has one (or when no run is a threshold run: nothing was asked)."""
    if frame is not None:
        if np.isfinite(frame["r_nc1_pl"]).any():
            return ""
        return (
            "r across runs is undefined at every task: fewer than 3 runs have PL_i, or PL_i "
            "is equal across them"
        )
    selected = select_threshold_runs(results)
    if selected.total == 0:
        return ""
    if selected.missing:
        return selected.missing
    lo, hi = THRESHOLD_TASKS
    return f"the threshold runs have no task in {lo}-{hi} (r is with PL_i after pre-training)"


def threshold_run_table(results: StudyResults) -> pd.DataFrame | None:
    """The threshold runs, one row each (:func:`run_table`): seed, threshold,
    epochs, NC1 after pre-training (the convention the threshold tested), acc_0, whether
    the threshold was met, and per task block the mean later accuracy and PL. None when
    there are fewer than 3 threshold runs."""
    runs = threshold_runs(results)
    if len(runs) < 3:
        return None
    ids = list(runs["run_id"])
    configured = {c.get("threshold_metric") for c in runs["config"]} - {None}
    metric = next(iter(configured)) if len(configured) == 1 else None
    metric = metric or first_present(results.table, AUTHORS_NC1) or "nc1"
    capped = set(capped_runs(results, runs))
    first = partial(analysis.at, step=0.0)
    return run_table(
        seeds=list(runs["seed"]),
        thresholds=[c["nc1_threshold"] for c in runs["config"]],
        epochs=first(analysis.curves(results.table, "task_epochs", ids)),
        nc1_0=first(analysis.curves(results.table, metric, ids)),
        reached=[run not in capped for run in ids],
        accuracy=analysis.curves(results.table, "accuracy", ids),
    )


def threshold_statistics(results: StudyResults) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """``(shown, raw, nesting)``: :func:`block_estimates` over the threshold
    runs as the report's table and as numbers, and how the runs nest. Empty without 3
    distinct runs from 3 seeds' worth of threshold runs."""
    frame = threshold_run_table(results)
    if frame is None or len(distinct_runs(frame)) < 3:
        return pd.DataFrame(), pd.DataFrame(), ""
    raw = block_estimates(frame, n_boot=results.bootstrap, seed=results.seed)
    shown = pd.DataFrame(
        {
            "tasks": raw["block"],
            "statistic": raw["statistic"],
            "r [95% CI over seeds]": [
                interval_text(r.estimate, r.ci_low, r.ci_high) for r in raw.itertuples()
            ],
            "runs / seeds": [f"{r.n_runs} / {r.n_seeds}" for r in raw.itertuples()],
            "interval": raw["interval"],
        }
    )
    return shown, raw, nesting_text(frame)


def threshold_table(frame: pd.DataFrame | None, results: StudyResults) -> pd.DataFrame:
    """The threshold analysis in a few numbers: smoothed |r| over task ranges."""
    if frame is None:
        return pd.DataFrame()
    runs = threshold_runs(results)
    thresholds = sorted({c["nc1_threshold"] for c in runs["config"]})
    capped = capped_runs(results, runs)
    kept = [run for run in runs["run_id"] if run not in capped]
    epochs = analysis.at(analysis.curves(results.table, "task_epochs", kept), 0.0)
    rows = []
    for lo, hi in ((1, 40), (41, 99), (99, 99)):
        part = frame[(frame["task"] >= lo) & (frame["task"] <= hi)]
        if not len(part):
            continue
        first, last = part["task"].min(), part["task"].max()
        rows.append(
            {
                "tasks": f"{first:g}-{last:g}" if first != last else f"{first:g}",
                "smoothed |r(NC1 after task 0, PL_i)|": fmt(
                    analysis.nanmean(part["abs_r_smoothed"])
                ),
                "raw r, mean": fmt(analysis.nanmean(part["r_nc1_pl"]), "r"),
                "smoothed r(epochs of task 0, PL_i)": fmt(
                    analysis.nanmean(part["r_epochs_pl_smoothed"]), "r"
                ),
                "smoothed partial r(NC1, PL_i | epochs)": fmt(
                    analysis.nanmean(part["r_nc1_pl_given_epochs_smoothed"]), "r"
                ),
                "runs": fmt(part["runs"].max(), "int"),
            }
        )
    table = pd.DataFrame(rows)
    distinct = int(frame["runs"].max())
    counted = len(kept)
    remarks = [f"{counted - distinct} the same run as another"] if counted > distinct else []
    if capped:
        remarks.append(
            f"{len(capped)} left out, stopped at the epoch cap above its threshold: "
            + ", ".join(capped)
        )
    same = f" ({'; '.join(remarks)})" if remarks else ""
    table.attrs["note"] = (
        f"{len(runs)} threshold runs{same}, thresholds {', '.join(f'{t:g}' for t in thresholds)} "
        f"on {frame['nc1_metric'].iloc[0]}, task 0 took {fmt(np.nanmin(epochs), 'int')}-"
        f"{fmt(np.nanmax(epochs), 'int')} epochs"
    )
    return table
