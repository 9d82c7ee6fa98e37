"""The Permuted study's report: the paper's numbers like for like, correlations under both NC1
conventions, the NC-threshold analysis, every metric ranked, and the figures (:mod:`.figures`).

:func:`report` builds the study's :class:`~plasticollapse.studies.base.ReportSection`:

* what was run per setting (data, model, learning rate, first-task epochs, tasks reached,
  seeds);
* the paper's numbers (:data:`PAPER_NUMBERS`) beside ours: a difference only where the
  protocol matches (:data:`PAPER_CONFIG`: MNIST, the 100-100-100 MLP, lr 0.01, batch 1, ...)
  and the runs reached the paper's tasks; NC1 numbers in the authors' convention
  (``nc1_pinv``, docs/metrics.md);
* correlations (``correlations.csv``): per setting, r over tasks between the per-task means
  over seeds of each NC1 variant (``nc1``, ``nc1_pinv``, log NC1, ``nc1_quotient``,
  ``cdnv``) and of online accuracy, Pearson and Spearman, with a bootstrap interval over
  seeds and each seed's own r (:func:`headline_correlations`);
* the NC-threshold variant, over the threshold runs only (``threshold.csv``,
  :func:`~.threshold.threshold_analysis`): for each task i, r across runs of NC1 after
  pre-training and PL_i, |r| smoothed with a Gaussian (sigma = 4 tasks) over tasks 1-99, as
  the authors; when it cannot be done, a note says why (and the figure is skipped for it);
  beside it the block statistics with seed-bootstrap intervals (``threshold_blocks.csv``);
* every recorded metric ranked by its detrended association with accuracy
  (``detrended_r_diff``, seed-bootstrap intervals, aliases once), the paper's r of
  per-task means beside it by name (``metric_ranking.csv``, :func:`metric_ranking`,
  :mod:`plasticollapse.report.predictors`).

One definition of r per quantity, said wherever an r is shown: the headline is "r across
tasks of the per-task means over seeds" (the paper's convention, ``paper_mean_curve_r``);
"per-seed r" is each seed's own r across its tasks; the threshold analysis is "r across
runs". No p-value is printed: tasks are autocorrelated, so a p-value from their count reads
a shared trend as a relation (docs/statistics.md).
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plasticollapse import analysis
from plasticollapse.report.format import (
    ANY_VALUE,
    DASH,
    PaperNumber,
    Reproduced,
    bootstrap_text,
    correlation_tables,
    fmt,
    paper_tables,
    reached,
    seeds_text,
    to_fraction,
)
from plasticollapse.report.predictors import (
    predictor_board,
    ranking_caption,
    ranking_view,
)
from plasticollapse.studies.base import ReportSection, StudyResults
from plasticollapse.studies.common import PAPER
from plasticollapse.studies.permuted.threshold import (
    AUTHORS_NC1,
    THRESHOLD_SIGMA,
    THRESHOLD_TASKS,
    capped_runs,
    first_present,
    threshold_analysis,
    threshold_missing,
    threshold_run_table,
    threshold_runs,
    threshold_statistics,
    threshold_table,
)

#: The paper's protocol (Setup A) in words, and as the config values a like-for-like run has.
PAPER_PROTOCOL = "MNIST, MLP 784-100x3-10, SGD lr 0.01, batch 1, 1 epoch/task, 200 tasks, 5 seeds"
PAPER_CONFIG: dict[str, Any] = {
    "dataset": "mnist",
    "hidden": [100, 100, 100],
    "lr": 0.01,
    "batch_size": 1,
    "epochs_per_task": 1,
    "train_samples": 0,
    "measure_samples": 0,
    "measure_every": 1,
    "remedies": [],
}
#: The threshold variant's protocol: the above, task 0 trained to an NC1 threshold in the
#: authors' convention, its accuracy the mean over its epochs, one sample order per task.
THRESHOLD_CONFIG = {
    **PAPER_CONFIG,
    "threshold_metric": "nc1_pinv",
    "task_accuracy": "mean",
    "sample_order": "per_task",
}
_PAPER_SETTING = {"first_task_epochs": 1, "lr": 0.01}
#: The paper's tasks for the headline correlation (tasks 0-139).
MAX_TASKS = 140
#: The NC1 variants correlated with accuracy side by side: (metric, transform).
NC1_VARIANTS = (
    ("nc1", None),
    ("nc1_pinv", None),
    ("nc1", "log"),
    ("nc1_quotient", None),
    ("cdnv", None),
)
#: Keys that are not metrics of the network (accuracy itself, bookkeeping, class labels).
NOT_RANKED = (
    "accuracy_first_epoch",
    "accuracy_last_epoch",
    "loss",
    "eval_accuracy",
    "eval_loss",
    "epoch",
    "task_epochs",
    "seconds",
    "closest_pair_a",
    "closest_pair_b",
    "num_classes_present",
    "num_classes_absent",
    "nc1_threshold_reached",
)
#: Metrics shown per setting in the report's ranking table (all are in metric_ranking.csv).
RANKING_SHOWN = 8

_E1 = {"protocol": {**PAPER_CONFIG, "first_task_epochs": 1}, "prefer": _PAPER_SETTING}
_THRESHOLD = {"protocol": THRESHOLD_CONFIG, "require": {"nc1_threshold": ANY_VALUE}}

#: Source: docs/paper.md (the authors' stored results); accuracies as fractions. The NC1
#: numbers are in the authors' convention (nc1_pinv); "about task 140" is the mean of tasks
#: 130-139 (one task is noisy).
# fmt: off
PAPER_NUMBERS: tuple[PaperNumber, ...] = (
    PaperNumber("r(mean NC1, mean accuracy) across tasks 0-139 (r of per-task means)", -0.944,
                "r", "headline_r", {"max_tasks": MAX_TASKS}, **_E1),
    PaperNumber("accuracy, task 0", 0.923, "frac", "value",
                {"metric": "accuracy", "tasks": (0, 0)}, **_E1),
    PaperNumber("accuracy, mean of tasks 130-139", 0.81, "frac", "value",
                {"metric": "accuracy", "tasks": (130, 139)}, **_E1),
    PaperNumber("NC1 (authors' convention), task 0", 0.226, "", "value",
                {"metric": "nc1_pinv", "tasks": (0, 0)}, **_E1),
    PaperNumber("NC1 (authors' convention), mean of tasks 130-139", 0.34, "", "value",
                {"metric": "nc1_pinv", "tasks": (130, 139)}, **_E1),
    PaperNumber("threshold variant: smoothed |r(NC1 after task 0, PL_i)| across runs, "
                "mean over tasks 1-40", 0.85, "r", "threshold_r", {"tasks": (1, 40)},
                **_THRESHOLD),
    PaperNumber("threshold variant: smoothed |r(NC1 after task 0, PL_i)| at task 99",
                0.77, "r", "threshold_r", {"tasks": (99, 99)}, **_THRESHOLD),
)
# fmt: on


def protocol_line(setting: dict[str, Any], runs: pd.DataFrame) -> str:
    """One line saying what was run for a setting: data, model, lr, E, tasks reached, seeds."""
    c = runs["config"].iloc[0]
    last = reached(runs)
    tasks = fmt(last + 1, "int") if math.isfinite(last) else DASH
    hidden = "-".join(str(h) for h in c.get("hidden", ())) or "?"
    threshold = c.get("nc1_threshold")
    first = f"E={c.get('first_task_epochs', '?')}"
    if threshold is not None:
        first = f"task 0 until {c.get('threshold_metric', 'nc1')} < {threshold:g} (cap {first})"
    return (
        f"{c.get('dataset', '?')}, MLP {hidden}, lr {c.get('lr', '?')}, {first}, "
        f"{tasks}/{c.get('tasks', '?')} tasks, {seeds_text(runs)}"
    )


# =========================================================================== paper numbers


def reproduce(
    results: StudyResults, ref: PaperNumber, setting: dict[str, Any], runs: pd.DataFrame
) -> Reproduced:
    """Our number for a paper number, from the runs of one setting (mean over seeds);
    comparable only when the runs reached every task the paper's number covers."""
    table, ids = results.table, list(runs["run_id"])
    if ref.kind == "threshold_r":
        return _threshold_number(results, ref)
    metric = "nc1_pinv" if ref.kind == "headline_r" else ref.params["metric"]
    note, comparable = "", True
    if metric == "nc1_pinv":
        metric = first_present(table, AUTHORS_NC1) or metric
        if metric != "nc1_pinv":
            note, comparable = "exact nc1: these runs have no nc1_pinv", False
    if ref.kind == "headline_r":
        cx, cy = analysis.paired_curves(table, metric, "accuracy", ids)
        last = ref.params["max_tasks"] - 1
        cx, cy = analysis.between(cx, hi=last), analysis.between(cy, hi=last)
        steps = cx.columns.to_numpy(dtype=float)
        if steps.size == 0:
            return Reproduced(math.nan, "no task measured", False)
        r = analysis.mean_curve_r(cx.to_numpy(), cy.to_numpy())
        if steps.size < ref.params["max_tasks"]:
            span = f"r over tasks {steps.min():g}-{steps.max():g} only"
            return Reproduced(r, "; ".join(filter(None, (span, note))), False)
        return Reproduced(r, note, comparable)
    if ref.kind == "value":
        lo, hi = ref.params["tasks"]
        steps, mean, _ = analysis.band(analysis.curves(table, metric, ids))
        inside = (steps >= lo) & (steps <= hi) & np.isfinite(mean)
        if inside.sum() < hi - lo + 1:
            done = steps[np.isfinite(mean)]
            end = f"runs end at task {done.max():g}" if done.size else "no task measured"
            return Reproduced(math.nan, end, False)
        value = float(mean[inside].mean())
        if ref.unit == "frac":
            value = float(to_fraction([value])[0])
        return Reproduced(value, note, comparable)
    raise ValueError(f"unknown reproduction kind {ref.kind!r}")


