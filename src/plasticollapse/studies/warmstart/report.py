"""The warm-start study's report: per-seed and sliding-window correlations, the paper's
numbers, the checkpoint table and the figures (:mod:`.figures`).

:func:`report` builds the study's :class:`~plasticollapse.studies.base.ReportSection`:

* what was run per scheme (data, model, warm-up reached, checkpoint spacing, seeds);
* the paper's numbers (:data:`PAPER_NUMBERS`) beside ours, for the matching scheme;
* correlations (``correlations.csv``): each seed's r(NC1, full-data test accuracy) across
  its warm-up checkpoints, averaged over seeds, over all checkpoints and before / after
  epoch 100 (:func:`seed_correlations`); the sliding-window r at the paper's window ends;
* the sliding-window r per seed and window end (``sliding_window.csv``,
  :func:`sliding_windows`);
* NC1 and accuracies at the paper's checkpoints (:func:`checkpoint_table`).

The window width and stride come from ``results.options`` (``window``, ``stride``; the
report's ``--window`` / ``--stride``), in warm-up epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plasticollapse import analysis
from plasticollapse.report.format import (
    PaperNumber,
    bootstrap_text,
    correlation_tables,
    fmt,
    mean_std,
    paper_tables,
    reached,
    seeds_text,
    to_percent,
)
from plasticollapse.studies.base import ReportSection, StudyResults
from plasticollapse.studies.common import PAPER

PAPER_PROTOCOL = "CIFAR-10, ResNet-18, warm-up 350 epochs on 25k, ckpt every 5, seeds 7-11"
#: Warm-up epochs <= SPLIT are the paper's "first 100 epochs".
SPLIT = 100.0
#: The paper's checkpoints shown in the checkpoint table (and each scheme's last one).
PAPER_EPOCHS = (5, 50, 100, 350)
CHECKPOINT_METRICS = ("nc1", "warmup_test_acc", "full_test_acc", "finetune_epochs")

#: Source: the authors' stored result files, mean over seeds 7-11 (see docs/paper.md);
#: full-data accuracies in percent.
# fmt: off
PAPER_NUMBERS: tuple[PaperNumber, ...] = (
    *(
        PaperNumber(f"NC1 at warm-up epoch {e} (plain)", v, "", "value",
                    {"metric": "nc1", "epoch": e}, require={"scheme": "plain"})
        for e, v in ((5, 15.5), (50, 1.34), (100, 0.61), (350, 0.41))
    ),
    *(
        PaperNumber(f"full-data test acc at epoch {e} ({name})", v, "%", "value",
                    {"metric": "full_test_acc", "epoch": e}, require={"scheme": scheme})
        for scheme, name, values in (
            ("plain", "plain", ((5, 61.0), (50, 58.8), (100, 58.3), (350, (57.3, 59.8)))),
            ("shrink_perturb", "S&P", ((5, 66.4), (50, 62.0), (100, 60.8))),
            ("nc1_reg", "NC1-reg", ((5, 60.7), (50, 59.5), (100, 59.4))),
        )
        for e, v in values
    ),
    PaperNumber("per-seed r(NC1, full test acc), all checkpoints", (0.85, 0.89), "r", "seed_r",
                {"range": "all checkpoints"}, require={"scheme": "plain"}),
    PaperNumber("per-seed r(NC1, full test acc), epochs <= 100", (0.88, 0.92), "r", "seed_r",
                {"range": "epochs <= 100"}, require={"scheme": "plain"}),
    *(
        PaperNumber(f"sliding-window r, window ending at epoch {e}", v, "r", "window_r",
                    {"ends": (e,)}, require={"scheme": "plain"})
        for e, v in ((100, 0.90), (150, 0.58), (200, 0.14))
    ),
    PaperNumber("sliding-window r, windows ending at 225-350 (mean)", 0.0, "r", "window_r",
                {"ends": tuple(range(225, 351, 5))}, require={"scheme": "plain"}),
)
# fmt: on


def protocol_line(setting: dict[str, Any], runs: pd.DataFrame) -> str:
    """One line saying what was run for a setting: data, model, warm-up reached, seeds."""
    c = runs["config"].iloc[0]
    return (
        f"{c.get('dataset', '?')} {c.get('model', '')}, {analysis.setting_label(setting)}, "
        f"warm-up {fmt(reached(runs), 'int')}/{c.get('warmup_epochs', '?')} epochs, ckpt every "
        f"{c.get('checkpoint_every', '?')}, {seeds_text(runs)}"
    )


# =========================================================================== analyses


def ranges(split: float = SPLIT) -> tuple[tuple[str, float, float], ...]:
    """The three ranges of warm-up epochs e: all, ``e <= split``, ``e > split``."""
    return (
        ("all checkpoints", -math.inf, math.inf),
        (f"epochs <= {split:g}", -math.inf, split),
        (f"epochs > {split:g}", split, math.inf),
    )


def seed_correlations(
    results: StudyResults, x: str = "nc1", y: str = "full_test_acc", split: float = SPLIT
) -> list[dict[str, Any]]:
    """Per-seed corr(x, y) across warm-up checkpoints, per scheme/setting, three ranges.

    Within each range of :func:`ranges` every seed gives one r over its checkpoints; the
    row reports the mean of those r's (Pearson; Spearman likewise), each seed's r, and a
    95 % bootstrap interval of the mean per-seed Pearson r, resampling seeds
    (``"mean_of_runs"``). ``n`` is the number of checkpoints per seed (the most).
    """
    rows = []
    for setting, runs in analysis.setting_groups(results.runs, results.settings):
        cx, cy = analysis.paired_curves(results.table, x, y, list(runs["run_id"]))
        for name, lo, hi in ranges(split):
            px, py = analysis.between(cx, lo, hi), analysis.between(cy, lo, hi)
            if px.shape[1] == 0:
                continue
            per = [analysis.correlation(a, b) for a, b in zip(px.values, py.values, strict=True)]
            r = np.array([p["pearson_r"] for p in per])
            ci = analysis.bootstrap_over_seeds(
                px.values, py.values, "mean_of_runs", "pearson", results.bootstrap, results.seed
            )
            steps = px.columns.to_numpy(dtype=float)
            rows.append(
                {
                    "analysis": f"per-seed corr({x}, {y}), {name}",
                    "range": name,
                    "x": x,
                    "setting": setting,
                    "label": analysis.setting_label(setting),
                    "steps": f"epochs {steps.min():g}-{steps.max():g}",
                    "pearson_r": analysis.nanmean(r),
                    "spearman_rho": analysis.nanmean([p["spearman_rho"] for p in per]),
                    "n": max((p["n"] for p in per), default=0),
                    "ci_low": ci["low"],
                    "ci_high": ci["high"],
                    "n_seeds": len(px),
                    "per_seed_r": [float(v) for v in r],
                }
            )
    return rows


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
    wanted = [e for e in (100, 150, 200, 250, 300, 350) if np.isclose(w.ends, e).any()]
    if wanted:
        return wanted
    return [float(w.ends[i]) for i in sorted({0, len(w.ends) // 2, len(w.ends) - 1})]


def window_correlations(results: StudyResults, windows: list[WindowResult]) -> list[dict]:
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
                    "analysis": f"sliding-window r(nc1, full_test_acc), {window:g} epochs",
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


def checkpoint_table(results: StudyResults) -> pd.DataFrame:
    """NC1 and accuracies at the paper's epochs and each setting's last checkpoint, mean ±
    std over seeds (std with ddof 0; accuracies in percent)."""
    rows = []
    for setting, runs in analysis.setting_groups(results.runs, results.settings):
        ids = list(runs["run_id"])
        frames = {m: analysis.curves(results.table, m, ids) for m in CHECKPOINT_METRICS}
        steps = frames["nc1"].columns.to_numpy(dtype=float)
        if steps.size == 0:
            continue
        epochs = sorted({e for e in PAPER_EPOCHS if (steps == e).any()} | {steps.max()})
        for e in epochs:
            row = {"setting": analysis.setting_label(setting), "epoch": fmt(e, "int")}
            for metric, frame in frames.items():
                values = analysis.at(frame, e)
                if metric.endswith("acc"):
                    row[metric] = mean_std(to_percent(values), "%")
                else:
                    row[metric] = mean_std(values)
            rows.append(row)
    names = ["NC1", "warm-up test acc", "full-data test acc", "fine-tune epochs"]
    frame = pd.DataFrame(rows, columns=["setting", "epoch", *CHECKPOINT_METRICS])
    return frame.set_axis(["setting", "epoch", *names], axis=1)


# =========================================================================== the paper's numbers


def reproduce(
    results: StudyResults,
    seed_corr: list[dict[str, Any]],
    windows: list[WindowResult],
    ref: PaperNumber,
    setting: dict[str, Any],
    runs: pd.DataFrame,
) -> tuple[Any, str]:
    """Our number for a paper number, from the runs of one scheme (mean over seeds)."""
    p = ref.params
    if ref.kind == "value":
        values = analysis.at(
            analysis.curves(results.table, p["metric"], list(runs["run_id"])), float(p["epoch"])
        )
        return analysis.nanmean(to_percent(values) if ref.unit == "%" else values), ""
    if ref.kind == "seed_r":
        for row in seed_corr:
            if row["range"] == p["range"] and row["setting"] == setting and row["x"] == "nc1":
                r = np.array(row["per_seed_r"])
                r = r[np.isfinite(r)]
                return ((float(r.min()), float(r.max())) if r.size else math.nan), ""
        return math.nan, ""
    if ref.kind == "window_r":
        window = results.options.get("window", 100)
        note = "" if window == 100 else f"; window {window:g} epochs"
        for w in windows:
            if w.setting == setting:
                means = [analysis.nanmean(w.at(e)) for e in p["ends"]]
                return analysis.nanmean(means), note
        return math.nan, note
    raise ValueError(f"unknown reproduction kind {ref.kind!r}")


# =========================================================================== the section


def report(results: StudyResults) -> ReportSection:
    """The warm-start study's section of the report (see the module doc)."""
    from plasticollapse.studies.warmstart import figures

    folder = Path(results.out)
    seed_corr = seed_correlations(results)
    windows = sliding_windows(results)
    shown, raw = correlation_tables(seed_corr + window_correlations(results, windows))
    files = [folder / "correlations.csv", folder / "sliding_window.csv"]
    raw.to_csv(files[0], index=False)
    windows_frame(windows).to_csv(files[1], index=False)

    def reproduce_one(ref: PaperNumber, setting: dict, runs: pd.DataFrame) -> tuple[Any, str]:
        return reproduce(results, seed_corr, windows, ref, setting, runs)

    window = results.options.get("window", 100)
    return ReportSection(
        title="Warm start: warm-starting CIFAR-10 with ResNet-18 (the paper's Setup B)",
        protocol=f"Paper: {PAPER}; its protocol: {PAPER_PROTOCOL}.",
        tables=[
            *paper_tables(
                results,
                PAPER_NUMBERS,
                reproduce_one,
                protocol_line,
                "Paper values: the authors' stored results, mean over 5 seeds. Reproduced "
                "values are means over seeds of the matching scheme; a range is min..max "
                "over seeds.",
            ),
            (
                "Correlations\nEach seed's Pearson r / Spearman rho across its checkpoints, "
                "averaged over seeds (p-values per seed are not pooled); sliding window "
                f"({window:g} epochs): mean over seeds of the r inside the window. "
                + bootstrap_text(results),
                shown,
            ),
            (
                "At the paper's checkpoints\nMean ± std over seeds (std with ddof 0); the last "
                "row per scheme is its last checkpoint.",
                checkpoint_table(results),
            ),
        ],
        figures=figures.draw_all(results, folder / "figures", windows, window),
        files=files,
    )
