"""The paper's figures from a :class:`~plasticollapse.analysis.Table` (matplotlib, Agg).

Every ``plot_*`` function writes ``<name>.png`` and ``<name>.pdf`` into a folder and returns
the PNG path, or returns ``None`` and says why on stdout when the runs lack the data it
needs (a figure never crashes a report). :func:`paper_figures` draws them all;
:func:`main_plot` draws one quick figure of any metric for the ``plot`` command.

Bands are mean +- population std (ddof = 0) over seeds at each step, as in the paper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed (clusters, CI, ssh)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from plasticollapse import analysis  # noqa: E402
from plasticollapse.analysis import Curves, Table, setting_label  # noqa: E402

#: The warm-start NC panels: (metric candidates, first one present wins; axis label).
NC_PANELS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("nc1",), "NC1  Tr(Σ_W Σ_B⁺)/C"),
    (("nc2_etf_error_weights", "nc2_etf_error_means"), "NC2  ETF error"),
    (("nc3_zhu", "nc3_papyan"), "NC3"),
    (("nc4_agreement", "nc4_mismatch"), "NC4"),
)
DPI = 120


def _skip(name: str, why: str) -> None:
    print(f"  skipped figure {name}: {why}")


def save(fig: plt.Figure, folder: Path, name: str) -> Path:
    """Write ``name``.png and ``name``.pdf into ``folder``; close the figure; return the PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{name}.png"
    fig.savefig(png, dpi=DPI, bbox_inches="tight")
    fig.savefig(folder / f"{name}.pdf", bbox_inches="tight")
    plt.close(fig)
    return png


def band(ax: plt.Axes, curves: Curves, label: str, color: Any = None, x: np.ndarray | None = None):
    """Mean line and a mean +- std band over runs, skipping steps no run reached."""
    mean, std = curves.mean(), curves.std()
    xs = curves.steps if x is None else x
    ok = np.isfinite(mean)
    (line,) = ax.plot(xs[ok], mean[ok], label=f"{label} (n={curves.n_runs})", color=color, lw=1.4)
    ax.fill_between(xs[ok], (mean - std)[ok], (mean + std)[ok], color=line.get_color(), alpha=0.2)
    return line