def _threshold_number(results: StudyResults, ref: PaperNumber) -> Reproduced:
    frame = threshold_analysis(results)
    if frame is None:
        return Reproduced(math.nan, threshold_missing(results, frame), False)
    lo, hi = ref.params["tasks"]
    inside = frame[(frame["task"] >= lo) & (frame["task"] <= hi)]
    values = inside["abs_r_smoothed"].to_numpy(dtype=float)
    note = f"across {int(frame['runs'].max())} threshold runs"
    if len(inside) < hi - lo + 1 or not np.isfinite(values).any():
        return Reproduced(math.nan, f"{note}; runs end before task {hi}", False)
    return Reproduced(analysis.nanmean(values), note)


# =========================================================================== correlations


def headline_correlations(
    results: StudyResults,
    x: str = "nc1",
    y: str = "accuracy",
    max_tasks: int = MAX_TASKS,
    transform: str | None = None,
) -> list[dict[str, Any]]:
    """The Permuted MNIST headline, per setting (e.g. per ``first_task_epochs``).

    For each setting: the per-task mean over seeds of ``x`` (``transform="log"``: of
    log x) and of ``y`` (each task averaged over the seeds that reached it), over tasks
    ``0 <= task < max_tasks`` (the paper: the first 140 tasks; fewer when the runs hold
    fewer), then Pearson r / Spearman rho across tasks of the two mean curves; a 95 %
    bootstrap interval by resampling seeds (``"mean_curve"``); and each seed's own r over
    the same tasks.
    """
    rows = []
    name = f"log {x}" if transform == "log" else x
    for setting, runs in analysis.setting_groups(results.runs, results.settings):
        cx, cy = analysis.paired_curves(results.table, x, y, list(runs["run_id"]))
        cx, cy = analysis.between(cx, hi=max_tasks - 1), analysis.between(cy, hi=max_tasks - 1)
        if cx.shape[1] == 0 or not np.isfinite(cx.to_numpy()).any():
            continue
        if transform == "log":
            cx = np.log(cx.where(cx > 0))
        ci = analysis.bootstrap_over_seeds(
            cx.to_numpy(), cy.to_numpy(), "mean_curve", "pearson", results.bootstrap, results.seed
        )
        steps = cx.columns.to_numpy(dtype=float)
        rows.append(
            {
                "analysis": f"r of per-task means: {name} vs {y}",
                "x": name,
                "setting": setting,
                "label": analysis.setting_label(setting),
                "steps": f"tasks {int(steps.min())}-{int(steps.max())}",
                **analysis.correlation(cx.mean(axis=0), cy.mean(axis=0)),
                "ci_low": ci["low"],
                "ci_high": ci["high"],
                "n_seeds": len(cx),
                "per_seed_r": [float(v) for v in analysis.per_run_r(cx, cy)],
            }
        )
    return rows


