"""Figure helpers every study's report uses (matplotlib, Agg), and the ``plot`` command.

A study's figure function draws with these helpers and :func:`save` s the figure as
``<name>.png`` and ``<name>.pdf``; when the runs lack the data it needs it returns
:func:`skip` (None, and says why on stdout), so a figure never crashes a report.

* :func:`draw_band`: mean line and mean +- population std (ddof 0) band over runs, as in
  the paper; markers when there are few steps, so that one or two points still show;
* :func:`scatter_means`: per-step means of two metrics against each other, with Pearson r
  named by how it was computed;
* :func:`legend_outside` / :func:`legend_below`: legends beside or under the axes, never
  over the data; :func:`log_axis`: a log axis with plain tick labels (0.5, 1, 10).

:func:`main_plot` draws one quick figure of any metric against the step or another metric
for any registered study.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed (clusters, CI, ssh)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator  # noqa: E402

from plasticollapse import analysis  # noqa: E402
from plasticollapse.report.format import DASH  # noqa: E402

DPI = 120
#: Up to this many steps a curve gets markers (a single checkpoint must still show).
MARKERS_UP_TO = 30


def skip(name: str, why: str) -> None:
    """Say why figure ``name`` is not drawn (the figure function then returns None)."""
    print(f"  skipped figure {name}: {why}")


def save(fig: plt.Figure, folder: Path, name: str) -> Path:
    """Write ``name``.png and ``name``.pdf into ``folder``; close the figure; return the PNG."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{name}.png"
    fig.savefig(png, dpi=DPI, bbox_inches="tight")
    fig.savefig(folder / f"{name}.pdf", bbox_inches="tight")
    plt.close(fig)
    return png


def fmt_r(r: float | None) -> str:
    return DASH if r is None or not math.isfinite(r) else f"{r:+.2f}"


def group_label(setting: Mapping[str, Any]) -> str:
    """A legend entry: the value alone for one setting key (the key is the legend's title)."""
    if len(setting) == 1:
        return str(next(iter(setting.values())))
    return analysis.setting_label(setting)


def legend_title(settings: Sequence[str]) -> str | None:
    return settings[0] if len(settings) == 1 else None


def draw_band(
    ax: plt.Axes,
    frame: pd.DataFrame,
    label: str,
    color: Any = None,
    scale: float = 1.0,
    geometric: bool = False,
) -> Any:
    """Mean line and a mean +- std band over the runs (rows) of ``frame``, times ``scale``;
    steps no run reached are skipped. Returns the line (for its colour).

    ``geometric`` (for a log axis and positive values): the geometric mean exp(mean log x)
    and the band exp(mean log x +- std log x), i.e. times/divided by the geometric std. A
    metric that spans decades across seeds (NC1 where Sigma_B is ill-conditioned) then
    keeps a band on the axis; an arithmetic mean - std would go below zero."""
    values = frame * scale
    if geometric:
        positive = values.where(values > 0)
        steps, mean, std = analysis.band(np.log(positive))
        low, high, mean = np.exp(mean - std), np.exp(mean + std), np.exp(mean)
    else:
        steps, mean, std = analysis.band(values)
        low, high = mean - std, mean + std
    ok = np.isfinite(mean)
    marker = "o" if ok.sum() <= MARKERS_UP_TO else None
    (line,) = ax.plot(
        steps[ok],
        mean[ok],
        label=f"{label} (n={len(frame)})",
        color=color,
        lw=1.4,
        marker=marker,
        ms=3,
    )
    ax.fill_between(steps[ok], low[ok], high[ok], color=line.get_color(), alpha=0.2)
    return line


#: How a legend names each r definition (:data:`plasticollapse.analysis.ranking.DEFINITIONS`).
R_LABELS = {"mean_curve": "r of means", "mean_of_runs": "mean seed r"}


