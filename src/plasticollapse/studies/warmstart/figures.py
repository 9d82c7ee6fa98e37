"""The warm-start study's figures (the paper's Figs. 3-6), drawn from a StudyResults.

Each function writes ``<name>.png`` and ``<name>.pdf`` and returns the PNG, or returns
None and says why when the runs lack the data (:func:`plasticollapse.report.plots.skip`).
Colours follow the schemes (settings) in one fixed order across figures; bands are mean
+- population std over seeds. :func:`draw_all` draws every figure the data allows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from plasticollapse import analysis
from plasticollapse.report import plots
from plasticollapse.report.format import percent_scale, shared_value
from plasticollapse.studies.base import StudyResults

if TYPE_CHECKING:
    from plasticollapse.studies.warmstart.windows import WindowResult

#: The NC panels: (metric candidates, the first one present wins; axis label).
NC_PANELS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("nc1",), "NC1  Tr(Σ_W Σ_B⁺)/C"),
    (("nc2_etf_error_weights", "nc2_etf_error_means"), "NC2  ETF error"),
    (("nc3_zhu", "nc3_papyan"), "NC3"),
    (("nc4_agreement", "nc4_mismatch"), "NC4"),
)
#: name suffix -> (title, lo, hi): warm-up epochs e with lo < e <= hi (None: the split).
RANGES = {
    "all": ("all warm-up epochs", -math.inf, math.inf),
    "first100": ("warm-up epochs <= {split}", -math.inf, None),
    "after100": ("warm-up epochs > {split}", None, math.inf),
}


def _groups(results: StudyResults) -> list[tuple[dict, list[str]]]:
    return [
        (setting, list(runs["run_id"]))
        for setting, runs in analysis.setting_groups(results.runs, results.settings)
    ]


def _first_metric(results: StudyResults, candidates: Sequence[str]) -> str | None:
    """The first candidate metric the runs report with at least one finite value."""
    rows = results.table[results.table["step"].notna()]
    for metric in candidates:
        if np.isfinite(rows.loc[rows["metric"] == metric, "value"].to_numpy()).any():
            return metric
    return None


def what_was_run(results: StudyResults) -> str:
    """``fashion-mnist, resnet18 (width 8), lr 0.001, batch 128, 2000 images, 1 run``: a
    title's last line."""
    runs = results.runs
    model = shared_value(runs, "model")
    if model == "resnet18":
        model += f" (width {shared_value(runs, 'width')})"
    samples = shared_value(runs, "train_samples")
    data = "all images" if samples == "0" else f"{samples} images"
    return (
        f"{shared_value(runs, 'dataset')}, {model}, lr {shared_value(runs, 'lr')}, batch "
        f"{shared_value(runs, 'batch_size')}, {data}, {len(runs)} run{'s' * (len(runs) != 1)}"
    )


#: NC1 keys drawn by :func:`plot_nc1`: (metric, line style, legend suffix).
NC1_LINES = (
    ("nc1", "-", "eval mode"),
    ("nc1_bn_batch", "--", "batch statistics"),
)


def plot_nc1(results: StudyResults, folder: Path) -> Path | None:
    """NC1 on the warm-up set per checkpoint, per scheme (log scale): in eval mode (solid)
    and, for BatchNorm networks, with batch statistics (dashed, same colour)."""
    name = "warmstart_nc1"
    available = analysis.metrics(results.table)
    if "nc1" not in available:
        plots.skip(name, "no runs with nc1")
        return None
    lines = [line for line in NC1_LINES if line[0] in available]
    fig, (ax,) = plots.panels(1, width=6.0)
    for setting, ids in _groups(results):
        color = None
        for metric, style, suffix in lines:
            frame = analysis.curves(results.table, metric, ids)
            if not np.isfinite(frame.to_numpy()).any():
                continue
            label = plots.group_label(setting) + (f", {suffix}" if len(lines) > 1 else "")
            drawn = plots.draw_band(ax, frame, label, color=color, geometric=True)
            drawn.set_linestyle(style)
            color = drawn.get_color()
    plots.log_axis(ax, "y")
    ax.set_xlabel("warm-up epoch")
    ax.set_ylabel("NC1 (warm-up set, exact convention)")
    headline = "Warm start: NC1 per checkpoint (geometric mean ×/÷ geometric std over seeds)"
    plots.set_title(ax, headline, what_was_run(results))
    plots.legend_outside(ax, plots.legend_title(results.settings))
    ax.grid(alpha=0.3, which="both")
    return plots.save(fig, folder, name)


