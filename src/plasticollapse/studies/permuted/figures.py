"""The Permuted study's figures, drawn from a StudyResults; every title says what was run.

Each function writes ``<name>.png`` and ``<name>.pdf`` and returns the PNG, or returns
None and says why when the runs lack the data (:func:`plasticollapse.report.plots.skip`).
Bands are mean +- population std over seeds (on the log NC1 axes: geometric mean times or
divided by the geometric std); every r in a legend says how it was computed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from plasticollapse import analysis
from plasticollapse.report import plots
from plasticollapse.report.format import reached, shared_value
from plasticollapse.studies.base import StudyResults

#: Per-task panels of :func:`plot_nc1_pl`: (metric, axis label, log scale).
PANELS = (
    ("nc1", "NC1, exact rank-(C-1) inverse  [nc1]", True),
    ("nc1_pinv", "NC1, authors' float32 pinv  [nc1_pinv]", True),
    ("pl", "plasticity loss  acc(0) - acc(i)  [pl]", False),
)


def what_was_run(results: StudyResults) -> str:
    """``fashion-mnist, MLP 100-100-100, lr 0.01, tasks 0-199, 3 runs``: a title's second line."""
    runs = results.runs
    last = reached(runs)
    tasks = f"tasks 0-{last:g}" if np.isfinite(last) else "no task"
    return (
        f"{shared_value(runs, 'dataset')}, MLP {shared_value(runs, 'hidden').replace(',', '-')}"
        f", lr {shared_value(runs, 'lr')}, batch {shared_value(runs, 'batch_size')}, {tasks}, "
        f"{len(runs)} run{'s' * (len(runs) != 1)}"
    )


def plot_nc1_pl(results: StudyResults, folder: Path) -> Path | None:
    """The paper's Fig. 2: NC1 (both conventions) and plasticity loss per task, one line per
    setting."""
    name = "permuted_nc1_pl"
    available = analysis.metrics(results.table)
    shown = [p for p in PANELS if p[0] in available]
    if not any(m.startswith("nc1") for m, _, _ in shown):
        plots.skip(name, "no runs with nc1")
        return None
    fig, axes = plots.panels(len(shown), width=4.6)
    for ax, (metric, ylabel, log) in zip(axes, shown, strict=True):
        for setting, runs in analysis.setting_groups(results.runs, results.settings):
            frame = analysis.curves(results.table, metric, list(runs["run_id"]))
            plots.draw_band(ax, frame, plots.group_label(setting), geometric=log)
        ax.set_xlabel("task")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
        if log:
            plots.log_axis(ax, "y")  # NC1 spans decades when Sigma_B is ill-conditioned
    plots.legend_outside(axes[-1], plots.legend_title(results.settings))
    headline = (
        "Permuted: NC1 and plasticity loss per task over seeds "
        "(NC1: geometric mean ×/÷ geometric std; PL: mean ± std)"
    )
    plots.set_title(fig, headline, what_was_run(results), 10)
    return plots.save(fig, folder, name)


def plot_nc1_vs_accuracy(results: StudyResults, folder: Path, max_tasks: int = 140) -> Path | None:
    """NC1 (both conventions) against online accuracy: per-task means over seeds, one colour
    per setting, r of the per-task means in the legend (the headline's definition)."""
    name = "permuted_nc1_vs_accuracy"
    available = analysis.metrics(results.table)
    shown = [m for m in ("nc1", "nc1_pinv") if m in available]
    if not shown or "accuracy" not in available:
        plots.skip(name, "no runs with nc1 and accuracy")
        return None
    fig, axes = plots.panels(len(shown), width=4.8, height=4.0)
    last_shown = -1.0
    for ax, metric in zip(axes, shown, strict=True):
        for setting, runs in analysis.setting_groups(results.runs, results.settings):
            cx, cy = analysis.paired_curves(results.table, metric, "accuracy", list(runs["run_id"]))
            cx, cy = analysis.between(cx, hi=max_tasks - 1), analysis.between(cy, hi=max_tasks - 1)
            if cx.shape[1]:
                last_shown = max(last_shown, float(cx.columns.max()))
                plots.scatter_means(ax, cx, cy, plots.group_label(setting))
        plots.log_axis(ax, "x")
        ax.set_xlabel(f"mean {metric} per task (log)")
        ax.set_ylabel("mean online accuracy per task")
        ax.grid(alpha=0.3)
        plots.legend_below(ax, plots.legend_title(results.settings))
    headline = f"Permuted: NC1 vs accuracy, tasks 0-{last_shown:g}; r of per-task means over seeds"
    plots.set_title(fig, headline, what_was_run(results), 10)
    return plots.save(fig, folder, name)