def scatter_means(
    ax: plt.Axes,
    cx: pd.DataFrame,
    cy: pd.DataFrame,
    label: str,
    y_scale: float = 1.0,
    definition: str = "mean_curve",
) -> float:
    """Per-step means over runs of y against x, one point per step; returns Pearson r by
    ``definition`` and names it in the legend: ``"mean_curve"``, r of these points (the
    Permuted headline); ``"mean_of_runs"``, the mean of each run's own r (the warm-start
    tables), so a figure shows the same number as the table beside it."""
    mx, my = cx.mean(axis=0).to_numpy(), cy.mean(axis=0).to_numpy() * y_scale
    statistic = analysis.ranking.DEFINITIONS[definition]
    r = statistic(cx.to_numpy(), cy.to_numpy(), "pearson")
    ax.scatter(mx, my, s=12, alpha=0.75, label=f"{label}: {R_LABELS[definition]} {fmt_r(r)}")
    return r


def log_axis(ax: plt.Axes, which: str = "y") -> None:
    """Log scale with plain tick labels (0.5, 1, 10), labelled even within one decade.

    Call it after drawing: NC metrics are positive and span decades over a training run
    (an ill-conditioned between-class covariance spikes them), but a short run may stay
    within one decade, where labels on powers of ten alone would leave the axis bare. So
    minor ticks are labelled too: all of them within one decade, 2 and 5 within two.
    """
    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    lo, hi = ax.get_ylim() if which == "y" else ax.get_xlim()
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else math.inf
    labelled = (2, 3, 4, 5, 6, 7, 8, 9) if decades < 1 else (2, 5) if decades < 2 else ()

    def minor(v: float, _: int) -> str:
        mantissa = round(v / 10 ** math.floor(math.log10(v))) if v > 0 else 0
        return f"{v:g}" if mantissa in labelled else ""

    axis.set_major_locator(LogLocator(base=10))
    axis.set_minor_locator(LogLocator(base=10, subs=(2, 3, 4, 5, 6, 7, 8, 9)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(minor))
    axis.set_tick_params(which="both", labelsize=8)


def set_title(target: plt.Axes | plt.Figure, headline: str, run: str = "", size: int = 9) -> None:
    """A title: the headline and, on a second line, what was run; on an Axes its title, on
    a Figure its suptitle."""
    text = headline + (f"\n{run}" if run else "")
    if isinstance(target, plt.Figure):
        target.suptitle(text, fontsize=size)
    else:
        target.set_title(text, fontsize=size)


def legend_outside(ax: plt.Axes, title: str | None = None, fontsize: int = 7) -> None:
    """A legend to the right of the axes (saved figures grow to hold it)."""
    if ax.get_legend_handles_labels()[0]:  # an empty legend warns and says nothing
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            fontsize=fontsize,
            title=title,
            title_fontsize=fontsize,
            frameon=False,
        )


#: The average width of a legend character, in units of its font size (DejaVu Sans, the
#: default font, runs about 0.55 em per character over mixed text; a margin on top).
CHAR_WIDTH_EM = 0.6


