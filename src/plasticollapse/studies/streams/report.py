"""The report section every stream study shares: a table per setting, correlations, figures.

:func:`stream_report` builds a study's :class:`~plasticollapse.studies.base.ReportSection`:

* a table per setting (usually the remedies): per-run values (at task 0, at the last task
  the run reached, or the mean over its tasks) averaged over seeds, with a percentile
  bootstrap interval over seeds (``values.csv`` holds the numbers);
* correlations across tasks of the per-task means over seeds (the permuted study's
  :func:`~plasticollapse.studies.permuted.report.headline_correlations`): NC1 vs online
  accuracy on the training samples, and held-out NC1 vs held-out accuracy, the paper's
  convention with the seed-bootstrap interval of that estimator and no p-value;
* every recorded metric scored against online accuracy by the dependence-aware statistics
  (``metric_ranking.csv``: :mod:`plasticollapse.report.predictors`, ``detrended_r_diff``
  first, seed-bootstrap intervals, aliases once);
* figures: accuracy and NC1 per task, training and held-out (``<study>_curves``); NC1 in
  every hidden layer at the first, middle and last measured task (``<study>_depth``); the
  opt-in probes per task when the runs have them (``<study>_probes``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from plasticollapse import analysis
from plasticollapse.report import plots
from plasticollapse.report.format import DASH, bootstrap_text, correlation_tables, fmt, seeds_text
from plasticollapse.report.predictors import predictor_board, ranking_caption, ranking_view
from plasticollapse.studies.base import ReportSection, StudyResults
from plasticollapse.studies.permuted.report import headline_correlations

if TYPE_CHECKING:
    from matplotlib.lines import Line2D

#: Metrics shown per setting in the ranking table (all are in metric_ranking.csv).
RANKING_SHOWN = 6


def _is_nc1(metric: str) -> bool:
    return metric in ("nc1", "test_nc1")


#: The table's columns: (header, metric, which value of each run, fmt unit).
TABLE_COLUMNS = (
    ("online acc, task 0", "accuracy", "first", "frac"),
    ("online acc, last task", "accuracy", "last", "frac"),
    ("mean online acc", "accuracy", "mean", "frac"),
    ("held-out acc, last task", "test_accuracy", "last", "frac"),
    ("PL, last task", "pl", "last", "frac"),
    ("NC1, task 0", "nc1", "first", ""),
    ("NC1, last task", "nc1", "last", ""),
    ("held-out NC1, last task", "test_nc1", "last", ""),
    ("dormant fraction, last task", "dormant_fraction", "last", "frac"),
    ("effective rank, last task", "effective_rank", "last", ""),
    ("plasticity score, mean", "plasticity_score", "mean", "frac"),
    ("retrained gap, mean", "retrained_gap", "mean", "frac"),
    ("task-0 acc, last task", "task0_accuracy", "last", "frac"),
)

#: The probes' keys and their axis labels (``<study>_probes``).
PROBES = (
    ("plasticity_score", "plasticity score 1 - L_after/L_before"),
    ("retrained_gap", "retrained acc - online acc"),
    ("task0_accuracy", "accuracy on task 0's data"),
)

_LAYER = re.compile(r"^nc1_layer(\d+)$")


def named(setting: dict) -> dict:
    """The setting with a run without remedies named ``plain`` (its ``remedies`` is empty)."""
    return {k: ("plain" if k == "remedies" and v in ("", None) else v) for k, v in setting.items()}


def per_run(frame: pd.DataFrame, which: str) -> np.ndarray:
    """Each run's (row's) first, last or mean finite value over the steps (NaN if none)."""
    out = []
    for values in frame.to_numpy(dtype=float):
        finite = values[np.isfinite(values)]
        if not finite.size:
            out.append(np.nan)
        else:
            out.append({"first": finite[0], "last": finite[-1], "mean": finite.mean()}[which])
    return np.asarray(out, dtype=float)


def values_table(results: StudyResults) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(shown, raw)``: per setting, each column's mean over seeds [95 % bootstrap CI]."""
    available = set(analysis.metrics(results.table))
    columns = [c for c in TABLE_COLUMNS if c[1] in available]
    shown, raw = [], []
    for setting, runs in analysis.setting_groups(results.runs, results.settings):
        ids = list(runs["run_id"])
        last = analysis.curves(results.table, "accuracy", ids).columns
        row = {"setting": analysis.setting_label(named(setting)), "seeds": seeds_text(runs)}
        row["tasks"] = fmt(last.max() + 1, "int") if len(last) else DASH
        numbers = {"setting": row["setting"], "n_seeds": len(ids)}
        for header, metric, which, unit in columns:
            values = per_run(analysis.curves(results.table, metric, ids), which)
            ci = analysis.bootstrap_mean(values, results.bootstrap, results.seed)
            interval = f" [{fmt(ci['low'], unit)}, {fmt(ci['high'], unit)}]"
            row[header] = fmt(ci["estimate"], unit) + (interval if np.isfinite(ci["low"]) else "")
            numbers.update({header: ci["estimate"], f"{header} low": ci["low"]})
            numbers[f"{header} high"] = ci["high"]
        shown.append(row)
        raw.append(numbers)
    return pd.DataFrame(shown), pd.DataFrame(raw)


