"""summary.csv of docs/results/permuted_fashion from its run folders.

    python docs/results/permuted_fashion/summarise.py RUNS_DIR [OUT_DIR]

Reads every Permuted run under RUNS_DIR (plasticollapse.analysis) and writes, per
first-task setting E and task, the mean over seeds of the per-task metrics below, the
geometric mean of both NC1 conventions (NC1 spans decades across seeds where Sigma_B is
ill-conditioned, so an arithmetic mean is one seed's spike), the min and max over seeds of
online accuracy, and the number of seeds (complete or not) that reached the task.
The report (`plasticollapse report RUNS_DIR`) gives the correlations and figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from plasticollapse.analysis import load_results, wide

MEANS = [
    "accuracy",
    "accuracy_first_epoch",
    "accuracy_last_epoch",
    "pl",
    "nc1_quotient",
    "cdnv",
    "dead_fraction",
    "effective_rank",
    "srank",
    "weight_magnitude",
]
GEOMETRIC = ["nc1", "nc1_pinv", "sigma_b_condition"]


def summarise(runs: str) -> pd.DataFrame:
    frame = wide(load_results(runs))
    frame = frame[frame["step"].notna()].rename(columns={"step": "task"})
    groups = frame.groupby(["first_task_epochs", "task"])
    out = groups[MEANS].mean()
    for metric in GEOMETRIC:
        out[f"{metric}_geomean"] = groups[metric].apply(lambda v: float(np.exp(np.log(v).mean())))
    out["accuracy_min"] = groups["accuracy"].min()
    out["accuracy_max"] = groups["accuracy"].max()
    out["seeds"] = groups["seed"].nunique()
    return out.reset_index()


def main(runs: str, out: str | None = None) -> None:
    out_dir = Path(out) if out else Path(__file__).parent
    table = summarise(runs)
    path = out_dir / "summary.csv"
    table.to_csv(path, index=False, float_format="%.6g")
    print(f"{path}: {len(table)} rows ({table['first_task_epochs'].nunique()} settings)")


if __name__ == "__main__":
    main(*sys.argv[1:])
