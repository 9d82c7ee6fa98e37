# ruff: noqa: E501  (the report template keeps its Markdown lines whole)
"""report.md and the figure of docs/results/nc_threshold_fashion, from its CSVs alone.

    PYTHONPATH=src python docs/results/nc_threshold_fashion/render.py [OUT_DIR] [--no-figures]

Every number in report.md is filled in from runs.csv (one row per run), summary.csv (the
authors' per-task statistics) and provenance.csv (command, commit, machine, wall time);
none is typed here. tests/test_published_results.py renders into a temporary folder and
fails when the committed report.md differs. ``summarise.py`` writes the first two from
run folders.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from plasticollapse.report import plots
from plasticollapse.report.predictors import interval_text
from plasticollapse.report.render import commands_block, render_target
from plasticollapse.studies.permuted import threshold
from plasticollapse.studies.permuted.report import PAPER_NUMBERS
from plasticollapse.studies.permuted.threshold import THRESHOLD_SIGMA

HERE = Path(__file__).parent
FIGURE = "permuted_nc1_threshold.png"
#: The seed bootstrap: replicates and generator seed (fixed, so the text is reproducible).
N_BOOT, BOOT_SEED = 2000, 0


def load(folder: Path = HERE) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    runs = pd.read_csv(folder / "runs.csv", keep_default_na=False, na_values=["", "nan"])
    runs["duplicate_of"] = runs["duplicate_of"].fillna("")
    runs["reached"] = runs["reached"].astype(str) == "True"
    per_task = pd.read_csv(folder / "summary.csv")
    provenance = pd.read_csv(folder / "provenance.csv", keep_default_na=False)
    return runs, per_task, dict(zip(provenance["key"], provenance["value"], strict=True))


def f3(v: float) -> str:
    return f"{v:.3f}"


def runs_table(runs: pd.DataFrame) -> str:
    lines = [
        "| run | threshold, seed | pre-training epochs | NC1 after pre-training (`nc1_pinv`) "
        "| acc_0 | mean acc_i, tasks 1–40 | mean PL_i, tasks 1–40 | mean PL_i, tasks 41–99 "
        "| counted |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs.itertuples(index=False):
        counted = "yes"
        if r.duplicate_of:
            counted = f"no: the same run as {r.duplicate_of}"
        elif not r.reached:
            counted = "no: stopped at the epoch cap above its threshold"
        lines.append(
            f"| {r.run_id} | {r.nc1_threshold:.2f}, {r.seed} | {r.epochs:g} | {f3(r.nc1_0)} "
            f"| {f3(r.acc0)} | {f3(r.acc_1_40)} | {f3(r.pl_1_40)} "
            f"| {f3(r.pl_41_99)} | {counted} |"
        )
    return "\n".join(lines)


def estimates_table(est: pd.DataFrame) -> str:
    lines = [
        "| tasks | statistic (r across runs of one number per run) | r [95% CI over seeds] "
        "| runs | seeds | interval |",
        "|---|---|---|---|---|---|",
    ]
    for r in est.itertuples(index=False):
        lines.append(
            f"| {r.block} | {r.statistic.replace('|', chr(92) + '|')} | {interval_text(r.estimate, r.ci_low, r.ci_high)} "
            f"| {r.n_runs} | {r.n_seeds} | {r.interval} |"
        )
    return "\n".join(lines)


def convention_rows(per_task: pd.DataFrame) -> list[dict[str, str]]:
    """The authors' per-task statistics averaged over task ranges (no interval: one r per
    task over the same runs, smoothed across tasks)."""
    rows = []
    for lo, hi in ((1, 40), (41, 99), (99, 99)):
        part = per_task[(per_task["task"] >= lo) & (per_task["task"] <= hi)]
        rows.append(
            {
                "tasks": f"{lo}–{hi}" if lo != hi else f"{lo}",
                "abs": f"{part['abs_r_smoothed'].mean():.2f}",
                "raw": f"{part['r_nc1_pl'].mean():+.2f}",
                "epochs": f"{part['r_epochs_pl_smoothed'].mean():+.2f}",
                "partial": f"{part['r_nc1_pl_given_epochs_smoothed'].mean():+.2f}",
                "runs": f"{int(part['runs'].max())}",
            }
        )
    return rows


def convention_table(rows: list[dict[str, str]]) -> str:
    lines = [
        "| tasks | smoothed \\|r(NC1 after task 0, PL_i)\\| | mean raw r | smoothed r(epochs, "
        "PL_i) | smoothed partial r(NC1, PL_i \\| epochs) | runs |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['tasks']} | {r['abs']} | {r['raw']} | {r['epochs']} | {r['partial']} "
            f"| {r['runs']} |"
        )
    return "\n".join(lines)


def paper_values() -> str:
    """The paper's threshold numbers (docs/paper.md, as the Permuted report holds them)."""
    shown = [n for n in PAPER_NUMBERS if n.kind == "threshold_r"]
    return "; ".join(f"{n.quantity.split(': ', 1)[1]}: {n.value:.2f}" for n in shown)


