"""The matrix's numbers: each run's final values, the study x remedy table with bootstrap
intervals over seeds, and per study the correlation of collapse with performance across
remedies.

A run's value of a metric is the mean of its last ``last`` finite values in metrics.jsonl
(``last = 1``: the value at the last step where the run measured it). Only complete runs
count (a summary.json; a diverged run counts with the rows it measured before diverging,
and the table says how many diverged). A metric that a study's rows never hold is NaN
("n/a" in matrix.md), never an error.

For each (study, remedy) and metric: the mean over the seeds that have a value, and a 95 %
percentile bootstrap interval of that mean resampling seeds
(:func:`plasticollapse.analysis.stats.bootstrap_mean`; NaN with fewer than 2 seeds, and
with 2 seeds the interval cannot leave the two values' range).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from plasticollapse.analysis.stats import bootstrap_mean, correlation
from plasticollapse.matrix.config import MatrixConfig
from plasticollapse.matrix.plan import Cell
from plasticollapse.runs.folder import RunFolder
from plasticollapse.studies.common import finite


def final_value(rows: Sequence[dict[str, Any]], metric: str, last: int = 1) -> float:
    """Mean of the last ``last`` finite values of ``metric`` over ``rows`` (NaN: none)."""
    values = [float(r[metric]) for r in rows if finite(r.get(metric))]
    return float(np.mean(values[-last:])) if values else math.nan


def run_values(cells: Sequence[Cell], metrics: Sequence[str], last: int = 1) -> pd.DataFrame:
    """One row per cell: study, remedy, seed, status, folder, reason, and each metric's
    final value (NaN unless the run is complete and measured it)."""
    records = []
    for cell in cells:
        record: dict[str, Any] = {
            "study": cell.study,
            "remedy": cell.remedy,
            "seed": cell.seed,
            "status": cell.status,
            "folder": cell.spec.folder if cell.spec is not None else "",
            "reason": cell.reason,
        }
        rows: list[dict[str, Any]] = []
        if cell.spec is not None and record["status"] == "complete":
            folder = RunFolder(cell.spec.folder)
            rows = folder.read_metrics()
            record["status"] = (folder.read_summary() or {}).get("status", "complete")
        record.update({m: final_value(rows, m, last) for m in metrics})
        records.append(record)
    return pd.DataFrame(
        records, columns=["study", "remedy", "seed", "status", "folder", "reason", *metrics]
    )


def matrix_table(values: pd.DataFrame, config: MatrixConfig) -> pd.DataFrame:
    """One row per (study, remedy), in the preset's order: ``study, remedy, runs`` (complete
    of planned), ``note``, and per metric ``<m>``, ``<m>_low``, ``<m>_high``, ``<m>_n``."""
    records = []
    for (study, remedy), group in values.groupby(["study", "remedy"], sort=False):
        done = group["status"].isin(["complete", "diverged"])
        record: dict[str, Any] = {
            "study": study,
            "remedy": remedy,
            "runs": f"{int(done.sum())}/{len(group)}",
            "note": _note(group),
        }
        for m in config.metrics:
            v = group[m].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            ci = bootstrap_mean(v, n_boot=config.bootstrap, seed=0)
            record.update({m: ci["estimate"], f"{m}_low": ci["low"], f"{m}_high": ci["high"]})
            record[f"{m}_n"] = int(v.size)
        records.append(record)
    return pd.DataFrame(records)


def _note(group: pd.DataFrame) -> str:
    reasons = sorted(set(group["reason"]) - {""})
    if reasons:
        return "not applicable: " + "; ".join(reasons)
    diverged = int((group["status"] == "diverged").sum())
    pending = int((~group["status"].isin(["complete", "diverged"])).sum())
    notes = [f"{diverged} diverged"] * bool(diverged) + [f"{pending} not complete"] * bool(pending)
    return ", ".join(notes)


def correlations(values: pd.DataFrame, config: MatrixConfig) -> pd.DataFrame:
    """Per study and (x, y) pair of ``config.correlate``: Pearson r and Spearman rho across
    remedies of the per-remedy means over seeds (one point per remedy), and Pearson r with
    its p-value across runs (one point per remedy and seed). NaN where the study lacks x or
    y, or has fewer than 3 points; ``values`` is :func:`run_values` with both metrics."""
    records = []
    for study, runs in values.groupby("study", sort=False):
        means = runs.groupby("remedy", sort=False).mean(numeric_only=True)
        for x, y in config.correlate:
            across = correlation(means[x], means[y])
            pooled = correlation(runs[x], runs[y])
            records.append(
                {
                    "study": study,
                    "x": x,
                    "y": y,
                    "r_remedies": across["pearson_r"],
                    "rho_remedies": across["spearman_rho"],
                    "n_remedies": across["n"],
                    "r_runs": pooled["pearson_r"],
                    "p_runs": pooled["pearson_p"],
                    "n_runs": pooled["n"],
                }
            )
    return pd.DataFrame(records)
