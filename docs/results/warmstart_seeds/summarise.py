"""runs.csv, summary.csv and sliding_window.csv of docs/results/warmstart_seeds, from the
run folders of its sweep.

    PYTHONPATH=src python docs/results/warmstart_seeds/summarise.py RUNS_DIR [OUT_DIR]

- ``runs.csv``: one row per run (scheme, seed) and checkpoint: NC1 (eval mode, and the
  authors' convention ``nc1_pinv_bn_batch``), the warm-up network's train and test
  accuracy, the probe's full-data test accuracy, epochs and last-epoch training accuracy,
  the fresh network's probe (from summary.json) and the run's status. A diverged warm-up
  (``diverged`` row) ends its run: its checkpoints stop there, and ``status`` says so.
- ``summary.csv``: one row per run: its checkpoints, the mean over them of warm-up and
  full-data test accuracy, the same at its last checkpoint, and the per-seed Pearson
  r(NC1, full-data test accuracy) over all checkpoints (the paper's statistic) and over the
  first and the second half of the warm-up (the early and late windows), and over the
  checkpoints whose probe met its stopping rule (``met``: exploratory), each with a
  Newey-West (HAC) 95% interval for one run's autocorrelated series
  (:func:`plasticollapse.analysis.inference.hac_slope_interval`); the fresh probe's epochs
  and whether it met the stopping rule; the image passes of the warm-up and of the probes.
- ``sliding_window.csv``: per run, r(NC1, full-data test accuracy) inside a sliding window
  of half the warm-up, against the window's last epoch
  (:func:`plasticollapse.analysis.stats.windowed_r`; stride = the checkpoint interval).

The windows (half the warm-up, early = the first half, late = the second) were fixed
before the runs finished; docs/paper.md's window is 100 of 350 epochs (20 checkpoints),
which on 12 checkpoints would leave too few points per window.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from plasticollapse.analysis.inference import hac_slope_interval
from plasticollapse.analysis.stats import correlate, windowed_r

COLUMNS = [
    "nc1",
    "nc1_bn_batch",
    "nc1_pinv_bn_batch",
    "warmup_train_acc",
    "warmup_test_acc",
    "full_test_acc",
    "finetune_epochs",
    "finetune_train_acc",
]
FRESH = ["fresh_full_test_acc", "fresh_finetune_epochs", "fresh_finetune_train_acc"]


def scheme_label(config: dict) -> str:
    """The scheme, with the warm-up's weight decay when it has one (``weight_decay_wd0.1``)."""
    label = config["scheme"]
    wd = config.get("weight_decay")
    if label == "weight_decay":
        label += f"_wd{wd if wd is not None else 0.01:g}"
    return label


def read_run(folder: Path) -> tuple[list[dict], dict]:
    """The checkpoint rows of one run folder and its config."""
    config = json.loads((folder / "config.json").read_text())
    config = config.get("config", config)
    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    rows, diverged_at = [], None
    metrics = folder / "metrics.jsonl"
    for line in metrics.read_text().splitlines() if metrics.exists() else []:
        row = json.loads(line)
        if row.get("diverged"):
            diverged_at = row["epoch"]
            continue
        rows.append(row)
    status = summary.get("status", "running")
    out = []
    for row in rows:
        record = {"scheme": scheme_label(config), "seed": config["seed"], "epoch": row["epoch"]}
        record.update({c: row.get(c, np.nan) for c in COLUMNS})
        record["finetune_target_acc"] = config["finetune_target_acc"]
        record["finetune_max_epochs"] = config["finetune_max_epochs"]
        record.update({c: summary.get(c, np.nan) for c in FRESH})
        record["run_seconds"] = summary.get("seconds", np.nan)
        record["status"] = status
        record["diverged_at"] = diverged_at if diverged_at is not None else np.nan
        record["train_images"] = config["train_samples"]
        record["warmup_images"] = round(config["train_samples"] * config["warmup_fraction"])
        out.append(record)
    return out, config


def runs_table(runs: str) -> tuple[pd.DataFrame, dict]:
    """runs.csv, and one config (the sweep's shared settings) for the windows."""
    rows, config = [], {}
    for folder in sorted(Path(runs).glob("*/")):
        if (folder / "config.json").exists():
            got, config = read_run(folder)
            rows += got
    frame = pd.DataFrame(rows)
    return frame.sort_values(["scheme", "seed", "epoch"]).reset_index(drop=True), config