def paper_thresholds() -> str:
    """The paper's thresholds, as the preset of its protocol holds them."""
    import tomllib

    import plasticollapse

    preset = Path(plasticollapse.__file__).parent / "presets/paper/permuted_nc_threshold.toml"
    values = tomllib.loads(preset.read_text())["nc1_threshold"]
    return ", ".join(f"{v:.2f}" for v in values)


def earlier_table(runs: pd.DataFrame, folder: Path = HERE) -> str:
    """The same seeds and thresholds in the earlier, published run (runs_earlier.csv), when
    that file is there: whether the variant's runs reproduce across code versions."""
    path = folder / "runs_earlier.csv"
    if not path.exists():
        return ""
    old = pd.read_csv(path, keep_default_na=False).set_index(["nc1_threshold", "seed"])
    lines = [
        "| threshold, seed | epochs: here / earlier | NC1 after pre-training: here / earlier | acc_0: here / earlier | mean PL_i, tasks 1–40: here / earlier |",
        "|---|---|---|---|---|",
    ]
    same_epochs = 0
    for r in runs.itertuples(index=False):
        key = (round(r.nc1_threshold, 2), r.seed)
        if key not in old.index:
            continue
        o = old.loc[key]
        same_epochs += int(r.epochs == o["epochs"])
        lines.append(
            f"| {r.nc1_threshold:.2f}, {r.seed} | {r.epochs:g} / {o['epochs']:g} | {f3(r.nc1_0)} / {f3(o['nc1_0'])} "
            f"| {f3(r.acc0)} / {f3(o['acc0'])} | {f3(r.pl_1_40)} / {f3(o['pl_1-40'])} |"
        )
    source = old["source"].iloc[0]
    return (
        f"\n## The earlier run of the same command (runs_earlier.csv: {source})\n\n"
        f"{same_epochs} of {len(lines) - 2} runs took the same number of pre-training epochs in both. "
        "The variant's runs are not reproduced run for run across code versions: a threshold "
        "met one epoch earlier or later changes acc_0, NC1 and the PL of every later task.\n\n"
        + "\n".join(lines)
        + "\n"
    )


def pick(est: pd.DataFrame, block: str, statistic: str) -> pd.Series:
    return est[(est["block"] == block) & (est["statistic"] == statistic)].iloc[0]


def covers_zero(row: pd.Series) -> bool:
    return bool(row["ci_low"] <= 0 <= row["ci_high"])