def _log_axis(axis: Any, set_scale: Any) -> None:
    """Log scale with plain tick labels (``0.5``, ``1``, ``10``): mathtext ones are slow."""
    set_scale("log")
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _legend(ax: plt.Axes, fontsize: int) -> None:
    """A legend only when something is labelled (an empty one warns and says nothing)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=fontsize)


def _first_metric(table: Table, experiment: str, candidates: Sequence[str]) -> str | None:
    present = set(table.metrics(experiment))
    for m in candidates:
        if m in present and np.isfinite(table.curves(m, experiment).values).any():
            return m
    return None


def _has(table: Table, experiment: str, *metrics: str) -> bool:
    return experiment in table.experiments() and all(
        m in table.metrics(experiment) for m in metrics
    )


def _fmt_r(r: float) -> str:
    return "—" if r is None or not math.isfinite(r) else f"{r:+.2f}"


def _percent_scale(values: np.ndarray) -> float:
    """100 when accuracies are fractions (max <= 1.5), else 1: axes always read in percent."""
    finite = values[np.isfinite(values)]
    return 100.0 if finite.size == 0 or finite.max() <= 1.5 else 1.0


# =========================================================================== permuted


def plot_permuted_nc1_pl(table: Table, folder: Path, max_tasks: int | None = None) -> Path | None:
    """Figure 2: NC1 and plasticity loss per task, one line (mean +- std) per setting."""
    name = "permuted_nc1_pl"
    if not _has(table, "permuted", "nc1"):
        return _skip(name, "no permuted runs with nc1")
    panels = [("nc1", "NC1")] + (
        [("pl", "plasticity loss  acc(0) - acc(i)")] if "pl" in table.metrics("permuted") else []
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (metric, ylabel) in zip(axes[0], panels, strict=True):
        for setting in table.settings("permuted"):
            c = table.curves(metric, "permuted", setting)
            if max_tasks is not None:
                c = c.between(-math.inf, max_tasks - 1)
            band(ax, c, setting_label(setting))
        ax.set_xlabel("task")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    # NC1 is positive and spans decades (an ill-conditioned Sigma_B spikes it): log scale.
    axes[0][0].set_yscale("log")
    _legend(axes[0][0], 7)
    fig.suptitle("Permuted: collapse and plasticity loss per task (mean ± std over seeds)")
    return save(fig, folder, name)


def plot_permuted_nc1_vs_accuracy(
    table: Table, folder: Path, max_tasks: int = 140, x: str = "nc1", y: str = "accuracy"
) -> Path | None:
    """NC1 against online accuracy: per-task means over seeds, one colour per setting."""
    name = "permuted_nc1_vs_accuracy"
    if not _has(table, "permuted", x, y):
        return _skip(name, f"no permuted runs with {x} and {y}")
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for setting in table.settings("permuted"):
        cx, cy = table.paired_curves(x, y, "permuted", setting)
        cx, cy = cx.between(-math.inf, max_tasks - 1), cy.between(-math.inf, max_tasks - 1)
        mx, my = cx.mean(), cy.mean()
        r = analysis.correlate(mx, my)["pearson_r"]
        label = f"{setting_label(setting)}: r = {_fmt_r(r)}"
        ax.scatter(mx, my, s=10, alpha=0.7, label=label)
    ax.set_xlabel(f"mean {x} per task")
    ax.set_ylabel(f"mean {y} per task")
    ax.set_title(f"Permuted: {x} vs {y}, first {max_tasks} tasks")
    _legend(ax, 7)
    ax.grid(alpha=0.3)
    return save(fig, folder, name)


# =========================================================================== warm start

RANGES = {
    "all": ("all warm-up epochs", -math.inf, math.inf),
    "first100": ("warm-up epochs <= {split}", -math.inf, None),
    "after100": ("warm-up epochs > {split}", None, math.inf),
}


def plot_warmstart_nc_vs_acc(
    table: Table, folder: Path, which: str = "all", split: float = 100, y: str = "full_test_acc"
) -> Path | None:
    """Figures 5-6: NC1..NC4 against full-data test accuracy across warm-up checkpoints.

    One panel per NC metric; one colour per scheme/setting; each point is one checkpoint's
    mean over seeds. ``which``: "all", "first100" (epoch <= split), "after100" (> split).
    """
    name = f"warmstart_nc_vs_acc_{which}"
    if not _has(table, "warmstart", y):
        return _skip(name, f"no warm-start runs with {y}")
    title, lo, hi = RANGES[which]
    lo = split if lo is None else lo
    hi = split if hi is None else hi
    panels = [
        (m, label) for cands, label in NC_PANELS if (m := _first_metric(table, "warmstart", cands))
    ]
    if not panels:
        return _skip(name, "no NC metrics in the warm-start runs")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.6), squeeze=False)
    drew = False
    for ax, (metric, label) in zip(axes[0], panels, strict=True):
        for setting in table.settings("warmstart"):
            cx, cy = table.paired_curves(metric, y, "warmstart", setting)
            cx, cy = cx.between(lo, hi), cy.between(lo, hi)
            if cx.steps.size == 0:
                continue
            mx, my = cx.mean(), cy.mean() * _percent_scale(cy.values)
            r = analysis.correlate(mx, my)["pearson_r"]
            ax.scatter(mx, my, s=12, alpha=0.75, label=f"{setting_label(setting)} r={_fmt_r(r)}")
            drew = True
        ax.set_xlabel(f"{label}  [{metric}]", fontsize=8)
        if ax is axes[0][0]:  # one shared meaning; labelling every panel overlaps them
            ax.set_ylabel("full-data test accuracy (%)")
        if metric == "nc1":
            _log_axis(ax.xaxis, ax.set_xscale)  # NC1 spans 15 -> 0.4 over warm-up
        ax.grid(alpha=0.3)
        _legend(ax, 6)
    if not drew:
        plt.close(fig)
        return _skip(name, f"no checkpoints in {title.format(split=f'{split:g}')}")
    fig.suptitle(
        f"Warm start: NC metrics vs full-data test accuracy, {title.format(split=f'{split:g}')}"
    )
    return save(fig, folder, name)


def plot_warmstart_sliding_window(
    windows: Sequence[analysis.WindowResult], folder: Path, window: float
) -> Path | None:
    """Figure 3: sliding-window r(NC1, full-data test acc) vs window's last epoch, per scheme."""
    name = "warmstart_sliding_window"
    windows = [w for w in windows if np.isfinite(w.r).any()]
    if not windows:
        return _skip(name, "no warm-start window with enough checkpoints")
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for w in windows:
        mean, std = w.mean(), w.std()
        ok = np.isfinite(mean)
        (line,) = ax.plot(w.ends[ok], mean[ok], label=f"{w.label} (n={len(w.run_ids)})")
        ax.fill_between(
            w.ends[ok], (mean - std)[ok], (mean + std)[ok], color=line.get_color(), alpha=0.2
        )
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("last warm-up epoch of the window")
    ax.set_ylabel("Pearson r (NC1, full-data test acc)")
    ax.set_title(f"Sliding window of {window:g} epochs (mean ± std over seeds)")
    _legend(ax, 7)
    ax.grid(alpha=0.3)
    return save(fig, folder, name)


