"""summary.csv of docs/results/warmstart_fashion from its run folders, and the r's its
report quotes.

    python docs/results/warmstart_fashion/summarise.py RUNS_DIR [OUT_DIR]

One row per run (scheme, seed) and checkpoint: NC1 in both conventions and both BatchNorm
modes, Sigma_B's conditioning, the warm-up network's accuracies, the probe's full-data test
accuracy, its epochs and final training accuracy, the fresh network's probe and the gap to
it (points), dead fraction, effective rank and NC4 agreement. Then prints, per scheme,
Pearson r(NC1, full-data test accuracy) over all checkpoints and over those whose probe met
the stopping rule (its last epoch's training accuracy >= finetune_target_acc) rather than
the epoch cap.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from plasticollapse.analysis import correlate, wide
from plasticollapse.analysis.tidy import load

COLUMNS = [
    "nc1",
    "nc1_bn_batch",
    "nc1_pinv",
    "nc1_pinv_bn_batch",
    "sigma_b_condition",
    "warmup_train_acc",
    "warmup_test_acc",
    "full_test_acc",
    "finetune_epochs",
    "finetune_train_acc",
    "dead_fraction",
    "effective_rank",
    "nc4_agreement",
]


def summarise(runs: str) -> pd.DataFrame:
    results = load(runs)
    frame = wide(results.table)
    summaries = wide(results.summaries).set_index("run_id")  # summary.json scalars
    configs = results.runs.set_index("run_id")["config"]
    target = configs.map(lambda config: config["finetune_target_acc"])
    frame = frame.rename(columns={"step": "epoch"})
    frame["fresh_full_test_acc"] = frame["run_id"].map(summaries["fresh_full_test_acc"])
    frame["gap_to_fresh_pts"] = 100 * (frame["full_test_acc"] - frame["fresh_full_test_acc"])
    frame["finetune_target_acc"] = frame["run_id"].map(target)
    keep = ["scheme", "seed", "epoch", *COLUMNS, "fresh_full_test_acc", "gap_to_fresh_pts"]
    keep += ["finetune_target_acc"]
    return frame[keep].sort_values(["scheme", "seed", "epoch"]).reset_index(drop=True)


def main(runs: str, out: str | None = None) -> None:
    out_dir = Path(out) if out else Path(__file__).parent
    frame = summarise(runs)
    frame.to_csv(out_dir / "summary.csv", index=False, float_format="%.6g")
    print(f"{out_dir / 'summary.csv'}: {len(frame)} rows")
    for scheme, rows in frame.groupby("scheme"):
        converged = rows[rows["finetune_train_acc"] >= rows["finetune_target_acc"]]
        for metric in ("nc1", "nc1_pinv_bn_batch"):
            every = correlate(rows[metric], rows["full_test_acc"])
            met = correlate(converged[metric], converged["full_test_acc"])
            first = converged["epoch"].min() if len(converged) else float("nan")
            print(
                f"{scheme}: r({metric}, full_test_acc) all {len(rows)} checkpoints {every:+.2f}; "
                f"the {len(converged)} whose probe met its stopping rule (epoch >= {first:g}) "
                f"{met:+.2f}"
            )


if __name__ == "__main__":
    main(*sys.argv[1:])