# =========================================================================== figures


def _settings(results: StudyResults):
    """``(legend label, runs)`` per setting."""
    groups = analysis.setting_groups(results.runs, results.settings)
    return [(plots.group_label(named(setting)), runs) for setting, runs in groups]


#: The panels of ``<study>_curves``: per-task metrics and their titles.
CURVES = (
    ("accuracy", "online accuracy (training)"),
    ("test_accuracy", "held-out accuracy"),
    ("nc1", "NC1 (training samples)"),
    ("test_nc1", "NC1 (held-out)"),
)


def per_task_panels(
    results: StudyResults, folder: Path, name: str, panels: tuple, title: str
) -> Path | None:
    """One panel per (metric, title) of ``panels`` the runs have: the metric per task, a
    line per setting (mean ± std over seeds); NC1 panels on a log axis, with the geometric
    mean and std (:func:`~plasticollapse.report.plots.draw_band`)."""
    available = set(analysis.metrics(results.table))
    shown = [(metric, label) for metric, label in panels if metric in available]
    if not shown:
        plots.skip(name, f"no {', '.join(m for m, _ in panels)} in the runs")
        return None
    fig, axes = plots.panels(len(shown), width=4.2, height=3.4)
    for ax, (metric, label) in zip(axes, shown, strict=True):
        for legend, runs in _settings(results):
            frame = analysis.curves(results.table, metric, list(runs["run_id"]))
            plots.draw_band(ax, frame, legend, geometric=metric.endswith("nc1"))
        ax.set_xlabel("task")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
        if metric.endswith("nc1"):
            plots.log_axis(ax, "y")
    plots.legend_outside(axes[-1], plots.legend_title(results.settings))
    fig.suptitle(title, y=1.03)
    return plots.save(fig, folder, name)


def plot_curves(results: StudyResults, folder: Path, study: str) -> Path | None:
    """Online and held-out accuracy, and NC1 on training and held-out data, per task."""
    title = (
        f"{study}: accuracy and collapse per task over seeds "
        "(mean ± std; NC1: geometric mean ×/÷ geometric std)"
    )
    return per_task_panels(results, folder, f"{study}_curves", CURVES, title)


def layer_numbers(metrics: list[str]) -> list[int]:
    """The hidden layers k with an ``nc1_layer{k}`` metric, in order."""
    return sorted(int(m.group(1)) for m in map(_LAYER.match, metrics) if m)