def plot_nc_vs_acc(
    results: StudyResults,
    folder: Path,
    which: str = "all",
    split: float = 100,
    y: str = "full_test_acc",
) -> Path | None:
    """The paper's Figs. 5-6: NC1..NC4 against full-data test accuracy across checkpoints.

    One panel per NC metric; one colour per scheme/setting; each point is one checkpoint's
    mean over seeds. ``which``: "all", "first100" (epoch <= split), "after100" (> split).
    """
    name = f"warmstart_nc_vs_acc_{which}"
    if y not in analysis.metrics(results.table):
        plots.skip(name, f"no runs with {y}")
        return None
    title, lo, hi = RANGES[which]
    title = title.format(split=f"{split:g}")
    lo, hi = (split if lo is None else lo), (split if hi is None else hi)
    shown = [(m, label) for cands, label in NC_PANELS if (m := _first_metric(results, cands))]
    if not shown:
        plots.skip(name, "no NC metrics in the runs")
        return None
    fig, axes = plots.panels(len(shown), width=4.0, height=3.6)
    drew = False
    for ax, (metric, label) in zip(axes, shown, strict=True):
        for setting, ids in _groups(results):
            cx, cy = analysis.paired_curves(results.table, metric, y, ids)
            cx, cy = analysis.between(cx, lo, hi), analysis.between(cy, lo, hi)
            if cx.shape[1]:
                scale = percent_scale(cy.to_numpy())
                group = plots.group_label(setting)
                plots.scatter_means(ax, cx, cy, group, scale, definition="mean_of_runs")
                drew = True
        ax.set_xlabel(f"{label}  [{metric}]", fontsize=8)
        if ax is axes[0]:  # one shared meaning; labelling every panel crowds them
            ax.set_ylabel("full-data test accuracy (%)")
        if metric == "nc1":
            plots.log_axis(ax, "x")  # NC1 spans 15 -> 0.4 over the paper's warm-up
        ax.grid(alpha=0.3)
        plots.legend_below(ax, plots.legend_title(results.settings), fontsize=6)
    if not drew:
        plots.plt.close(fig)
        plots.skip(name, f"no checkpoints in {title}")
        return None
    headline = (
        f"Warm start: NC metrics vs full-data test accuracy, {title}; points: per-checkpoint "
        "means over seeds, r: mean per-seed r"
    )
    plots.set_title(fig, headline, what_was_run(results))
    return plots.save(fig, folder, name)


def plot_sliding_window(
    windows: Sequence[WindowResult],
    folder: Path,
    window: float,
    settings: Sequence[str],
    x: str = "nc1",
    subtitle: str = "",
) -> Path | None:
    """The paper's Fig. 3: sliding-window r(``x``, full-data test acc) vs the window's last
    epoch, per scheme (mean ± std over seeds)."""
    name = "warmstart_sliding_window"
    windows = [w for w in windows if np.isfinite(w.r).any()]
    if not windows:
        plots.skip(name, "no window with enough checkpoints")
        return None
    fig, (ax,) = plots.panels(1, width=6.0)
    single = all(np.isfinite(w.r).any(axis=0).sum() == 1 for w in windows)
    for i, w in enumerate(windows):
        ok = np.isfinite(w.r).any(axis=0)
        mean = np.array([analysis.nanmean(col) for col in w.r.T])
        std = np.array([np.nanstd(col) if np.isfinite(col).any() else np.nan for col in w.r.T])
        label = f"{plots.group_label(w.setting)} (n={len(w.run_ids)})"
        if single:  # one window per scheme: error bars side by side, not one vertical line
            shifted = w.ends[ok] + 0.5 * (i - (len(windows) - 1) / 2)  # half an epoch apart
            ax.errorbar(shifted, mean[ok], std[ok], fmt="o", ms=4, capsize=4, label=label)
            continue
        marker = "o" if ok.sum() <= plots.MARKERS_UP_TO else None
        (line,) = ax.plot(w.ends[ok], mean[ok], marker=marker, ms=3, label=label)
        ax.fill_between(
            w.ends[ok], (mean - std)[ok], (mean + std)[ok], color=line.get_color(), alpha=0.2
        )
    if single:
        ends = sorted({float(w.ends[np.isfinite(w.r).any(axis=0)][0]) for w in windows})
        half = 0.25 * len(windows) + 0.5
        ax.set_xlim(ends[0] - half, ends[-1] + half)
        ax.set_xticks(ends)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("last warm-up epoch of the window")
    ax.set_ylabel(f"Pearson r ({x}, full-data test acc)")
    headline = f"Warm start: sliding window of {window:g} epochs, per-seed r (mean ± std, seeds)"
    plots.set_title(ax, headline, subtitle)
    plots.legend_outside(ax, plots.legend_title(settings))
    ax.grid(alpha=0.3)
    return plots.save(fig, folder, name)


