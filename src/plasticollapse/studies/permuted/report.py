"""The Permuted study's report: the paper's headline correlation, its numbers, two figures.

:func:`report` builds the study's :class:`~plasticollapse.studies.base.ReportSection`:

* what was run per setting (data, learning rate, first-task epochs, tasks reached, seeds);
* the paper's numbers (:data:`PAPER_NUMBERS`) beside ours, for the closest setting run;
* correlations (``correlations.csv``): per setting, Pearson r / Spearman rho across tasks
  between the per-task means over seeds of NC1 and of online accuracy, with a bootstrap
  interval over seeds and each seed's own r (:func:`headline_correlations`); with the
  threshold variant, NC1 after the first task against later plasticity loss, across runs
  (:func:`pretraining_nc1_vs_pl`);
* figures: NC1 and plasticity loss per task (the paper's Fig. 2), and the per-task means
  of NC1 against accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plasticollapse import analysis
from plasticollapse.report import plots
from plasticollapse.report.format import (
    DASH,
    PaperNumber,
    bootstrap_text,
    correlation_tables,
    fmt,
    paper_tables,
    reached,
    seeds_text,
    to_fraction,
)
from plasticollapse.studies.base import ReportSection, StudyResults
from plasticollapse.studies.common import PAPER

#: The paper's protocol (Setup A), and its values of our settings (to pick the closest run).
PAPER_PROTOCOL = "MNIST, MLP 784-100x3-10, SGD lr 0.01, batch 1, 1 epoch/task, 200 tasks, 5 seeds"
_PAPER_SETTING = {"first_task_epochs": 1, "lr": 0.01}
#: The paper's tasks for the headline correlation (tasks 0-139).
MAX_TASKS = 140

#: Source: the paper's text (see docs/paper.md); accuracies as fractions.
# fmt: off
PAPER_NUMBERS: tuple[PaperNumber, ...] = (
    PaperNumber("r(mean NC1, mean accuracy), first 140 tasks", -0.94, "r", "headline_r",
                {"max_tasks": MAX_TASKS}, prefer=_PAPER_SETTING),
    PaperNumber("accuracy, first task (index 0)", 0.925, "frac", "value",
                {"metric": "accuracy", "at": "first"}, prefer=_PAPER_SETTING),
    PaperNumber("accuracy at task 140 (index 139)", 0.81, "frac", "value",
                {"metric": "accuracy", "at": 139}, prefer=_PAPER_SETTING),
    PaperNumber("NC1, first task (index 0)", 0.235, "", "value",
                {"metric": "nc1", "at": "first"}, prefer=_PAPER_SETTING),
    PaperNumber("NC1 at task 140 (index 139)", 0.35, "", "value",
                {"metric": "nc1", "at": 139}, prefer=_PAPER_SETTING),
)
# fmt: on


def protocol_line(setting: dict[str, Any], runs: pd.DataFrame) -> str:
    """One line saying what was run for a setting: data, lr, E, tasks reached, seeds."""
    c = runs["config"].iloc[0]
    last = reached(runs)
    tasks = fmt(last + 1, "int") if math.isfinite(last) else DASH
    return (
        f"{c.get('dataset', '?')}, lr {c.get('lr', '?')}, E={c.get('first_task_epochs', '?')}"
        f", {tasks}/{c.get('tasks', '?')} tasks, {seeds_text(runs)}"
    )


def reproduce(
    table: pd.DataFrame, ref: PaperNumber, setting: dict[str, Any], runs: pd.DataFrame
) -> tuple[float, str]:
    """Our number for a paper number, from the runs of one setting (mean over seeds)."""
    ids = list(runs["run_id"])
    if ref.kind == "headline_r":
        cx, cy = analysis.paired_curves(table, "nc1", "accuracy", ids)
        last = ref.params["max_tasks"] - 1
        return analysis.mean_curve_r(
            analysis.between(cx, hi=last).to_numpy(), analysis.between(cy, hi=last).to_numpy()
        ), ""
    if ref.kind == "value":
        steps, mean, _ = analysis.band(analysis.curves(table, ref.params["metric"], ids))
        ok = np.flatnonzero(np.isfinite(mean))
        if ok.size == 0:
            return math.nan, ""
        at, note = ref.params["at"], ""
        if at == "first":
            i = ok[0]
        else:  # the paper's task, or the last task reached when the runs are shorter
            i = ok[steps[ok] <= at][-1]
            if steps[i] != at:
                note = f"; value at task {int(steps[i])}"
        value = to_fraction([mean[i]])[0] if ref.unit == "frac" else mean[i]
        return float(value), note
    raise ValueError(f"unknown reproduction kind {ref.kind!r}")


def headline_correlations(
    results: StudyResults, x: str = "nc1", y: str = "accuracy", max_tasks: int = MAX_TASKS
) -> list[dict[str, Any]]:
    """The Permuted MNIST headline, per setting (e.g. per ``first_task_epochs``).

    For each setting: the per-task mean over seeds of ``x`` and of ``y`` (each task averaged
    over the seeds that reached it), over tasks ``0 <= task < max_tasks`` (the paper: the
    first 140 tasks; fewer when the runs hold fewer), then Pearson r / Spearman rho across
    tasks of the two mean curves; a 95 % bootstrap interval by resampling seeds
    (``"mean_curve"``); and each seed's own r over the same tasks.
    """
    rows = []
    for setting, runs in analysis.setting_groups(results.runs, results.settings):
        cx, cy = analysis.paired_curves(results.table, x, y, list(runs["run_id"]))
        cx, cy = analysis.between(cx, hi=max_tasks - 1), analysis.between(cy, hi=max_tasks - 1)
        if cx.shape[1] == 0:
            continue
        ci = analysis.bootstrap_over_seeds(
            cx.to_numpy(), cy.to_numpy(), "mean_curve", "pearson", results.bootstrap, results.seed
        )
        steps = cx.columns.to_numpy(dtype=float)
        rows.append(
            {
                "analysis": f"corr(mean {x}, mean {y}) over tasks",
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


def pretraining_nc1_vs_pl(
    results: StudyResults, upto: Sequence[int] = (40, 100), x: str = "nc1", y: str = "pl"
) -> list[dict[str, Any]]:
    """Across runs: corr(x after the first task, mean of y over tasks 1..K), for each K.

    Our reading of the paper's threshold variant (train task 0 until NC1 < threshold, then
    measure PL): each run contributes one point, its ``x`` at task 0 and its mean ``y``
    over tasks ``1 <= task <= K``. Needs at least 3 runs.
    """
    ids = list(results.runs["run_id"])
    if len(ids) < 3:
        return []
    first = analysis.at(analysis.curves(results.table, x, ids), 0.0)
    pl = analysis.curves(results.table, y, ids)
    rows = []
    for k in upto:
        rows.append(
            {
                "analysis": f"corr({x} after task 0, mean {y} over tasks 1-{k}) across runs",
                "setting": {},
                "label": "all runs",
                "steps": f"tasks 1-{k}",
                **analysis.correlation(first, analysis.between(pl, 0, k).mean(axis=1)),
                "n_seeds": len(ids),
            }
        )
    return rows


# =========================================================================== figures


def plot_nc1_pl(results: StudyResults, folder: Path) -> Path | None:
    """The paper's Fig. 2: NC1 and plasticity loss per task, one line per setting."""
    name = "permuted_nc1_pl"
    available = analysis.metrics(results.table)
    if "nc1" not in available:
        return plots.skip(name, "no runs with nc1")
    shown = [("nc1", "NC1")]
    if "pl" in available:
        shown.append(("pl", "plasticity loss  acc(0) - acc(i)"))
    fig, axes = plots.panels(len(shown), width=5.2)
    for ax, (metric, ylabel) in zip(axes, shown, strict=True):
        for setting, runs in analysis.setting_groups(results.runs, results.settings):
            frame = analysis.curves(results.table, metric, list(runs["run_id"]))
            plots.draw_band(ax, frame, plots.group_label(setting))
        ax.set_xlabel("task")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    plots.log_axis(axes[0], "y")  # NC1 spans decades when Sigma_B is ill-conditioned
    plots.legend_outside(axes[-1], plots.legend_title(results.settings))
    fig.suptitle("Permuted: collapse and plasticity loss per task (mean ± std over seeds)")
    return plots.save(fig, folder, name)