def plot_depth(results: StudyResults, folder: Path, study: str) -> Path | None:
    """NC1 of each hidden layer's output (training: solid, held-out: dashed), at the first,
    middle and last measured task, one line per setting (means over seeds)."""
    name = f"{study}_depth"
    available = analysis.metrics(results.table)
    layers = layer_numbers(available)
    steps = analysis.curves(results.table, "nc1_layer1", list(results.runs["run_id"])).columns
    if not layers or not len(steps):
        plots.skip(name, "no per-layer collapse (nc1_layer{k}) in the runs")
        return None
    chosen = sorted({steps[0], steps[len(steps) // 2], steps[-1]})
    fig, axes = plots.panels(len(chosen), width=3.6, height=3.4)
    for ax, step in zip(axes, chosen, strict=True):
        for setting, runs in _settings(results):
            ids = list(runs["run_id"])
            line: Line2D | None = None  # the training line; the held-out one takes its colour
            for prefix, style in (("", "-"), ("test_", "--")):
                keys = [f"{prefix}nc1_layer{k}" for k in layers]
                if keys[0] not in available:
                    continue
                means = [
                    np.nanmean(analysis.at(analysis.curves(results.table, m, ids), step))
                    for m in keys
                ]
                label = setting + (" (held-out)" if prefix else "")
                color = None if line is None else line.get_color()
                (line,) = ax.plot(layers, means, style, marker="o", ms=3, label=label, color=color)
        ax.set_xticks(layers)
        ax.set_xlabel("hidden layer k")
        ax.set_title(f"after task {int(step)}", fontsize=9)
        ax.grid(alpha=0.3)
        plots.log_axis(ax, "y")
    axes[0].set_ylabel("NC1 of layer k's output")
    plots.legend_outside(axes[-1], plots.legend_title(results.settings))
    fig.suptitle(f"{study}: collapse through depth (mean over seeds; dashed: held-out)", y=1.03)
    return plots.save(fig, folder, name)


def plot_probes(results: StudyResults, folder: Path, study: str) -> Path | None:
    """The opt-in probes per task (only those the runs have)."""
    title = f"{study}: plasticity probes per task (mean ± std over seeds)"
    return per_task_panels(results, folder, f"{study}_probes", PROBES, title)


# =========================================================================== the section


def stream_report(results: StudyResults, title: str, protocol: str) -> ReportSection:
    """A stream study's section (see the module doc); ``protocol`` says what was run."""
    folder = Path(results.out)
    study = results.study
    shown_values, raw_values = values_table(results)
    values_csv = folder / "values.csv"
    raw_values.to_csv(values_csv, index=False)
    big = 10**9  # every task: a stream's correlations are over all the tasks it ran
    rows = headline_correlations(results, "nc1", "accuracy", max_tasks=big)
    if "test_nc1" in analysis.metrics(results.table):
        rows += headline_correlations(results, "test_nc1", "test_accuracy", max_tasks=big)
    for row in rows:
        row["label"] = analysis.setting_label(named(row["setting"]))
    shown_r, raw_r = correlation_tables(rows)
    correlations_csv = folder / "correlations.csv"
    raw_r.to_csv(correlations_csv, index=False)
    ranking = predictor_board(
        results.table, "accuracy", n_boot=results.bootstrap, seed=results.seed
    )
    ranking_csv = folder / "metric_ranking.csv"
    ranking.to_csv(ranking_csv, index=False)
    drawn = [
        (f"{study}: accuracy and NC1 per task, training and held-out", plot_curves),
        (f"{study}: NC1 of every hidden layer at three tasks", plot_depth),
        (f"{study}: plasticity probes per task", plot_probes),
    ]
    figures = [(caption, draw(results, folder / "figures", study)) for caption, draw in drawn]
    return ReportSection(
        title=title,
        protocol=protocol,
        tables=[
            (
                "Per setting: each run's value (task 0, last task reached, or mean over its "
                "tasks), mean over seeds [95% CI]. Accuracies are fractions; PL = online "
                "accuracy of task 0 - of the task. " + bootstrap_text(results),
                shown_values,
            ),
            (
                "Correlations across tasks between the per-task means over seeds (the "
                "paper's convention; training NC1 vs online accuracy; held-out NC1 vs held-out "
                "accuracy). No p-value: the tasks are autocorrelated. " + bootstrap_text(results),
                shown_r,
            ),
            (
                "Which recorded metric tracks online accuracy\n"
                + ranking_caption("accuracy", "paper_mean_curve_r", RANKING_SHOWN, ranking),
                ranking_view(ranking, "paper_mean_curve_r", RANKING_SHOWN, _is_nc1),
            ),
        ],
        figures=[(caption, png) for caption, png in figures if png is not None],
        files=[values_csv, correlations_csv, ranking_csv],
    )
