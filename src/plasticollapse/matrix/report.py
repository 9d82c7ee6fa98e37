"""Writing a matrix: matrix.csv, runs.csv, correlations.csv, the heatmap and matrix.md, and
the text forms of its tables (matrix.md's, the command's printout, a published README's).

Every function below that makes text reads only the table and the correlations (the frames
:mod:`.table` makes, or the CSVs they were written to), so a published report can be
rendered again from its committed CSVs alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from plasticollapse.matrix.config import MatrixConfig
from plasticollapse.matrix.figure import (
    METRIC_TEXT,
    as_flag,
    change_text,
    heatmap,
    seed_range,
    shown_metrics,
)
from plasticollapse.matrix.plan import Cell
from plasticollapse.matrix.table import LOG_METRICS, correlations, matrix_table, run_values
from plasticollapse.report.format import fmt
from plasticollapse.report.render import Doc, relative

#: What a metric means in each kind of study, for matrix.md's legend.
METRIC_NOTES = {
    "accuracy": "online (prequential) accuracy of a task",
    "pl": "plasticity loss: accuracy of task 0 minus this task's (classification), or this "
    "period's online error minus the first period's (regression); higher = more lost",
    "nc1": "NC1 = Tr(Sigma_W Sigma_B^+)/C of the penultimate features on the task's training "
    "data; geometric mean over seeds, difference from the baseline as a ratio",
    "test_nc1": "NC1 on held-out data of the current task (geometric mean, ratio)",
    "loss": "online loss of a task: cross-entropy (classification) or squared error "
    "(regression); compare within a study only",
    "nrc1": "NRC1 of the penultimate features (Andriopoulos et al. 2024), regression only",
    "dormant_fraction": "fraction of tau-dormant penultimate units (ReDo, tau 0.025)",
    "effective_rank": "effective rank of the penultimate features (Roy & Vetterli)",
}


# =========================================================================== cell text


def interval_text(low: float, high: float, text=fmt) -> str:
    """``[low, high]``, or "(no interval)" where there is none."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "(no interval)"
    return f"[{text(low)}, {text(high)}]"


def value_text(row: pd.Series, metric: str) -> str:
    """``mean [low, high] n=5``, ``n/a`` without a value."""
    mean = row[metric]
    if not math.isfinite(mean):
        return "n/a"
    interval = interval_text(row[f"{metric}_low"], row[f"{metric}_high"])
    return f"{fmt(mean)} {interval} n={int(row[f'{metric}_n'])}"


def difference_text(row: pd.Series, metric: str, brief: bool = False) -> str:
    """The paired difference from the baseline: ``+0.091 [0.08, 0.10] n=5 *`` (a ratio x0.52
    for a log metric; ``*``: the interval excludes 0); "" without one."""
    diff = row[f"{metric}_diff"]
    if not math.isfinite(diff):
        return ""
    flag = " *" if as_flag(row[f"{metric}_excludes_0"]) is True else ""
    if brief:
        return change_text(diff, metric) + flag.strip()
    as_text = lambda v: change_text(v, metric)  # noqa: E731
    interval = interval_text(row[f"{metric}_diff_low"], row[f"{metric}_diff_high"], as_text)
    return f"{as_text(diff)} {interval} n={int(row[f'{metric}_diff_n'])}{flag}"


def study_metrics(rows: pd.DataFrame, metrics: Sequence[str]) -> list[str]:
    """The metrics the study has a value of (a column of n/a says nothing)."""
    return [m for m in metrics if m in rows and rows[m].notna().any()]


def study_table(rows: pd.DataFrame, metrics: Sequence[str], baseline: str) -> pd.DataFrame:
    """One study's rows as matrix.md shows them: remedy, runs, then per metric its value
    with interval and n, and its difference from the baseline with interval, n and ``*``."""
    shown = rows[["remedy", "runs"]].copy()
    for m in study_metrics(rows, metrics):
        name = METRIC_TEXT.get(m, m)
        shown[name] = [value_text(r, m) for _, r in rows.iterrows()]
        shown[difference_name(m, baseline)] = [difference_text(r, m) for _, r in rows.iterrows()]
    shown["note"] = rows["note"].fillna("")
    return shown