def plot_threshold(
    frame: pd.DataFrame | None,
    results: StudyResults,
    folder: Path,
    sigma: float = 4.0,
    missing: str = "",
) -> Path | None:
    """The authors' threshold figure: |r| across runs of NC1 after pre-training and PL_i per
    task (faint) and Gaussian-smoothed (sigma tasks), with r(epochs of task 0, PL_i).
    ``missing`` is why there is no r to draw, when there is none (the report's reason)."""
    name = "permuted_nc1_threshold"
    if frame is None or not np.isfinite(frame["r_nc1_pl"]).any():
        plots.skip(name, missing or "no threshold runs")
        return None
    fig, (ax,) = plots.panels(1, width=6.5, height=4.0)
    task = frame["task"].to_numpy()
    metric = frame["nc1_metric"].iloc[0]
    for raw, smooth, label in (
        ("abs_r", "abs_r_smoothed", f"|r({metric} after task 0, PL_i)|"),
        ("r_epochs_pl", "r_epochs_pl_smoothed", "r(epochs of task 0, PL_i)"),
        (
            "r_nc1_pl_given_epochs",
            "r_nc1_pl_given_epochs_smoothed",
            "partial r(NC1, PL_i | epochs)",
        ),
    ):
        if raw not in frame or not np.isfinite(frame[raw]).any():  # e.g. partial r: < 4 runs
            continue
        (line,) = ax.plot(task, frame[smooth], lw=1.8, label=f"{label}, smoothed")
        ax.plot(task, frame[raw], lw=0.8, alpha=0.35, color=line.get_color(), label="  per task")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("task i (after pre-training)")
    ax.set_ylabel("Pearson r across runs")
    ax.grid(alpha=0.3)
    plots.legend_outside(ax)
    configs = results.runs["config"]
    thresholds = sorted({c["nc1_threshold"] for c in configs if c.get("nc1_threshold")})
    listed = ", ".join(f"{t:g}" for t in thresholds)
    headline = (
        f"NC-threshold variant: {int(frame['runs'].max())} distinct runs, thresholds {listed}"
    )
    plots.set_title(ax, f"{headline}; Gaussian sigma {sigma:g} tasks", what_was_run(results))
    return plots.save(fig, folder, name)


def draw_all(
    results: StudyResults, folder: Path, threshold: pd.DataFrame | None, missing: str = ""
) -> list[tuple[str, Path]]:
    """Every figure the data allows, as (caption, PNG) pairs (PDFs lie beside them);
    ``missing``: why the threshold analysis has no r, when it has none."""
    made = [
        (
            "Permuted: NC1 (both conventions) and plasticity loss per task (paper Fig. 2)",
            plot_nc1_pl(results, folder),
        ),
        (
            "Permuted: per-task mean NC1 vs mean accuracy (r of per-task means over seeds)",
            plot_nc1_vs_accuracy(results, folder),
        ),
        (
            "Permuted, NC-threshold variant: r across runs of NC1 after pre-training and PL_i",
            plot_threshold(threshold, results, folder, missing=missing),
        ),
    ]
    return [(caption, png) for caption, png in made if png is not None]
