"""The matrix heatmap: one panel per metric, remedies x studies, each cell annotated.

A cell's colour is its difference from the baseline remedy (plain) in the same study, in
units of its own standard error over seeds and in the metric's direction::

    colour(s, r) = direction(metric) * clip(z(s, r), -Z_CLIP, Z_CLIP) / Z_CLIP,
    z = mean_seed d / (sd_seed d / sqrt(n)),   d = v(s, r, seed) - v(s, plain, seed)

(:func:`plasticollapse.matrix.table.standardised`, on log10 for NC1), so a cell is coloured
by how clearly it differs from plain, not by how large its change is next to the other
cells of its row: one seed's NC1 of 8e5 cannot wash out a row. ``direction`` is +1 where
higher is better (accuracy, effective rank), -1 where higher is worse (plasticity loss,
loss, dormant fraction): blue better than plain, red worse. Collapse metrics (NC1, NRC1)
have no better side, which is the question the matrix asks; they are coloured purple
(higher) and orange (lower). Plain itself is white.

The text of a cell is its value (mean over seeds; geometric for NC1) and its difference
from plain (+0.09, or a factor x0.52 for NC1), with ``*`` when the seed-bootstrap interval
of that difference excludes 0 (:mod:`plasticollapse.matrix.table`), and its n when fewer
seeds than the rest (white below 3 seeds, too few for an interval). Cells without a value
are grey and say n/a; a metric no study has gets no panel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from plasticollapse.analysis.inference import MIN_SEEDS
from plasticollapse.matrix.table import LOG_METRICS
from plasticollapse.report import plots

#: How each known metric reads in titles and in matrix.md.
METRIC_TEXT = {
    "accuracy": "online accuracy",
    "pl": "plasticity loss (pl)",
    "nc1": "NC1, training data",
    "test_nc1": "NC1, held-out data",
    "loss": "online loss",
    "nrc1": "NRC1 (regression)",
    "dormant_fraction": "dormant fraction",
    "effective_rank": "effective rank",
}
#: +1: higher is better; -1: higher is worse; 0 (and any metric not listed): no better side.
DIRECTION = {
    "accuracy": 1,
    "effective_rank": 1,
    "pl": -1,
    "loss": -1,
    "dormant_fraction": -1,
}
#: |z| at which a cell's colour saturates (a paired t of 3 with 5 seeds: p ~ 0.04).
Z_CLIP = 3.0


def direction_word(metric: str) -> str:
    """How the panel of ``metric`` reads its colours."""
    d = DIRECTION.get(metric, 0)
    return "higher is better" if d > 0 else "higher is worse" if d < 0 else "no better side"


def colour_value(z: np.ndarray, metric: str) -> np.ndarray:
    """direction * clip(z, -Z_CLIP, Z_CLIP) / Z_CLIP in [-1, 1] (no direction: sign of z
    kept, higher positive); NaN stays NaN."""
    sign = DIRECTION.get(metric, 0) or 1
    return sign * np.clip(np.asarray(z, dtype=float), -Z_CLIP, Z_CLIP) / Z_CLIP


def _grid(table: pd.DataFrame, column: str, studies: list[str], remedies: list[str]):
    pivot = table.pivot(index="remedy", columns="study", values=column)
    return pivot.reindex(index=remedies, columns=studies)


#: A difference this small is the rounding of a float sum of differences that cancel (say
#: the mean of -0.028, -0.0052, ... and +0.1228 over seeds), not a measured one: shown as 0.
ROUNDING = 1e-12


def change_text(diff: float, metric: str) -> str:
    """A difference from the baseline: +0.091, or a factor x0.52 for a log metric; 0 (x1)
    below :data:`ROUNDING`."""
    if not math.isfinite(diff):
        return ""
    if abs(diff) < ROUNDING:
        return "x1" if metric in LOG_METRICS else "0"
    if metric in LOG_METRICS:
        return f"x{10**diff:.3g}"
    return f"{diff:+.2g}" if abs(diff) < 0.01 else f"{diff:+.3f}"


def cell_text(row: pd.Series, metric: str, is_base: bool, n_most: int) -> str:
    """The text of one cell (see the module doc)."""
    value = row[metric]
    if not math.isfinite(value):
        return "n/a"
    text = f"{value:.3g}"
    if is_base:
        return text + "\n(ref.)"
    flag = "*" if row.get(f"{metric}_excludes_0") is True else ""
    text += "\n" + change_text(row[f"{metric}_diff"], metric) + flag
    n = int(row[f"{metric}_n"])
    return text + (f" n={n}" if n < n_most else "")


def as_flag(value) -> bool | None:
    """A CSV-read ``_excludes_0`` (True, False, "True", NaN) as True / False / None."""
    if isinstance(value, str):
        return {"True": True, "False": False}.get(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return bool(value)


def shown_metrics(table: pd.DataFrame, metrics: Sequence[str]) -> list[str]:
    """The metrics with a value in at least one cell."""
    return [m for m in metrics if m in table and table[m].notna().any()]


def seed_range(table: pd.DataFrame, metrics: Sequence[str]) -> tuple[int, int]:
    """Fewest and most seeds behind a cell with a value."""
    counts = [int(n) for m in metrics for n in table[f"{m}_n"] if n > 0]
    return (min(counts), max(counts)) if counts else (0, 0)


def heatmap_figure(
    table: pd.DataFrame,
    remedies: Sequence[str],
    metrics: Sequence[str],
    baseline: str = "plain",
    last: int = 1,
):
    """The heatmap of ``table`` (:func:`~plasticollapse.matrix.table.matrix_table`, or the
    matrix.csv it wrote) as a matplotlib Figure; None when no metric has a value."""
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    table = table.assign(**{f"{m}_excludes_0": table[f"{m}_excludes_0"].map(as_flag)
                            for m in metrics if f"{m}_excludes_0" in table})  # fmt: skip
    shown = shown_metrics(table, metrics)
    if not shown:
        return None
    studies = list(dict.fromkeys(table["study"]))
    remedies = [r for r in remedies if r in set(table["remedy"])]
    low_n, n_most = seed_range(table, shown)
    # Three panels a row and 0.28 in a remedy: 8 metrics x 9 remedies fill one page.
    ncols = min(3, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(8.3, 1.0 + nrows * (0.28 * len(remedies) + 0.8)),
        squeeze=False,
        layout="constrained",
    )
    maps = {1: plt.get_cmap("RdBu"), 0: plt.get_cmap("PuOr")}
    by_key = table.set_index(["study", "remedy"])
    for index, (ax, metric) in enumerate(zip(axes.flat, shown, strict=False)):
        colour = colour_value(_grid(table, f"{metric}_z", studies, remedies), metric)
        # Too few seeds for an interval: the t of 2 seeds is noise; white, and the text says n.
        paired = _grid(table, f"{metric}_diff_n", studies, remedies).to_numpy(dtype=float)
        colour[paired < MIN_SEEDS] = 0.0
        if baseline in remedies:
            colour[remedies.index(baseline)] = 0.0
        colour[np.isnan(_grid(table, metric, studies, remedies).to_numpy(dtype=float))] = np.nan
        cmap = maps[abs(DIRECTION.get(metric, 0))].with_extremes(bad="#dddddd")
        ax.imshow(np.ma.masked_invalid(colour), cmap=cmap, vmin=-1, vmax=1, aspect="auto")
        for (i, remedy), (j, study) in (
            (a, b) for a in enumerate(remedies) for b in enumerate(studies)
        ):
            row = by_key.loc[(study, remedy)]
            dark = math.isfinite(colour[i, j]) and abs(colour[i, j]) > 0.55
            ax.text(j, i, cell_text(row, metric, remedy == baseline, n_most), ha="center",
                    va="center", fontsize=5.8, linespacing=1.0,
                    color="w" if dark else "k")  # fmt: skip
        ax.set_xticks(range(len(studies)), [s.replace("_", "\n") for s in studies])
        ax.xaxis.tick_top()
        ax.set_yticks(range(len(remedies)), remedies if index % ncols == 0 else [])
        ax.tick_params(labelsize=6.5, length=0)
        ax.tick_params(axis="x", labelsize=5.5)
        scale = ", log scale" if metric in LOG_METRICS else ""
        ax.set_title(f"{METRIC_TEXT.get(metric, metric)}{scale}\n({direction_word(metric)})",
                     fontsize=7.5)  # fmt: skip
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_visible(False)
    norm = Normalize(-Z_CLIP, Z_CLIP)
    for key in (1, 0):
        if any(abs(DIRECTION.get(m, 0)) == key for m in shown):
            bar = fig.colorbar(
                ScalarMappable(norm, maps[key]),
                ax=list(axes.flat),
                location="bottom",
                shrink=0.45,
                aspect=40,
                pad=0.01,
            )
            bar.set_label(_bar_label(key, baseline), fontsize=7)
            bar.ax.tick_params(labelsize=6)
    n_text = str(n_most) if low_n == n_most else f"{low_n}-{n_most}"
    fig.suptitle(
        f"Study x remedy matrix, n = {n_text} seeds per cell: value = mean over seeds of each "
        f"run's last {last} measured value(s) (NC1: geometric mean);\nbelow it the paired "
        f"difference from {baseline} (NC1: ratio), * = its 95% seed-bootstrap interval excludes 0",
        fontsize=8,
    )
    return fig


def _bar_label(key: int, baseline: str) -> str:
    if key:
        return (f"worse than {baseline}  <-  paired t, signed by the metric's direction, "
                f"clipped at {Z_CLIP:g}  ->  better")  # fmt: skip
    return f"lower than {baseline}  <-  paired t (NC1, NRC1: no better side)  ->  higher"


def heatmap(
    table: pd.DataFrame,
    remedies: Sequence[str],
    metrics: Sequence[str],
    folder: Path,
    baseline: str = "plain",
    last: int = 1,
    name: str = "matrix_heatmap",
) -> Path | None:
    """Draw :func:`heatmap_figure` into ``folder`` (PNG and PDF); its PNG path, or None
    when no metric has a value."""
    fig = heatmap_figure(table, remedies, metrics, baseline, last)
    if fig is None:
        plots.skip(name, "no cell has a value")
        return None
    return plots.save(fig, folder, name)
