"""The Permuted study's NC-threshold analysis (the authors' variant of Setup A): which threshold
runs it can use, r across runs of NC1 after pre-training and PL_i per task, and, when it
cannot be done, why (too few runs that met their threshold, runs stopped at the safety cap,
the same run counted twice, no task after pre-training). :mod:`.report` shows the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from plasticollapse import analysis
from plasticollapse.report.format import fmt
from plasticollapse.studies.base import StudyResults

#: The threshold analysis: tasks 1-99 (the authors' first 100 tasks), Gaussian sigma.
THRESHOLD_TASKS, THRESHOLD_SIGMA = (1, 99), 4.0
#: NC1 in the authors' convention first; ``nc1`` for runs that predate ``nc1_pinv``.
AUTHORS_NC1 = ("nc1_pinv", "nc1")


def first_present(table: pd.DataFrame, candidates: Sequence[str]) -> str | None:
    """The first of ``candidates`` the runs report per step (None when none is)."""
    available = set(analysis.metrics(table))
    return next((m for m in candidates if m in available), None)


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
