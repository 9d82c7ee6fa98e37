"""The bit-flipping study's report: a table per setting and the per-period curves.

* ``Per setting``: means over seeds of the online squared error of the first, best and last
  flip period, the plasticity loss (last - first), and the last measured NRC1, NRC2,
  dormant fraction and effective rank of the penultimate features, with Pearson r across
  periods of the mean NRC1 and mean online error curves;
* a figure with the online error, NRC1, dormant fraction and effective rank per period
  (mean ± std over seeds), one line per setting: Dohare et al.'s online-error curve beside
  the collapse and plasticity metrics.
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


def _last(table: pd.DataFrame, metric: str, ids: list[str]) -> np.ndarray:
    """Each run's last value of a per-period metric (NaN where it has none)."""
    frame = analysis.curves(table, metric, ids)
    return np.array(
        [row.dropna().iloc[-1] if row.notna().any() else np.nan for _, row in frame.iterrows()]
    )


def setting_table(results: StudyResults) -> pd.DataFrame:
    """One row per setting: see the module docstring."""
    rows = []
    for setting, runs in analysis.setting_groups(results.runs, results.settings):
        ids = list(runs["run_id"])
        loss = analysis.curves(results.table, "loss", ids)
        nrc1, mse = analysis.paired_curves(results.table, "nrc1", "loss", ids)
        row = {"setting": analysis.setting_label(setting), "seeds": seeds_text(runs)}
        row["mse first period"] = mean_std(loss.iloc[:, 0] if loss.shape[1] else [])
        row["best mse"] = mean_std(loss.min(axis=1))
        row["final mse"] = mean_std(_last(results.table, "loss", ids))
        row["pl (final - first)"] = mean_std(_last(results.table, "pl", ids))
        for metric in ("nrc1", "nrc2", "dormant_fraction", "effective_rank"):
            row[f"final {metric}"] = mean_std(_last(results.table, metric, ids))
        row["r(mean NRC1, mean mse)"] = analysis.mean_curve_r(nrc1.to_numpy(), mse.to_numpy())
        rows.append(row)
    return pd.DataFrame(rows)


def plot_curves(results: StudyResults, folder: Path) -> Path | None:
    """Online error, NRC1, dormant fraction and effective rank per period, per setting."""
    name = "bitflip_curves"
    available = set(analysis.metrics(results.table))
    shown = [(m, label) for m, label in CURVES if m in available]
    if not shown:
        return plots.skip(name, "no runs with per-period metrics")
    groups = [
        (plots.group_label(setting), list(runs["run_id"]))
        for setting, runs in analysis.setting_groups(results.runs, results.settings)
    ]
    fig, axes = plots.panels(len(shown), width=4.2, height=3.4)
    for ax, (metric, label) in zip(axes, shown, strict=True):
        for text, ids in groups:
            plots.draw_band(ax, analysis.curves(results.table, metric, ids), text)
        ax.set(xlabel="flip period (task)", ylabel=label)
        ax.grid(alpha=0.3)
    plots.legend_outside(axes[-1], plots.legend_title(results.settings))
    fig.suptitle("Slowly-changing regression: online error and feature metrics per flip period")
    return plots.save(fig, folder, name)


def report(results: StudyResults) -> ReportSection:
    """The bit-flipping study's section of the report."""
    png = plot_curves(results, Path(results.out) / "figures")
    return ReportSection(
        title="Bit-flipping: slowly-changing regression (Dohare et al.)",
        protocol=f"Source: {SOURCE}. Its protocol: {PROTOCOL}",
        tables=[
            (
                "Per setting\nMean ± std over seeds. mse: online squared error of a flip "
                "period (each sample scored before its update); pl: last period's minus the "
                "first's. Final metrics: the last measured period, on its evaluation inputs. "
                "r: Pearson r across periods of the per-period means over seeds.",
                setting_table(results),
            )
        ],
        figures=[] if png is None else [("Per flip period, mean ± std over seeds", png)],
        notes=[
            "With one target (the source) NRC3 is 0 for every network; it is informative "
            "only with outputs >= 2. A period's input distribution has 2^(m - f) points "
            "(32 in the source), all seen in training: there is no held-out split."
        ],
    )
