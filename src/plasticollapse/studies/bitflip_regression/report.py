"""The bit-flipping study's report: a table per setting and the per-period curves.

One flip period of a 5-unit learner is a noisy measurement (the error of a period depends on
which 32 inputs it has), so both average over a *window* of w = max(1, periods // 10)
consecutive periods, as Dohare et al. bin their online error (over 2 periods):

* ``Per setting``: means ± std over seeds of the online squared error over the first and the
  last w periods and their difference (plasticity loss), the best period, and NRC1, NRC2,
  dormant fraction and effective rank of the penultimate features averaged over the last w
  measured periods; Pearson r across periods of the mean NRC1 and mean online error curves;
* a figure with the online error, NRC1, dormant fraction and effective rank per period
  (running mean over w periods, then mean ± std over seeds), one line per setting: Dohare et
  al.'s online-error curve beside the collapse and plasticity metrics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from plasticollapse import analysis
from plasticollapse.report import plots
from plasticollapse.report.format import mean_std, seeds_text
from plasticollapse.studies.base import ReportSection, StudyResults

SOURCE = (
    "Dohare, Hernandez-Garcia, Lan, Rahman, Mahmood, Sutton, 'Loss of plasticity in deep "
    "continual learning' (Nature 632, 2024); their code github.com/shibhansh/"
    "loss-of-plasticity, lop/slowly_changing_regression (cfg/prob.json, cfg/sgd/bp/relu.json)"
)
PROTOCOL = (
    "20 input bits of which 15 flip every 10,000 steps (redrawn), a fixed 100-unit LTU "
    "target with ±1 weights (beta 0.7), a 20-5-1 ReLU learner trained by SGD (batch 1) on "
    "the squared error for 1e6 steps; step sizes 0.01, 0.003, 0.001."
)
#: (metric, panel label) of the figure.
CURVES = (
    ("loss", "online squared error"),
    ("nrc1", "NRC1 (penultimate)"),
    ("dormant_fraction", "dormant fraction"),
    ("effective_rank", "effective rank"),
)


def window(results: StudyResults) -> int:
    """w: a tenth of the periods the runs reached (at least 1)."""
    last = results.runs["last_step"].to_numpy(dtype=float)
    last = last[np.isfinite(last)]
    return max(1, int(last.max() + 1) // 10) if last.size else 1


def _tail_mean(frame: pd.DataFrame, w: int, head: bool = False) -> np.ndarray:
    """Per run: the mean of its first (``head``) or last ``w`` measured values (NaN: none)."""
    values = []
    for _, row in frame.iterrows():
        kept = row.dropna().to_numpy()
        values.append(np.mean(kept[:w] if head else kept[-w:]) if kept.size else np.nan)
    return np.array(values)


def setting_table(results: StudyResults, w: int) -> pd.DataFrame:
    """One row per setting: see the module docstring."""
    rows = []
    for setting, runs in analysis.setting_groups(results.runs, results.settings):
        ids = list(runs["run_id"])
        loss = analysis.curves(results.table, "loss", ids)
        first, last = _tail_mean(loss, w, head=True), _tail_mean(loss, w)
        row: dict[str, str | float] = {
            "setting": analysis.setting_label(setting),
            "seeds": seeds_text(runs),
        }
        row[f"mse, first {w}"] = mean_std(first)
        row[f"mse, last {w}"] = mean_std(last)
        row["plasticity loss"] = mean_std(last - first)
        row["best period"] = mean_std(loss.min(axis=1))
        for metric in ("nrc1", "nrc2", "dormant_fraction", "effective_rank"):
            frame = analysis.curves(results.table, metric, ids)
            row[f"{metric}, last {w}"] = mean_std(_tail_mean(frame, w))
        nrc1, mse = analysis.paired_curves(results.table, "nrc1", "loss", ids)
        row["r(mean NRC1, mean mse)"] = analysis.mean_curve_r(nrc1.to_numpy(), mse.to_numpy())
        rows.append(row)
    return pd.DataFrame(rows)


def plot_curves(results: StudyResults, folder: Path, w: int) -> Path | None:
    """Online error, NRC1, dormant fraction and effective rank per period, per setting,
    each run's curve a running mean over ``w`` periods."""
    name = "bitflip_curves"
    available = set(analysis.metrics(results.table))
    shown = [(m, label) for m, label in CURVES if m in available]
    if not shown:
        plots.skip(name, "no runs with per-period metrics")
        return None
    groups = [
        (plots.group_label(setting), list(runs["run_id"]))
        for setting, runs in analysis.setting_groups(results.runs, results.settings)
    ]
    fig, axes = plots.panels(len(shown), width=4.2, height=3.4)
    for ax, (metric, label) in zip(axes, shown, strict=True):
        for text, ids in groups:
            frame = analysis.curves(results.table, metric, ids)
            smooth = frame.T.rolling(w, min_periods=1).mean().T
            plots.draw_band(ax, smooth, text)
        ax.set(xlabel="flip period (task)", ylabel=label)
        ax.grid(alpha=0.3)
    plots.legend_outside(axes[-1], plots.legend_title(results.settings))
    fig.suptitle(
        f"Slowly-changing regression: online error and feature metrics per flip period "
        f"(running mean over {w} periods; mean ± std over seeds)"
    )
    return plots.save(fig, folder, name)


def report(results: StudyResults) -> ReportSection:
    """The bit-flipping study's section of the report."""
    w = window(results)
    png = plot_curves(results, Path(results.out) / "figures", w)
    caption = f"Per flip period, running mean over {w} periods, mean ± std over seeds"
    return ReportSection(
        title="Bit-flipping: slowly-changing regression (Dohare et al.)",
        protocol=f"Source: {SOURCE}. Its protocol: {PROTOCOL}",
        tables=[
            (
                f"Per setting\nMean ± std over seeds of per-run values. mse: online squared "
                f"error of a flip period (each sample scored before its update), averaged over "
                f"the first or the last {w} periods; plasticity loss: last minus first; best "
                f"period: the lowest single-period mse; feature metrics: averaged over the last "
                f"{w} measured periods, on their evaluation inputs. r: Pearson r across periods "
                "of the per-period means over seeds.",
                setting_table(results, w),
            )
        ],
        figures=[] if png is None else [(caption, png)],
        notes=[
            "With one target (the source) NRC3 is 0 for every network; it is informative "
            "only with outputs >= 2. NRC1 is 0 when one unit is left alive (its features span "
            "one direction) and, by convention, when all are dead: read it beside the dormant "
            "fraction and the effective rank. A period's input distribution has 2^(m - f) "
            "points (32 in the source), all seen in training: there is no held-out split."
        ],
    )
