"""Writing a matrix: matrix.csv, runs.csv, correlations.csv, the heatmap and matrix.md."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from plasticollapse.matrix.config import MatrixConfig
from plasticollapse.matrix.figure import METRIC_TEXT, heatmap
from plasticollapse.matrix.plan import Cell
from plasticollapse.matrix.table import correlations, matrix_table, run_values
from plasticollapse.report.format import fmt
from plasticollapse.report.render import Doc, relative

#: What a metric means in each kind of study, for matrix.md's legend.
METRIC_NOTES = {
    "accuracy": "online (prequential) accuracy of a task",
    "pl": "plasticity loss: accuracy of task 0 minus this task's (classification), or this "
    "period's online error minus the first period's (regression); higher = more lost",
    "nc1": "NC1 = Tr(Sigma_W Sigma_B^+)/C of the penultimate features on the task's training data",
    "test_nc1": "NC1 on held-out data of the current task",
    "loss": "online loss of a task: cross-entropy (classification) or squared error "
    "(regression); compare within a study only",
    "nrc1": "NRC1 of the penultimate features (Andriopoulos et al. 2024), regression only",
    "dormant_fraction": "fraction of tau-dormant penultimate units (ReDo, tau 0.025)",
    "effective_rank": "effective rank of the penultimate features (Roy & Vetterli)",
}


def interval_text(row: pd.Series, metric: str) -> str:
    """``mean [low, high]``, ``mean`` with one seed, ``n/a`` without a value."""
    mean = row[metric]
    if not math.isfinite(mean):
        return "n/a"
    low, high = row[f"{metric}_low"], row[f"{metric}_high"]
    if not (math.isfinite(low) and math.isfinite(high)):
        return fmt(mean)
    return f"{fmt(mean)} [{fmt(low)}, {fmt(high)}]"


def shown_table(table: pd.DataFrame, config: MatrixConfig) -> pd.DataFrame:
    """The table as matrix.md shows it: one column per metric, ``mean [low, high]``."""
    shown = table[["study", "remedy", "runs"]].copy()
    for metric in config.metrics:
        shown[METRIC_TEXT.get(metric, metric)] = [
            interval_text(r, metric) for _, r in table.iterrows()
        ]
    shown["note"] = table["note"]
    return shown


def _cell(value: float, unit: str) -> str:
    return fmt(value, unit) if math.isfinite(value) else "n/a"


def shown_correlations(frame: pd.DataFrame) -> pd.DataFrame:
    """The correlations as matrix.md shows them (n/a where undefined)."""
    return pd.DataFrame(
        {
            "study": frame["study"],
            "x vs y": frame["x"] + " vs " + frame["y"],
            "r across remedies": [_cell(v, "r") for v in frame["r_remedies"]],
            "rho across remedies": [_cell(v, "r") for v in frame["rho_remedies"]],
            "remedies": frame["n_remedies"],
            "r across runs": [_cell(v, "r") for v in frame["r_runs"]],
            "p": [_cell(v, "p") for v in frame["p_runs"]],
            "runs": frame["n_runs"],
        }
    )


def write_matrix(cells: list[Cell], config: MatrixConfig, folder: str | Path) -> list[Path]:
    """Read every cell's run folder and write the matrix's files into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    values = run_values(cells, config.read_metrics, config.last)
    table = matrix_table(values, config)
    corr = correlations(values, config)
    written = [folder / "matrix.csv", folder / "runs.csv", folder / "correlations.csv"]
    table.to_csv(written[0], index=False)
    values.to_csv(written[1], index=False)
    corr.to_csv(written[2], index=False)
    png = heatmap(table, config, folder)

    doc = Doc()
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    doc.h(1, "Study x remedy matrix")
    doc.p(
        f"Generated {now} from {config.source}: studies {', '.join(s.name for s in config.studies)}"
        f"; remedies {', '.join(config.remedies)}; seeds {', '.join(map(str, config.seeds))}; "
        f"run folders under {config.out}."
    )
    doc.p(
        f"Each value: per run, the mean of its last {config.last} measured value(s) of the key "
        f"(the run's final value); then the mean over seeds with a 95% percentile bootstrap "
        f"interval over seeds [low, high] ({config.bootstrap} resamples; none with one seed, "
        "and with two seeds it cannot leave their range). n/a: the study does not measure "
        "the key, or no run of the cell is complete."
    )
    doc.table(shown_table(table, config))
    doc.p(
        "Keys: "
        + "; ".join(
            f"{METRIC_TEXT.get(m, m)} (`{m}`): {METRIC_NOTES.get(m, m)}" for m in config.metrics
        )
        + "."
    )
    if png is not None:
        doc.img(
            png,
            f"Each panel: studies x remedies; text: mean over seeds (change from "
            f"{config.baseline}); colour: change from {config.baseline} divided by the largest "
            "change in that study (red higher, blue lower, grey n/a)",
        )
    doc.h(2, "Collapse against performance across remedies")
    doc.p(
        "Per study: Pearson r and Spearman rho across remedies between the per-remedy means "
        "over seeds of the two final values (one point per remedy), and Pearson r with its "
        "two-sided p-value across runs (one point per remedy and seed). n/a with fewer than 3 "
        "points or where the study lacks a key. A handful of points: read the sign, not the "
        "p-value."
    )
    doc.table(shown_correlations(corr))
    doc.p(
        "Files: "
        + ", ".join(relative(p, folder) for p in [*written, *([png] if png else [])])
        + "."
    )
    (folder / "matrix.md").write_text(doc.markdown(folder))
    written.append(folder / "matrix.md")
    return [*written, *([png] if png is not None else [])]