def r_with_interval(rows: pd.DataFrame) -> tuple[float, float, float, int]:
    """Pearson r(nc1, full_test_acc) over ``rows`` and its Newey-West interval, with n."""
    x, y = rows["nc1"].to_numpy(float), rows["full_test_acc"].to_numpy(float)
    r = correlate(x, y) if len(rows) >= 3 else np.nan
    _, low, high = hac_slope_interval(y, x)
    return r, low, high, len(rows)


def per_run(frame: pd.DataFrame, warmup_epochs: int) -> pd.DataFrame:
    """summary.csv: one row per run (see the module docstring)."""
    half = warmup_epochs / 2
    out = []
    for (scheme, seed), rows in frame.groupby(["scheme", "seed"], sort=True):
        rows = rows.sort_values("epoch")
        last = rows.iloc[-1]
        record = {
            "scheme": scheme,
            "seed": seed,
            "status": last["status"],
            "diverged_at": last["diverged_at"],
            "checkpoints": len(rows),
            "last_epoch": last["epoch"],
            "mean_warmup_test_acc": rows["warmup_test_acc"].mean(),
            "mean_full_test_acc": rows["full_test_acc"].mean(),
            "last_warmup_test_acc": last["warmup_test_acc"],
            "last_full_test_acc": last["full_test_acc"],
            "fresh_full_test_acc": last["fresh_full_test_acc"],
            "probes_capped": int((rows["finetune_train_acc"] < rows["finetune_target_acc"]).sum()),
            "finetune_cap": last["finetune_max_epochs"],
            "run_seconds": last["run_seconds"],
            "fresh_finetune_epochs": last["fresh_finetune_epochs"],
            "fresh_met_rule": bool(last["fresh_finetune_train_acc"] >= last["finetune_target_acc"]),
            # image passes of training: the warm-up up to its last checkpoint, the probes
            "warmup_image_passes": last["epoch"] * last["warmup_images"],
            "probe_image_passes": (rows["finetune_epochs"].sum() + last["fresh_finetune_epochs"])
            * last["train_images"],
        }
        for name, part in (
            ("all", rows),
            ("early", rows[rows["epoch"] <= half]),
            ("late", rows[rows["epoch"] > half]),
            ("met", rows[rows["finetune_train_acc"] >= rows["finetune_target_acc"]]),
        ):
            r, low, high, n = r_with_interval(part)
            record.update({f"r_{name}": r, f"r_{name}_low": low, f"r_{name}_high": high})
            record[f"n_{name}"] = n
        record["window_epochs"] = half
        out.append(record)
    return pd.DataFrame(out)


def sliding(frame: pd.DataFrame, warmup_epochs: int, every: int) -> pd.DataFrame:
    """sliding_window.csv: scheme, seed, window_end, r, n_points."""
    out = []
    for (scheme, seed), rows in frame.groupby(["scheme", "seed"], sort=True):
        ends, r, n = windowed_r(
            rows["epoch"].to_numpy(float),
            rows["nc1"].to_numpy(float),
            rows["full_test_acc"].to_numpy(float),
            window=warmup_epochs / 2,
            stride=every,
        )
        out += [
            {"scheme": scheme, "seed": seed, "window_end": e, "r": r[0, j], "n_points": n[0, j]}
            for j, e in enumerate(ends)
        ]
    return pd.DataFrame(out, columns=["scheme", "seed", "window_end", "r", "n_points"])


def main(runs: str, out: str | None = None) -> None:
    out_dir = Path(out) if out else Path(__file__).parent
    frame, config = runs_table(runs)
    warmup, every = config["warmup_epochs"], config["checkpoint_every"]
    frame.to_csv(out_dir / "runs.csv", index=False, float_format="%.6g")
    per_run(frame, warmup).to_csv(out_dir / "summary.csv", index=False, float_format="%.6g")
    sliding(frame, warmup, every).to_csv(
        out_dir / "sliding_window.csv", index=False, float_format="%.6g"
    )
    runs_count = frame.groupby(["scheme", "seed"]).ngroups
    print(f"{out_dir}: {len(frame)} checkpoint rows, {runs_count} runs")


if __name__ == "__main__":
    main(*sys.argv[1:])
