"""The matrix heatmap: studies x remedies, one panel per metric, annotated.

A cell's colour is its change from the baseline remedy (plain) in the same study, divided by
the largest such change in that study's row of the panel::

    colour(s, r) = (v(s, r) - v(s, plain)) / max_r' |v(s, r') - v(s, plain)|

so every study uses the whole colour range whatever the metric's scale (an accuracy in
[0, 1], an effective rank of tens), red above plain and blue below; plain is white. The
text in a cell is its value (mean over seeds) and its difference from plain, so the
scaling hides no number. Cells without a value (a study that lacks the metric, a remedy
not applicable) are grey and say n/a; a metric no study has gets no panel.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from plasticollapse.matrix.config import MatrixConfig
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


def _grid(table: pd.DataFrame, metric: str, studies: list[str], remedies: list[str]) -> np.ndarray:
    pivot = table.pivot(index="study", columns="remedy", values=metric)
    return pivot.reindex(index=studies, columns=remedies).to_numpy(dtype=float)


def scaled_change(values: np.ndarray, baseline: int) -> np.ndarray:
    """Per row: (v - v[baseline]) / max |v - v[baseline]| (0 where the row does not change;
    NaN where v or the baseline is missing)."""
    change = values - values[:, [baseline]]
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.nanmax(np.where(np.isfinite(change), np.abs(change), -np.inf), axis=1)
        scaled = change / np.where(scale > 0, scale, np.inf)[:, None]
    return np.where(np.isfinite(change), scaled, np.nan)


def _cell_text(value: float, change: float, is_baseline: bool) -> str:
    if not math.isfinite(value):
        return "n/a"
    if is_baseline:
        return f"{value:.3g}\n(baseline)"
    return f"{value:.3g}\n({change:+.2g})" if math.isfinite(change) else f"{value:.3g}"


def heatmap(table: pd.DataFrame, config: MatrixConfig, folder: Path, name: str = "matrix_heatmap"):
    """Draw the heatmap of ``table`` (:func:`~plasticollapse.matrix.table.matrix_table`)
    into ``folder``; returns the PNG's path, or None when no metric has a value."""
    import matplotlib.pyplot as plt

    shown = [m for m in config.metrics if m in table and table[m].notna().any()]
    if not shown:
        return plots.skip(name, "no cell has a value")
    studies = list(dict.fromkeys(table["study"]))
    remedies = [r for r in config.remedies if r in set(table["remedy"])]
    base = remedies.index(config.baseline) if config.baseline in remedies else 0
    ncols = min(3, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    cell_w, cell_h = 0.95, 0.62
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(
            ncols * (cell_w * len(remedies) + 1.2) + 2.0,
            nrows * (cell_h * len(studies) + 1.0),
        ),
        squeeze=False,
        layout="constrained",
    )
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#dddddd")
    image = None
    for index, (ax, metric) in enumerate(zip(axes.flat, shown, strict=False)):
        values = _grid(table, metric, studies, remedies)
        colour = scaled_change(values, base)
        image = ax.imshow(np.ma.masked_invalid(colour), cmap=cmap, vmin=-1, vmax=1, aspect="auto")
        change = values - values[:, [base]]
        for i, j in np.ndindex(values.shape):
            dark = math.isfinite(colour[i, j]) and abs(colour[i, j]) > 0.6
            text = _cell_text(values[i, j], change[i, j], j == base)
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="w" if dark else "k")
        # Remedy names under the lowest panel of each column, study names left of the first.
        lowest = index + ncols >= len(shown)
        ax.set_xticks(range(len(remedies)), remedies if lowest else [], rotation=30, ha="right")
        ax.set_yticks(range(len(studies)), studies if index % ncols == 0 else [])
        ax.tick_params(labelsize=8)
        ax.set_title(METRIC_TEXT.get(metric, metric), fontsize=9)
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_visible(False)
    fig.colorbar(
        image,
        ax=list(axes.flat),
        shrink=0.6,
        label=f"change from {config.baseline}, scaled per study",
    )
    fig.suptitle(
        f"Study x remedy matrix, {len(config.seeds)} seeds: mean over seeds of each run's last "
        f"{config.last} measured value(s), and (change from {config.baseline})",
        fontsize=10,
    )
    return plots.save(fig, folder, name)