def legend_below(ax: plt.Axes, title: str | None = None, fontsize: int = 7) -> None:
    """A legend under the axes' x label, for panels side by side: its entries wrapped to
    the panel's width, so that it never reaches under the next panel's legend (long
    setting labels did: ``first_task_epochs=1, remedies=shrink_perturb,redo, tasks=4``)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(
            handles,
            [wrap_to_axes(ax, label, fontsize) for label in labels],
            loc="upper center",
            bbox_to_anchor=(0.5, -0.2),
            fontsize=fontsize,
            title=title,
            title_fontsize=fontsize,
            frameon=False,
        )


def wrap_to_axes(ax: plt.Axes, text: str, fontsize: float) -> str:
    """``text`` in lines that fit the axes' width at ``fontsize`` (points), less room for
    the legend's marker: width_pt / (fontsize * CHAR_WIDTH_EM) characters per line. Lines
    break only after a label's ", " and ": ", so that a setting (``remedies=cbp``) or a
    statistic (``r of means -0.96``) is never cut; a part longer than a line stays whole."""
    figure = ax.get_figure(root=True)
    if figure is None:  # axes not on a figure: no width to fit
        return text
    width_pt = ax.get_position().width * figure.get_figwidth() * 72
    per_line = max(12, int((width_pt - 3 * fontsize) / (fontsize * CHAR_WIDTH_EM)))
    lines = [""]
    for part in re.split(r"(?<=, )|(?<=: )", text):
        if lines[-1] and len(lines[-1]) + len(part.rstrip()) > per_line:
            lines.append("")
        lines[-1] += part
    return "\n".join(line.rstrip() for line in lines)


def panels(n: int, width: float = 5.0, height: float = 3.8) -> tuple[plt.Figure, list[plt.Axes]]:
    """A figure of ``n`` panels side by side."""
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


# =========================================================================== plasticollapse plot


def main_plot(
    run_dirs: Sequence[str | Path],
    metric: str,
    x: str = "step",
    out: Path | None = None,
    experiment: str | None = None,
    group_by: list[str] | None = None,
) -> Path:
    """One quick figure of ``metric`` from the runs under ``run_dirs``; returns its path.

    Options (mirror them as ``plot`` flags):

    * ``run_dirs``: run folders or folders containing them (searched recursively).
    * ``metric``: the y-axis metric, any per-step key of metrics.jsonl.
    * ``x``: ``"step"`` (the study's step: task, warm-up epoch) draws mean +- std over seeds
      per group; any other metric name draws per-step means (y vs x) per group, with
      Pearson r in the legend.
    * ``out``: the file to write; its suffix (``.png``, ``.pdf``, ``.svg``) picks the
      format (otherwise ``.png`` is added). Default ``<study>_<metric>_vs_<x>.png`` here.
    * ``experiment``: the study; needed only when runs of several studies report ``metric``.
    * ``group_by``: setting keys or config fields that make separate lines (default: the
      study's setting columns; an empty list pools all runs into one line).

    Raises ValueError when no run reports ``metric`` (or ``x``).
    """
    results = analysis.load(run_dirs)
    if not len(results.runs):
        raise ValueError(f"no run folders (config.json + metrics.jsonl) under {list(run_dirs)}")
    by_study = {e: results.study(e) for e in results.experiments()}
    with_metric = [e for e, (t, _) in by_study.items() if metric in analysis.metrics(t)]
    if experiment is None:
        if not with_metric:
            known = ", ".join(analysis.metrics(results.table))
            raise ValueError(f"no run reports {metric!r}; metrics: {known}")
        if len(with_metric) > 1:
            raise ValueError(f"runs of {with_metric} report {metric!r}: pass experiment=...")
        experiment = with_metric[0]
    elif experiment not in with_metric:
        table = by_study.get(experiment, (results.table.iloc[:0],))[0]
        raise ValueError(
            f"no {experiment} run reports {metric!r}; its metrics: "
            f"{', '.join(analysis.metrics(table)) or '(no runs)'}"
        )
    table, runs = by_study[experiment]
    if x != "step" and x not in analysis.metrics(table):
        raise ValueError(f"no {experiment} run reports {x!r} (x axis)")
    keys = results.settings[experiment] if group_by is None else list(group_by)
    known_keys = set(runs.columns) | {k for c in runs["config"] for k in c}
    for k in keys:
        if k not in known_keys:
            raise ValueError(f"unknown setting key {k!r} for group_by")
    for k in keys:  # a config field that is not a setting column: group by its value
        if k not in runs.columns:
            runs[k] = [analysis.normalise_setting(c.get(k)) for c in runs["config"]]

    fig, ax = plt.subplots(figsize=(6, 4))
    for setting, group in analysis.setting_groups(runs, keys):
        ids = list(group["run_id"])
        if x == "step":
            draw_band(ax, analysis.curves(table, metric, ids), group_label(setting))
        else:
            scatter_means(ax, *analysis.paired_curves(table, x, metric, ids), group_label(setting))
    ax.set_xlabel((results.step_keys.get(experiment) or "step") if x == "step" else x)
    ax.set_ylabel(metric)
    ax.set_title(f"{experiment}: {metric}" + ("" if x == "step" else f" vs {x}"))
    legend_outside(ax, legend_title(keys))
    ax.grid(alpha=0.3)
    out = Path(out) if out is not None else Path(f"{experiment}_{metric}_vs_{x}.png")
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        out = out.with_name(out.name + ".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return out