def plot_accuracy(results: StudyResults, folder: Path) -> Path | None:
    """The paper's Fig. 4: warm-up and full-data test accuracy per scheme vs epoch.

    The fresh-initialisation baseline (summary ``fresh_full_test_acc``, mean over runs) is
    a dashed line in the scheme's colour when the runs report it.
    """
    name = "warmstart_accuracy"
    available = analysis.metrics(results.table)
    shown = [
        (m, t)
        for m, t in (
            ("warmup_test_acc", "warm-up test accuracy (%)"),
            ("full_test_acc", "full-data test accuracy (%)"),
        )
        if m in available
    ]
    if not shown:
        plots.skip(name, "no accuracy metrics")
        return None
    groups = _groups(results)
    per_group = [
        analysis.summary_values(results.summaries, "fresh_full_test_acc", ids) for _, ids in groups
    ]
    fresh = np.array([analysis.nanmean(f) for f in per_group])
    # The fresh probe does not depend on the scheme: one line when all schemes agree.
    one_fresh = np.isfinite(fresh).all() and np.allclose(fresh, fresh[0])
    fig, axes = plots.panels(len(shown), width=5.2)
    for ax, (metric, ylabel) in zip(axes, shown, strict=True):
        for (setting, ids), fresh_acc in zip(groups, fresh, strict=True):
            frame = analysis.curves(results.table, metric, ids)
            scale = percent_scale(frame.to_numpy())
            line = plots.draw_band(ax, frame, plots.group_label(setting), scale=scale)
            if metric == "full_test_acc" and math.isfinite(fresh_acc) and not one_fresh:
                ax.axhline(
                    fresh_acc * scale,
                    ls="--",
                    lw=1,
                    color=line.get_color(),
                    label=f"fresh init ({plots.group_label(setting)})",
                )
        if metric == "full_test_acc" and one_fresh:
            ax.axhline(fresh[0] * scale, ls="--", lw=1, color="k", label="fresh init (all)")
        ax.set_xlabel("warm-up epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    plots.legend_outside(axes[-1], plots.legend_title(results.settings))
    headline = "Warm start: accuracy per scheme (mean ± std over seeds)"
    plots.set_title(fig, headline, what_was_run(results))
    return plots.save(fig, folder, name)


def draw_all(
    results: StudyResults,
    folder: Path,
    windows: Sequence[WindowResult],
    window: float = 100,
    split: float = 100,
    x: str = "nc1",
) -> list[tuple[str, Path]]:
    """Every figure the data allows, as (caption, PNG) pairs (PDFs lie beside them)."""

    def ranged(which: str) -> str:
        title = RANGES[which][0].format(split=f"{split:g}")
        return f"Warm start: NC1-NC4 vs full-data test acc, {title} (paper Figs. 5-6)"

    made = [
        ("Warm start: NC1 on the warm-up set per checkpoint", plot_nc1(results, folder)),
        *((ranged(w), plot_nc_vs_acc(results, folder, w, split)) for w in RANGES),
        (
            f"Warm start: sliding-window r({x}, full-data acc) (paper Fig. 3)",
            plot_sliding_window(
                windows, folder, window, results.settings, x, what_was_run(results)
            ),
        ),
        (
            "Warm start: warm-up and full-data test accuracy per scheme (paper Fig. 4)",
            plot_accuracy(results, folder),
        ),
    ]
    return [(caption, png) for caption, png in made if png is not None]