def plot_warmstart_accuracy(table: Table, folder: Path) -> Path | None:
    """Figure 4: warm-up test accuracy and full-data test accuracy per scheme vs epoch.

    The fresh-initialisation baseline (summary ``fresh_full_test_acc``, mean over runs) is
    a dashed horizontal line in the scheme's colour when the runs report it.
    """
    name = "warmstart_accuracy"
    panels = [
        (m, t)
        for m, t in (
            ("warmup_test_acc", "warm-up test accuracy (%)"),
            ("full_test_acc", "full-data test accuracy (%)"),
        )
        if _has(table, "warmstart", m)
    ]
    if not panels:
        return _skip(name, "no warm-start accuracy metrics")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (metric, ylabel) in zip(axes[0], panels, strict=True):
        for setting in table.settings("warmstart"):
            c = table.curves(metric, "warmstart", setting)
            scale = _percent_scale(c.values)
            c = Curves(c.metric, c.steps, c.values * scale, c.run_ids, c.seeds)
            line = band(ax, c, setting_label(setting))
            if metric == "full_test_acc":
                fresh = table.summary_values("fresh_full_test_acc", "warmstart", setting)
                vals = np.array([v for v in fresh.values() if math.isfinite(v)])
                if vals.size:
                    ax.axhline(
                        vals.mean() * scale,
                        ls="--",
                        lw=1,
                        color=line.get_color(),
                        label=f"fresh init ({setting_label(setting)})",
                    )
        ax.set_xlabel("warm-up epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        _legend(ax, 6)
    fig.suptitle("Warm start: accuracy per scheme (mean ± std over seeds)")
    return save(fig, folder, name)


def plot_warmstart_nc1(table: Table, folder: Path) -> Path | None:
    """NC1 on the warm-up set per checkpoint, per scheme (log scale)."""
    name = "warmstart_nc1"
    if not _has(table, "warmstart", "nc1"):
        return _skip(name, "no warm-start runs with nc1")
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for setting in table.settings("warmstart"):
        band(ax, table.curves("nc1", "warmstart", setting), setting_label(setting))
    _log_axis(ax.yaxis, ax.set_yscale)
    ax.set_xlabel("warm-up epoch")
    ax.set_ylabel("NC1 (warm-up set)")
    ax.set_title("Warm start: NC1 per checkpoint (mean ± std over seeds)")
    _legend(ax, 7)
    ax.grid(alpha=0.3, which="both")
    return save(fig, folder, name)


# =========================================================================== all / one


def paper_figures(
    table: Table,
    folder: Path,
    windows: Sequence[analysis.WindowResult] | None = None,
    window: float = 100,
    stride: float = 5,
    max_tasks: int = 140,
    split: float = 100,
) -> list[Path]:
    """Every figure the data allows; returns the PNG paths written (PDFs lie beside them)."""
    if windows is None:
        windows = analysis.sliding_window_correlations(table, window=window, stride=stride)
    made = [
        plot_permuted_nc1_pl(table, folder),
        plot_permuted_nc1_vs_accuracy(table, folder, max_tasks=max_tasks),
        plot_warmstart_nc1(table, folder),
        *(plot_warmstart_nc_vs_acc(table, folder, w, split) for w in RANGES),
        plot_warmstart_sliding_window(windows, folder, window),
        plot_warmstart_accuracy(table, folder),
    ]
    return [p for p in made if p is not None]


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
    * ``metric``: the y-axis metric, any per-step key of metrics.jsonl (default ``nc1``).
    * ``x``: ``"step"`` (task / warm-up epoch) draws mean +- std over seeds per group;
      any other metric name draws a scatter of per-step means (y vs x) per group, with
      Pearson r in the legend.
    * ``out``: the file to write; its suffix (``.png`` / ``.pdf``) picks the format
      (no suffix: ``.png``). Default ``<experiment>_<metric>_vs_<x>.png`` in the current
      folder.
    * ``experiment``: ``permuted`` or ``warmstart``; needed only when the runs hold both and
      both report ``metric``.
    * ``group_by``: setting keys that make separate lines (default: all the experiment's
      setting keys; an empty list pools all runs into one line).

    Raises ValueError when no run reports ``metric`` (or ``x``).
    """
    table = analysis.load_runs(run_dirs)
    if len(table) == 0:
        raise ValueError(f"no run folders (config.json + metrics.jsonl) under {list(run_dirs)}")
    with_metric = [e for e in table.experiments() if metric in table.metrics(e)]
    if experiment is None:
        if not with_metric:
            raise ValueError(f"no run reports {metric!r}; metrics: {', '.join(table.metrics())}")
        if len(with_metric) > 1:
            raise ValueError(f"runs of {with_metric} report {metric!r}: pass experiment=...")
        experiment = with_metric[0]
    elif experiment not in with_metric:
        raise ValueError(
            f"no {experiment} run reports {metric!r}; its metrics: "
            f"{', '.join(table.metrics(experiment)) or '(no runs)'}"
        )
    if x != "step" and x not in table.metrics(experiment):
        raise ValueError(f"no {experiment} run reports {x!r} (x axis)")
    keys = table.setting_keys[experiment] if group_by is None else list(group_by)
    for k in keys:
        if k not in {k2 for i in table.runs.values() for k2 in i.config}:
            raise ValueError(f"unknown setting key {k!r} for group_by")

    fig, ax = plt.subplots(figsize=(6, 4))
    for group in _groups(table, experiment, keys):
        label = setting_label(group)
        if x == "step":
            band(ax, table.curves(metric, experiment, group), label)
        else:
            cx, cy = table.paired_curves(x, metric, experiment, group)
            r = analysis.correlate(cx.mean(), cy.mean())["pearson_r"]
            ax.scatter(cx.mean(), cy.mean(), s=12, alpha=0.75, label=f"{label}: r={_fmt_r(r)}")
    ax.set_xlabel(
        {"permuted": "task", "warmstart": "warm-up epoch"}.get(experiment, "step")
        if x == "step"
        else x
    )
    ax.set_ylabel(metric)
    ax.set_title(f"{experiment}: {metric}" + ("" if x == "step" else f" vs {x}"))
    _legend(ax, 7)
    ax.grid(alpha=0.3)
    out = Path(out) if out is not None else Path(f"{experiment}_{metric}_vs_{x}.png")
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        out = out.with_name(out.name + ".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return out


def _groups(table: Table, experiment: str, keys: Sequence[str]) -> list[dict[str, Any]]:
    """Distinct values of ``keys`` among the experiment's runs (settings or raw config)."""
    seen: dict[str, dict[str, Any]] = {}
    for rid in table.run_ids(experiment):
        info = table.runs[rid]
        group = {
            k: info.settings.get(k, analysis.normalise_setting(info.config.get(k))) for k in keys
        }
        seen.setdefault(repr(group), group)
    return sorted(seen.values(), key=analysis.setting_sort_key)
