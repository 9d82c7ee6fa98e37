"""Forest plots of the predictor leaderboard (:mod:`.leaderboard`): one figure per study,
group and outcome; one panel per statistic; metrics down the y axis in the order of the
first panel's rank; each estimate a dot with its interval as a horizontal bar, and a
vertical line at 0. An estimate whose interval is missing (one seed) is a hollow dot.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

#: The panels, and how each reads in a panel title.
PANELS = {
    "detrended_r_diff": "r of first differences\n(within runs)",
    "detrended_r_trend": "r of residuals from trend\n(within runs)",
    "lead_lag": "lead-lag: metric change\nprecedes outcome change",
    "across_runs_partial_r": "across runs: early metric vs\nlate outcome | settings",
    "across_runs_r": "across runs: early metric vs\nlate outcome",
    "paper_mean_curve_r": "paper: r of per-step means\n(levels, no detrending)",
}
#: At most this many panels: the across-run raw r is shown only without a partial r.
MAX_PANELS = 5


def panels_of(part: pd.DataFrame) -> list[str]:
    """The statistics of ``part`` worth a panel (some finite estimate), in :data:`PANELS`
    order, the raw across-run r dropped when the partial one is there."""
    finite = set(part.loc[part["estimate"].notna(), "statistic"])
    shown = [s for s in PANELS if s in finite]
    if "across_runs_partial_r" in shown and "across_runs_r" in shown:
        shown.remove("across_runs_r")
    return shown[:MAX_PANELS]


def forest_plot(part: pd.DataFrame, path: Path) -> Path | None:
    """One study/group/outcome's forest plot into ``path``; None when nothing is finite."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = panels_of(part)
    if not panels:
        return None
    first = part[part["statistic"] == panels[0]].sort_values("rank", na_position="last")
    order = list(dict.fromkeys(first["metric"]))
    order += [m for m in dict.fromkeys(part["metric"]) if m not in order]
    y = {m: i for i, m in enumerate(order)}
    height = max(3.2, 1.7 + 0.24 * len(order))
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(2.3 * len(panels) + 2.2, height),
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    for ax, statistic in zip(axes[0], panels, strict=True):
        rows = part[part["statistic"] == statistic]
        _panel(ax, rows, y, statistic)
    axes[0][0].set_yticks(range(len(order)), [_label(part, m) for m in order], fontsize=8)
    axes[0][0].set_ylim(len(order) - 0.5, -0.5)
    fig.suptitle(_title(part), fontsize=10)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _panel(ax, rows: pd.DataFrame, y: dict[str, int], statistic: str) -> None:
    ax.axvline(0, color="0.4", lw=0.8)
    rows = rows[rows["estimate"].notna()]
    at = rows["metric"].map(y).to_numpy(dtype=float)
    est, lo, hi = (rows[c].to_numpy(dtype=float) for c in ("estimate", "ci_low", "ci_high"))
    has_ci = np.isfinite(lo) & np.isfinite(hi)
    with np.errstate(invalid="ignore"):
        clear = has_ci & ((lo > 0) | (hi < 0))
    colours = np.where(clear, "C3", "C0")
    # One collection per kind of mark: a forest of 40 metrics x 5 panels draws fast.
    ax.hlines(at[has_ci], lo[has_ci], hi[has_ci], colors=colours[has_ci], lw=1.6)
    ax.scatter(est[has_ci], at[has_ci], s=16, c=colours[has_ci], zorder=3)
    ax.scatter(est[~has_ci], at[~has_ci], s=16, facecolors="white", edgecolors="C0", zorder=3)
    ax.set_xlim(-1.05, 1.05)
    ax.grid(axis="x", color="0.9", lw=0.6)
    n = rows[rows["estimate"].notna()]
    runs = int(n["n_runs"].max()) if len(n) else 0
    seeds = int(n["n_seeds"].max()) if len(n) else 0
    steps = int(n["n_steps"].median()) if len(n) else 0
    ax.set_title(f"{PANELS[statistic]}\n{_n(runs, seeds)}, ~{steps} steps", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)


def _n(runs: int, seeds: int) -> str:
    return f"{runs} run{'s' * (runs != 1)}, {seeds} seed{'s' * (seeds != 1)}"


def _label(part: pd.DataFrame, metric: str) -> str:
    """The metric's name, with ``+k`` when k aliases stand behind it."""
    aliases = part.loc[part["metric"] == metric, "aliases"].dropna()
    k = len([a for a in str(aliases.iloc[0]).split("; ") if a]) if len(aliases) else 0
    return f"{metric} (+{k} alias{'es' if k > 1 else ''})" if k else metric


def _title(part: pd.DataFrame) -> str:
    row = part.iloc[0]
    group = "" if row["group"] == "all runs" else f", {row['group']}"
    runs, seeds = int(part["n_runs"].max()), int(part["n_seeds"].max())
    return (
        f"{row['study']}{group}: which metric tracks the outcome '{row['outcome']}'? "
        f"({_n(runs, seeds)})\n"
        "dot: estimate; bar: 95% interval (seed bootstrap; Newey-West for one run); "
        "red: the interval excludes 0; hollow: no interval"
    )


def forest_plots(board: pd.DataFrame, out: Path) -> list[Path]:
    """:func:`forest_plot` for every (study, group, outcome) of the board, into ``out``
    as ``forest_<study>[_<group>]_<outcome>.png``."""
    written = []
    for (study, group, outcome), part in board.groupby(["study", "group", "outcome"], sort=False):
        name = "_".join([study, *([] if group == "all runs" else [group]), outcome])
        path = out / f"forest_{re.sub(r'[^A-Za-z0-9._+-]+', '-', name)}.png"
        if forest_plot(part, path) is not None:
            written.append(path)
    return written