def difference_name(metric: str, baseline: str) -> str:
    """``accuracy - plain``, ``nc1 / plain`` (a ratio) for a log metric."""
    return f"{metric} {'/' if metric in LOG_METRICS else '-'} {baseline}"


def printed_table(table: pd.DataFrame, metrics: Sequence[str], baseline: str) -> str:
    """The table as the command prints it: per study, remedies x metrics, each cell
    ``value (difference from the baseline, * if its interval excludes 0)``."""
    blocks = []
    for study, rows in table.groupby("study", sort=False):
        shown = pd.DataFrame({"remedy": rows["remedy"], "runs": rows["runs"]})
        for m in study_metrics(rows, metrics):
            shown[m] = [_brief(r, m) for _, r in rows.iterrows()]
        blocks.append(f"{study}:\n{shown.to_string(index=False)}")
    legend = (
        f"value: mean over seeds (NC1 geometric); in brackets the difference from {baseline}, "
        "paired by seed (NC1: ratio); * its 95% seed-bootstrap interval excludes 0"
    )
    return "\n\n".join([*blocks, legend])


def _brief(row: pd.Series, metric: str) -> str:
    if not math.isfinite(row[metric]):
        return "n/a"
    diff = difference_text(row, metric, brief=True)
    return f"{fmt(row[metric])}" + (f" ({diff})" if diff else "")


def seeds_text(table: pd.DataFrame) -> str:
    """``5``, or ``3-5`` when cells differ in how many seeds they average."""
    low, high = seed_range(table, shown_metrics(table, metrics_in(table)))
    return str(high) if low == high else f"{low}-{high}"


def metrics_in(table: pd.DataFrame) -> list[str]:
    """The metrics of a matrix table, in its column order (each has an ``_excludes_0``)."""
    return [c[: -len("_excludes_0")] for c in table.columns if c.endswith("_excludes_0")]


def r_text(value: float) -> str:
    return fmt(value, "r") if math.isfinite(value) else "n/a"


def pair_text(x: str, y: str) -> str:
    """``log10 nc1 vs accuracy``: the pair as it was correlated."""
    scale = lambda m: f"log10 {m}" if m in LOG_METRICS else m  # noqa: E731
    return f"{scale(x)} vs {scale(y)}"


def shown_correlations(frame: pd.DataFrame) -> pd.DataFrame:
    """The correlations as matrix.md shows them (n/a where undefined)."""
    leave = [
        f"{r_text(lo)} (without {wlo}) .. {r_text(hi)} (without {whi})"
        if math.isfinite(lo) else "n/a"
        for lo, hi, wlo, whi in zip(frame["loo_low"], frame["loo_high"],
                                    frame["loo_low_without"], frame["loo_high_without"],
                                    strict=True)
    ]  # fmt: skip
    return pd.DataFrame(
        {
            "study": frame["study"],
            "x vs y": [pair_text(x, y) for x, y in zip(frame["x"], frame["y"], strict=True)],
            "r across remedies": [r_text(v) for v in frame["r_remedies"]],
            "seed-bootstrap interval": [
                interval_text(lo, hi, r_text)
                for lo, hi in zip(frame["r_remedies_low"], frame["r_remedies_high"], strict=True)
            ],
            "leaving one remedy out": leave,
            "rho": [r_text(v) for v in frame["rho_remedies"]],
            "remedies": frame["n_remedies"],
            "seeds": frame["n_seeds"],
            "r across runs": [r_text(v) for v in frame["r_runs"]],
            "its interval": [
                interval_text(lo, hi, r_text)
                for lo, hi in zip(frame["r_runs_low"], frame["r_runs_high"], strict=True)
            ],
            "runs": frame["n_runs"],
        }
    )