def metric_ranking(results: StudyResults, max_tasks: int = MAX_TASKS) -> pd.DataFrame:
    """Every recorded metric per setting, scored against online accuracy over tasks
    0..max_tasks-1 by the predictor leaderboard (:func:`~plasticollapse.report.predictors.
    predictor_board`: detrended, lead-lag, across-run and the paper's statistics, each with
    a seed-bootstrap interval and its n; aliases once). PL is not scored separately: within
    a run PL_i = acc_0 - acc_i is accuracy turned over, so every within-run statistic is
    the same with the sign flipped."""
    table = results.table
    table = table[table["step"].isna() | (table["step"] <= max_tasks - 1)]
    return predictor_board(table, "accuracy", NOT_RANKED, results.bootstrap, results.seed)


def ranking_shown(ranking: pd.DataFrame, top: int = RANKING_SHOWN) -> pd.DataFrame:
    """The report's view: per setting the top metrics by ``detrended_r_diff``, and the NC1
    variants wherever they rank, with the paper's r of per-task means beside them."""
    nc1 = {m for m, _ in NC1_VARIANTS}
    return ranking_view(ranking, "paper_mean_curve_r", top, nc1.__contains__)


# =========================================================================== the section


def report(results: StudyResults) -> ReportSection:
    """The Permuted study's section of the report (see the module doc)."""
    from plasticollapse.studies.permuted import figures

    folder = Path(results.out)
    available = set(analysis.metrics(results.table))
    rows = []
    for x, transform in NC1_VARIANTS:
        if x in available:
            rows += headline_correlations(results, x, transform=transform)
    shown, raw = correlation_tables(rows)
    files = [folder / "correlations.csv", folder / "metric_ranking.csv"]
    raw.to_csv(files[0], index=False)
    ranking = metric_ranking(results)
    ranking.to_csv(files[1], index=False)
    threshold = threshold_analysis(results)
    missing = threshold_missing(results, threshold)
    tables = [
        *paper_tables(
            results,
            PAPER_NUMBERS,
            partial(reproduce, results),
            protocol_line,
            "Paper values: docs/paper.md (the authors' stored results, mean over 5 seeds; "
            "NC1 in their convention, nc1_pinv). Reproduced values are means over seeds of "
            "the closest setting that was run (the protocol column says which).",
        ),
        (
            "Correlations with accuracy, both NC1 conventions and the companions\n"
            "r of per-task means (the paper's convention): Pearson r / Spearman rho across "
            "tasks 0-139 (or fewer) between the per-task means over seeds, with the 95% CI of "
            "that same estimator (the mean curves recomputed over resampled seeds); no "
            "p-value, as the tasks are autocorrelated. per-seed r: each seed's own Pearson r "
            "across its tasks. " + bootstrap_text(results),
            shown,
        ),
        (
            "Which recorded metric tracks accuracy (tasks 0-139)\n"
            + ranking_caption("accuracy", "paper_mean_curve_r", RANKING_SHOWN, ranking)
            + " Within a run PL_i = acc_0 - acc_i, so with PL every r flips sign.",
            ranking_shown(ranking),
        ),
    ]
    if threshold is not None:
        files.append(folder / "threshold.csv")
        threshold.to_csv(files[-1], index=False)
        summary = threshold_table(threshold, results)
        tables.append(
            (
                "NC-threshold variant (threshold runs only)\n"
                f"{summary.attrs.get('note', '')}. For each task i, Pearson r across runs of "
                "NC1 after pre-training and PL_i (and of task 0's epochs and PL_i), |r| "
                f"smoothed with a Gaussian of sigma {THRESHOLD_SIGMA:g} tasks over tasks "
                f"{THRESHOLD_TASKS[0]}-{THRESHOLD_TASKS[1]} (the authors' analysis). Per task: "
                "threshold.csv.",
                summary,
            )
        )
        shown_blocks, raw_blocks, nesting = threshold_statistics(results)
        if len(raw_blocks):
            files.append(folder / "threshold_blocks.csv")
            raw_blocks.to_csv(files[-1], index=False)
            tables.append(
                (
                    "NC-threshold variant: across-run statistics per task block, with "
                    f"intervals\n{nesting} Each r is over runs of one number per run (mean "
                    "over the block's tasks). PL_i = acc_0 - acc_i carries acc_0, so the r "
                    "with later accuracy acc_i alone and the r of acc_0 with PL are shown "
                    "beside the r with PL. Partial r: given a line in the pre-training "
                    "epochs. Per run: threshold_runs.csv.",
                    shown_blocks,
                )
            )
            files.append(folder / "threshold_runs.csv")
            run_rows = threshold_run_table(results)
            assert run_rows is not None  # raw_blocks is empty without 3 threshold runs
            run_rows.to_csv(files[-1], index=False)
    notes = []
    if missing:  # threshold runs were asked for: say why their numbers and figure are absent
        capped = capped_runs(results, threshold_runs(results))
        named = f" Stopped at the cap: {', '.join(capped)}." if capped else ""
        notes.append(f"NC-threshold variant: no analysis and no figure, because {missing}.{named}")
    return ReportSection(
        title="Permuted: online Permuted MNIST (the paper's Setup A)",
        protocol=f"Paper: {PAPER}; its protocol: {PAPER_PROTOCOL}.",
        tables=tables,
        figures=figures.draw_all(results, folder / "figures", threshold, missing),
        files=files,
        notes=notes,
    )
