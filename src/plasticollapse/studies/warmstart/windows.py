"""Sliding-window correlations of the warm start: Pearson r of NC1 vs full-data test accuracy
inside a window of warm-up epochs, per seed, against the window's last epoch (docs/paper.md,
Setup B)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from plasticollapse import analysis
from plasticollapse.studies.base import StudyResults


@dataclass
class WindowResult:
    """Sliding-window r per seed (rows) and window end (columns) for one setting."""

    setting: dict[str, Any]
    ends: np.ndarray
    r: np.ndarray  # (seeds, ends)
    n: np.ndarray  # (seeds, ends): points in each window
    run_ids: list[str]
    seeds: list[Any]

    @property
    def label(self) -> str:
        return analysis.setting_label(self.setting)

    def at(self, end: float) -> np.ndarray:
        """Each seed's r in the window ending at ``end`` (NaN when there is no such window)."""
        hit = np.flatnonzero(np.isclose(self.ends, end))
        return self.r[:, hit[0]] if hit.size else np.full(len(self.run_ids), np.nan)


def sliding_windows(
    results: StudyResults, x: str = "nc1", y: str = "full_test_acc"
) -> list[WindowResult]:
    """:func:`~plasticollapse.analysis.stats.windowed_r` per seed for every setting.

    The window (``options["window"]``, default 100 epochs) ending at epoch e holds the
    checkpoints with ``e - window < epoch <= e``; ends step by ``options["stride"]``
    (default 5). All seeds of a setting share one grid of ends (from the union of their
    checkpoints), so the mean and std over seeds are taken per window end.
    """
    window = results.options.get("window", 100)
    stride = results.options.get("stride", 5)
    out = []
    for setting, runs in analysis.setting_groups(results.runs, results.settings):
        cx, cy = analysis.paired_curves(results.table, x, y, list(runs["run_id"]))
        ends, r, n = analysis.windowed_r(cx.columns, cx.values, cy.values, window, stride)
        if len(cx) and ends.size:
            out.append(WindowResult(setting, ends, r, n, list(cx.index), list(runs["seed"])))
    return out


def window_report_ends(w: WindowResult) -> list[float]:
    """The paper's ends (100, 150, ..., 350) that exist, else first/middle/last end."""
    wanted: list[float] = [e for e in (100, 150, 200, 250, 300, 350) if np.isclose(w.ends, e).any()]
    if wanted:
        return wanted
    return [float(w.ends[i]) for i in sorted({0, len(w.ends) // 2, len(w.ends) - 1})]


def window_correlations(
    results: StudyResults, windows: list[WindowResult], x: str = "nc1"
) -> list[dict]:
    """One row per setting and reported window end: the mean over seeds of the window's r,
    with a bootstrap interval of that mean (resampling seeds)."""
    window = results.options.get("window", 100)
    rows = []
    for w in windows:
        for end in window_report_ends(w):
            r = w.at(end)
            ci = analysis.bootstrap_mean(r, results.bootstrap, results.seed)
            rows.append(
                {
                    "analysis": f"mean per-seed sliding-window r: {x} vs full_test_acc, "
                    f"{window:g} epochs",
                    "label": w.label,
                    "steps": f"epochs ({end - window:g}, {end:g}]",
                    "pearson_r": ci["estimate"],
                    "n": int(np.max(w.n[:, np.isclose(w.ends, end)], initial=0)),
                    "ci_low": ci["low"],
                    "ci_high": ci["high"],
                    "n_seeds": int(np.isfinite(r).sum()),
                    "per_seed_r": [float(v) for v in r],
                }
            )
    return rows


def windows_frame(windows: list[WindowResult]) -> pd.DataFrame:
    """sliding_window.csv: setting, run_id, seed, window_end, r, n_points."""
    rows = [
        {
            "setting": w.label,
            "run_id": rid,
            "seed": w.seeds[i],
            "window_end": float(end),
            "r": float(w.r[i, j]),
            "n_points": int(w.n[i, j]),
        }
        for w in windows
        for i, rid in enumerate(w.run_ids)
        for j, end in enumerate(w.ends)
    ]
    return pd.DataFrame(rows, columns=["setting", "run_id", "seed", "window_end", "r", "n_points"])