TABLE_LEGEND = (
    "Each value: per run, the mean of its last {last} measured value(s) of the key (the "
    "run's final value); then the mean over seeds (geometric for NC1) with a 95% percentile "
    "bootstrap interval over seeds and n, the seeds it averages; beside it the difference "
    "from {baseline} PAIRED by seed (remedy minus {baseline}, seed by seed; NC1 as a ratio), "
    "its 95% seed-bootstrap interval and n; * marks a difference whose interval excludes 0. "
    "No interval with fewer than 3 seeds. With as few as 5 seeds a percentile bootstrap is narrow "
    "(it covers the true mean less often than 95%, about 85-90% for a normal spread), and "
    "the table holds many cells: expect some * where a remedy does nothing. n/a: the study "
    "does not measure the key, or no run of the cell is complete."
)
CORRELATION_LEGEND = (
    "Per study: Pearson r across remedies between the per-remedy means over seeds (one "
    "point per remedy; NC1 on log10), with a 95% seed-bootstrap interval (each replicate "
    "redraws the seeds and recomputes every remedy's mean) and its range when each remedy "
    "in turn is left out: a range reaching far from r says one remedy makes the "
    "correlation. Spearman rho of the same means; r across runs (one point per remedy and "
    "seed) with its seed-bootstrap interval. n/a with fewer than 3 points or where the "
    "study lacks a key."
)


def add_tables(doc: Doc, table: pd.DataFrame, corr: pd.DataFrame, metrics, baseline, last):
    """The table (one per study), its legend and the correlations, into ``doc``."""
    doc.p(TABLE_LEGEND.format(last=last, baseline=baseline))
    for study, rows in table.groupby("study", sort=False):
        doc.h(3, study)
        doc.table(study_table(rows, metrics, baseline))
    doc.p(
        "Keys: "
        + "; ".join(f"{METRIC_TEXT.get(m, m)} (`{m}`): {METRIC_NOTES.get(m, m)}" for m in metrics)
        + "."
    )


def add_correlations(doc: Doc, corr: pd.DataFrame) -> None:
    doc.p(CORRELATION_LEGEND)
    doc.table(shown_correlations(corr))


HEATMAP_CAPTION = (
    "Each panel: remedies x studies, n = {n} seeds per cell. Text: value (mean over seeds; "
    "NC1 geometric) and the paired difference from {baseline} (NC1: ratio), * when its "
    "seed-bootstrap interval excludes 0. Colour: that difference in units of its standard "
    "error over seeds (paired t, clipped at 3), blue better and red worse than {baseline} "
    "in the metric's direction; NC1 and NRC1, which have no better side, purple higher and "
    "orange lower; grey n/a."
)


# =========================================================================== the files


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
    png = heatmap(table, config.remedies, config.metrics, folder, config.baseline, config.last)

    doc = Doc()
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    doc.h(1, "Study x remedy matrix")
    doc.p(
        f"Generated {now} from {config.source}: studies {', '.join(s.name for s in config.studies)}"
        f"; remedies {', '.join(config.remedies)}; seeds {', '.join(map(str, config.seeds))}; "
        f"run folders under {config.out}; {config.bootstrap} bootstrap resamples."
    )
    add_tables(doc, table, corr, config.metrics, config.baseline, config.last)
    if png is not None:
        doc.img(png, HEATMAP_CAPTION.format(baseline=config.baseline, n=seeds_text(table)))
    doc.h(2, "Collapse against performance across remedies")
    add_correlations(doc, corr)
    doc.p(
        "Files: "
        + ", ".join(relative(p, folder) for p in [*written, *([png] if png else [])])
        + "."
    )
    (folder / "matrix.md").write_text(doc.markdown(folder))
    written.append(folder / "matrix.md")
    return [*written, *([png] if png is not None else [])]
