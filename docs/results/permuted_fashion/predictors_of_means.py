"""The predictor leaderboard on summary.csv's per-task means (docs/statistics.md).

    python docs/results/permuted_fashion/predictors_of_means.py [OUT_DIR] [MAX_TASK]

summary.csv holds means over 5 seeds, one series per first-task setting; the runs behind
them are not committed. Each setting is therefore one "run" without a seed, and only the
within-series statistics apply (the paper's convention and the detrended ones over tasks,
with Newey-West intervals on the one series); across-run statistics need the run folders.
Writes predictors.csv and a forest plot per setting into OUT_DIR (default: a temporary
folder) and prints the rows of NC1, dead fraction, weight magnitude and effective rank.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pandas as pd

from plasticollapse.analysis import predictors
from plasticollapse.analysis.forest import forest_plots

#: summary.csv column -> metric name (the geometric means stand for the NC1 conventions).
COLUMNS = {
    "accuracy": "accuracy",
    "pl": "pl",
    "nc1_geomean": "nc1",
    "nc1_pinv_geomean": "nc1_pinv",
    "sigma_b_condition_geomean": "sigma_b_condition",
    **{m: m for m in ("nc1_quotient", "cdnv", "dead_fraction", "effective_rank", "srank")},
    "weight_magnitude": "weight_magnitude",
}
SHOWN = ["nc1", "dead_fraction", "weight_magnitude", "effective_rank"]


def tidy_means(summary: pd.DataFrame, max_task: float) -> pd.DataFrame:
    """summary.csv as a tidy table: one seedless run per first-task setting."""
    summary = summary[summary["task"] <= max_task]
    long = summary.melt(
        id_vars=["first_task_epochs", "task"], value_vars=list(COLUMNS), var_name="metric"
    )
    long["metric"] = long["metric"].map(COLUMNS)
    long["run_id"] = "fte" + long["first_task_epochs"].astype(str)
    long["experiment"] = "permuted_fashion_means"
    long["seed"] = None
    long["step"] = long["task"].astype(float)
    return long[["run_id", "experiment", "first_task_epochs", "seed", "step", "metric", "value"]]


def main(out: str | None = None, max_task: str = "139") -> None:
    here = Path(__file__).parent
    table = tidy_means(pd.read_csv(here / "summary.csv"), float(max_task))
    board = predictors(table, outcomes=["accuracy"], by_setting=True, n_boot=0)
    folder = Path(out) if out else Path(tempfile.mkdtemp(prefix="predictors_"))
    folder.mkdir(parents=True, exist_ok=True)
    board.to_csv(folder / "predictors.csv", index=False)
    forest_plots(board, folder)
    shown = board[board["metric"].isin(SHOWN) & (board["statistic"] != "follows")]
    shown = shown[shown["estimate"].notna()]
    columns = ["group", "metric", "statistic", "estimate", "ci_low", "ci_high", "n_steps"]
    print(shown[columns].round(3).to_string(index=False))
    print(f"\n{folder / 'predictors.csv'}")


if __name__ == "__main__":
    main(*sys.argv[1:])