def plot_nc1_vs_accuracy(
    results: StudyResults, folder: Path, max_tasks: int = MAX_TASKS
) -> Path | None:
    """NC1 against online accuracy: per-task means over seeds, one colour per setting."""
    name = "permuted_nc1_vs_accuracy"
    if not {"nc1", "accuracy"} <= set(analysis.metrics(results.table)):
        return plots.skip(name, "no runs with nc1 and accuracy")
    fig, (ax,) = plots.panels(1, width=5.5, height=4.2)
    for setting, runs in analysis.setting_groups(results.runs, results.settings):
        cx, cy = analysis.paired_curves(results.table, "nc1", "accuracy", list(runs["run_id"]))
        last = max_tasks - 1
        cx, cy = analysis.between(cx, hi=last), analysis.between(cy, hi=last)
        plots.scatter_means(ax, cx, cy, plots.group_label(setting))
    ax.set_xlabel("mean NC1 per task")
    ax.set_ylabel("mean online accuracy per task")
    ax.set_title(f"Permuted: NC1 vs accuracy, first {max_tasks} tasks")
    plots.legend_outside(ax, plots.legend_title(results.settings))
    ax.grid(alpha=0.3)
    return plots.save(fig, folder, name)


# =========================================================================== the section


def report(results: StudyResults) -> ReportSection:
    """The Permuted study's section of the report (see the module doc)."""
    folder = Path(results.out)
    rows = headline_correlations(results)
    configs = results.runs["config"]
    if any(c.get("nc1_threshold") is not None for c in configs):
        rows += pretraining_nc1_vs_pl(results)
    shown, raw = correlation_tables(rows)
    correlations_csv = folder / "correlations.csv"
    raw.to_csv(correlations_csv, index=False)

    figures = [
        ("Permuted: NC1 and plasticity loss per task (paper Fig. 2)", plot_nc1_pl),
        ("Permuted: per-task mean NC1 vs mean accuracy, first 140 tasks", plot_nc1_vs_accuracy),
    ]
    drawn = [(caption, draw(results, folder / "figures")) for caption, draw in figures]
    return ReportSection(
        title="Permuted: online Permuted MNIST (the paper's Setup A)",
        protocol=f"Paper: {PAPER}; its protocol: {PAPER_PROTOCOL}.",
        tables=[
            *paper_tables(
                results,
                PAPER_NUMBERS,
                partial(reproduce, results.table),
                protocol_line,
                "Reproduced values are means over seeds of the closest setting that was run "
                "(the protocol column says which).",
            ),
            (
                "Correlations\nPearson r and Spearman rho with two-sided p-values, across "
                "tasks between the per-task means over seeds (tasks 0-139 or fewer). "
                + bootstrap_text(results),
                shown,
            ),
        ],
        figures=[(caption, png) for caption, png in drawn if png is not None],
        files=[correlations_csv],
    )