def reading(runs: pd.DataFrame, est: pd.DataFrame) -> str:
    """The reading, each claim chosen by the numbers it cites."""
    counted = threshold.distinct_runs(runs)

    def cite(block: str, statistic: str) -> str:
        r = pick(est, block, statistic)
        return interval_text(r["estimate"], r["ci_low"], r["ci_high"])

    nc1_pl = pick(est, "1-40", "r(NC1 after task 0, mean PL_i)")
    nc1_acc = pick(est, "1-40", "r(NC1 after task 0, mean acc_i)")
    given = pick(est, "1-40", "partial r(NC1 after task 0, mean PL_i | epochs)")
    later = counted["acc_1-40"]
    first = counted["acc0"]
    sign = (
        "lower NC1 goes with more PL" if nc1_pl["estimate"] < 0 else "higher NC1 goes with more PL"
    )
    pl_claim = "excludes 0" if not covers_zero(nc1_pl) else "covers 0"
    acc_claim = (
        "its interval covers 0: these runs do not show a relation between NC1 after "
        "pre-training and later accuracy itself"
        if covers_zero(nc1_acc)
        else "its interval excludes 0"
    )
    given_claim = "covers 0" if covers_zero(given) else "excludes 0"
    late = pick(est, "41-99", "r(NC1 after task 0, mean acc_i)")
    if covers_zero(nc1_acc) and covers_zero(late):
        later_claim = (
            "They do not show that NC1 after pre-training says anything about later "
            "accuracy, or about PL beyond the pre-training length."
        )
    else:
        direction = "higher NC1 with lower" if late["estimate"] < 0 else "higher NC1 with higher"
        later_claim = (
            "Over tasks 41–99, r(NC1 after task 0, mean acc_i) = "
            f"{cite('41-99', 'r(NC1 after task 0, mean acc_i)')} ({direction} later accuracy), "
            f"one of several block statistics, not chosen in advance, over {counted['seed'].nunique()} seeds: a lead "
            "to test, not a finding. Beyond it, they do not show that NC1 after "
            "pre-training says anything about PL beyond the pre-training length."
        )
    return (
        f"Over tasks 1–40, {sign}: r(NC1 after task 0, mean PL_i) = "
        f"{cite('1-40', 'r(NC1 after task 0, mean PL_i)')}, and its interval {pl_claim}. "
        f"But PL_i = acc_0 − acc_i is almost all acc_0 here: r(acc_0, mean PL_i) = "
        f"{cite('1-40', 'r(acc_0, mean PL_i)')}. Across the {len(counted)} runs acc_0 spans "
        f"{f3(first.min())}–{f3(first.max())} (range {f3(np.ptp(first))}), while the mean "
        f"later accuracy over tasks 1–40 spans {f3(later.min())}–{f3(later.max())} (range "
        f"{f3(np.ptp(later))}). With later accuracy alone, r(NC1 after task 0, mean acc_i) = "
        f"{cite('1-40', 'r(NC1 after task 0, mean acc_i)')}; {acc_claim}. NC1 after "
        f"pre-training and acc_0 are themselves related ({cite('task 0', 'r(NC1 after task 0, acc_0)')}), "
        f"because a lower threshold trains the first task longer: r(pre-training epochs, "
        f"mean PL_i) = {cite('1-40', 'r(pre-training epochs, mean PL_i)')}. With a line in "
        f"the epochs held fixed, the partial r of NC1 and PL_i is "
        f"{cite('1-40', 'partial r(NC1 after task 0, mean PL_i | epochs)')} (its interval "
        f"{given_claim}).\n\n"
        "**What the data support.** On Fashion-MNIST, a run that trained its first task "
        "longer reaches lower NC1 and higher acc_0, and so shows more PL by definition. "
        f"**What they do not.** {later_claim} With "
        f"{counted['seed'].nunique()} seeds the intervals are wide. The paper's MNIST runs "
        "reach lower NC1, so this does not settle the question there."
    )


