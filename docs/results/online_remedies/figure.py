"""The figure and summary table of docs/results/online_remedies from its run folders.

    python docs/results/online_remedies/figure.py RUNS_DIR [OUT_DIR]

Reads every Permuted run under RUNS_DIR (plasticollapse.analysis), groups them by remedy
(and CBP's replacement rate), and writes to OUT_DIR (default: this folder):

- online_remedies.png: online accuracy per task (mean over seeds, band = min..max) and
  NC1 per task (log scale), one line per setting;
- summary.csv: per setting, means over seeds of: the online accuracy of task 0, of tasks
  1-10 and of the last 10 tasks, and the change between the two windows; the median NC1
  over the same windows (NC1's exact convention spikes where Sigma_B is ill-conditioned,
  so a median); Tr Sigma_W / Tr Sigma_B and the dead fraction of the last hidden layer
  over the last 10 tasks; seconds per task; the units CBP replaced per task.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from plasticollapse.analysis import load_results, wide  # noqa: E402

ORDER = ["plain", "cbp (rate 1e-6)", "cbp (rate 1e-5)", "l2_init", "shrink_perturb", "reset_all"]


def setting(row: pd.Series) -> str:
    """The remedy's name, and CBP's replacement rate (1e-6 where the column is empty:
    the runs at the preset's rate, when all CBP runs share it)."""
    name = row["remedies"] or "plain"
    if name != "cbp":
        return name
    rate = row.get("cbp_replacement_rate")
    rate = 1e-6 if rate is None or pd.isna(rate) else float(rate)
    return f"cbp (rate {rate:.0e})".replace("e-0", "e-")


def main(runs: str, out: str | None = None) -> None:
    out_dir = Path(out) if out else Path(__file__).parent
    frame = wide(load_results(runs))
    if "cbp_replacement_rate" not in frame:
        frame["cbp_replacement_rate"] = None
    frame["remedies"] = frame["remedies"].fillna("").replace("", "plain")
    frame["setting"] = frame.apply(setting, axis=1)
    frame = frame[frame["step"].notna()]
    settings = [s for s in ORDER if s in set(frame["setting"])]
    last = int(frame["step"].max())

    fig, (acc_ax, nc1_ax) = plt.subplots(1, 2, figsize=(12, 4.4))
    for i, name in enumerate(settings):
        runs_of = frame[frame["setting"] == name]
        for ax, metric in ((acc_ax, "accuracy"), (nc1_ax, "nc1")):
            per_seed = runs_of.pivot_table(index="step", columns="seed", values=metric)
            steps = per_seed.index.to_numpy()
            mean = per_seed.mean(axis=1).to_numpy()
            ax.plot(steps, mean, color=f"C{i}", lw=1.3, label=f"{name} (n={per_seed.shape[1]})")
            ax.fill_between(
                steps, per_seed.min(axis=1), per_seed.max(axis=1), color=f"C{i}", alpha=0.2, lw=0
            )
    acc_ax.set(xlabel="task", ylabel="online accuracy of the task", title="Online accuracy")
    nc1_ax.set(xlabel="task", ylabel="NC1 = Tr(Σ_W Σ_B⁺)/C (log)", title="NC1 after each task")
    nc1_ax.set_yscale("log")
    for ax in (acc_ax, nc1_ax):
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(
        f"Permuted Fashion-MNIST, MLP 784-100-100-100-10, SGD lr 0.01, batch 1, "
        f"{last + 1} tasks of 60,000 images, fast engine (mean over seeds, band: min-max)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out_dir / "online_remedies.png", dpi=130)

    rows = []
    for name in settings:
        runs_of = frame[frame["setting"] == name]

        def window(metric, lo, hi, how="mean", runs_of=runs_of):
            per_seed = runs_of.pivot_table(index="step", columns="seed", values=metric)
            values = per_seed.loc[lo:hi]
            return float(values.median().mean() if how == "median" else values.mean().mean())

        row = {
            "setting": name,
            "seeds": runs_of["seed"].nunique(),
            "acc_task0": window("accuracy", 0, 0),
            "acc_tasks1_10": window("accuracy", 1, 10),
            "acc_last10": window("accuracy", last - 9, last),
        }
        row["acc_change"] = row["acc_last10"] - row["acc_tasks1_10"]
        row["nc1_median_tasks1_10"] = window("nc1", 1, 10, "median")
        row["nc1_median_last10"] = window("nc1", last - 9, last, "median")
        row["nc1_quotient_last10"] = window("nc1_quotient", last - 9, last)
        row["dead_fraction_layer3_last10"] = window("dead_fraction_layer3", last - 9, last)
        row["seconds_per_task"] = float(runs_of["seconds"].mean())
        if "cbp_units_replaced" in runs_of:
            row["cbp_units_replaced_per_task"] = float(runs_of["cbp_units_replaced"].mean())
        rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(out_dir / "summary.csv", index=False, float_format="%.4g")
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(table.round(4).to_string(index=False))


if __name__ == "__main__":
    main(*sys.argv[1:])