def report(runs: pd.DataFrame, per_task: pd.DataFrame, prov: dict[str, str]) -> str:
    est = threshold.block_estimates(runs, n_boot=N_BOOT, seed=BOOT_SEED)
    counted = threshold.distinct_runs(runs)
    capped = runs[~runs["reached"]]
    thresholds = ", ".join(f"{t:.2f}" for t in sorted(runs["nc1_threshold"].unique(), reverse=True))
    seeds = sorted(runs["seed"].unique())
    cap_text = "".join(
        f" {r.run_id} stopped at the cap of {r.epochs:g} pre-training epochs with NC1 "
        f"{f3(r.nc1_0)}, above its threshold {r.nc1_threshold:.2f}: it is not a run of the "
        "variant, and is left out."
        for r in capped.itertuples(index=False)
    )
    sources = "; ".join(dict.fromkeys(runs["source"].map(lambda s: s.split(",")[0])))
    paper = convention_rows(per_task)
    return f"""# The NC-threshold variant on Fashion-MNIST: {len(runs)} run folders, {len(counted)} distinct runs from {len(seeds)} seeds

**What this is.** The authors' threshold variant of Setup A
([docs/paper.md](../../paper.md)). The first task trains epoch after epoch, with NC1 in
the authors' convention (`nc1_pinv`) measured on its 60,000 images after each epoch, until
it falls below the threshold; then one epoch per task. Thresholds {thresholds}, seeds
{seeds[0]}–{seeds[-1]}, data set Fashion-MNIST, not the paper's MNIST (the lowest NC1 after
pre-training here is {f3(runs["nc1_0"].min())}; the paper's thresholds, {paper_thresholds()},
are never met on Fashion-MNIST). The rest is the paper's protocol: the
100-100-100 MLP, SGD lr 0.01, batch 1, one sample order per task, task 0's accuracy
averaged over its epochs.{cap_text}

**How the runs nest.** {threshold.nesting_text(runs)}

## Command, machine, wall time

{commands_block("nc_threshold_fashion", prov)}

- Machine: {prov["machine"]}
- Wall time: {prov["wall_time"]}
- Code: commit {prov["commit"]}.
- Where runs.csv comes from: {sources}. {prov["data_note"]}

## Runs (runs.csv)

{runs_table(runs.rename(columns={"acc_1-40": "acc_1_40", "pl_1-40": "pl_1_40", "pl_41-99": "pl_41_99"}))}

## Result: r across runs per task block, with intervals over seeds

Each statistic is an r across the {len(counted)} distinct runs of one number per run: NC1
after pre-training, acc_0, or the pre-training epochs, against the run's mean PL_i or mean
later accuracy acc_i over the block's tasks. The 95% interval is a percentile bootstrap
over seeds ({N_BOOT} replicates, generator seed {BOOT_SEED}): each replicate draws whole
seeds, with all their runs. The partial r holds a line in the pre-training epochs fixed.

{estimates_table(est)}

**Reading.** {reading(runs, est)}

## The authors' convention (summary.csv)

For each task i, the r across runs of NC1 after pre-training and PL_i, with |r| smoothed by
a Gaussian (σ = {THRESHOLD_SIGMA:g} tasks) and averaged over tasks. This is the paper's statistic. It has no
interval: its per-task r values reuse the same runs, and smoothing makes neighbouring tasks
dependent. It is given so that it can be compared with the paper ({paper_values()} on MNIST),
not as evidence.

{convention_table(paper)}

![per task: |r| raw and smoothed, the epochs' r and the partial r]({FIGURE})
""" + earlier_table(runs.rename(columns={"pl_1-40": "pl_1_40"}))


def figure(per_task: pd.DataFrame, runs: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counted = threshold.distinct_runs(runs)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    task = per_task["task"]
    ax.plot(task, per_task["abs_r"], color="0.7", lw=0.8, label="|r(NC1 after task 0, PL_i)|, raw")
    ax.plot(
        task,
        per_task["abs_r_smoothed"],
        color="C0",
        label=f"the same, smoothed (σ = {THRESHOLD_SIGMA:g})",
    )
    ax.plot(task, per_task["r_epochs_pl_smoothed"], color="C1", label="r(epochs, PL_i), smoothed")
    ax.plot(
        task,
        per_task["r_nc1_pl_given_epochs_smoothed"],
        color="C2",
        label="partial r(NC1, PL_i | epochs), smoothed",
    )
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("task i")
    ax.set_ylabel("r across runs")
    ax.set_title(
        f"NC-threshold variant, Fashion-MNIST: r across n = {len(counted)} runs "
        f"({counted['seed'].nunique()} seeds) per task; no interval",
        fontsize=9,
    )
    plots.legend_outside(ax)  # beside the axes: inside, it covered the partial r's start
    fig.savefig(path, dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def main(*args: str) -> None:
    out, draw = render_target(args, HERE)
    runs, per_task, prov = load()
    (out / "report.md").write_text(report(runs, per_task, prov))
    if draw:
        figure(per_task, runs, out / FIGURE)
    print(out / "report.md")


if __name__ == "__main__":
    main(*sys.argv[1:])
