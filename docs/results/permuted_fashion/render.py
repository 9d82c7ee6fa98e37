# ruff: noqa: E501  (the report template keeps its Markdown lines whole)
"""report.md, metric_ranking.csv and the figures of docs/results/permuted_fashion, from
summary.csv and provenance.csv alone.

    PYTHONPATH=src python docs/results/permuted_fashion/render.py [OUT_DIR] [--no-figures]

summary.csv holds per-task means over 5 seeds, one series per first-task setting E; the
30 run folders behind it were not committed. So each setting is ONE series of 140 (or 200)
autocorrelated means, without its seeds: every statistic here is within that series, with
a Newey-West (HAC) interval on the one series (docs/statistics.md), never a p-value, and
no across-seed interval can be given. Every number in report.md is filled in from the
CSVs; tests/test_published_results.py fails when the committed report.md differs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from plasticollapse.analysis import predictors
from plasticollapse.report.predictors import interval_text
from plasticollapse.report.render import commands_block, render_target
from plasticollapse.studies.permuted.report import MAX_TASKS, PAPER_NUMBERS

HERE = Path(__file__).parent
FIGURES = ("permuted_nc1_pl.png", "permuted_nc1_vs_accuracy.png")
#: The settings shown in the narrower tables (all are in the CSVs).
SHOWN_E = (1, 10, 100)
#: The ranking's headline and the paper's convention beside it.
HEADLINE, CONVENTION = "detrended_r_diff", "paper_mean_curve_r"


def _sibling(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(folder: Path = HERE) -> tuple[pd.DataFrame, dict[str, str]]:
    summary = pd.read_csv(folder / "summary.csv")
    provenance = pd.read_csv(folder / "provenance.csv", keep_default_na=False)
    return summary, dict(zip(provenance["key"], provenance["value"], strict=True))


def ranking(summary: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard on the means of tasks 0..MAX_TASKS-1, one seedless series per E,
    NC1 also as its log (the geometric mean over seeds is exp of the mean log NC1, so log
    NC1 here is exactly the mean over seeds of log NC1)."""
    tidy = _sibling("predictors_of_means").tidy_means(summary, MAX_TASKS - 1)
    logs = tidy[tidy["metric"].isin(["nc1", "nc1_pinv"])].copy()
    logs["metric"] = "log_" + logs["metric"]
    logs["value"] = np.log(logs["value"])
    tidy = pd.concat([tidy, logs], ignore_index=True)
    return predictors(tidy, outcomes=["accuracy"], by_setting=True, n_boot=0)


def f3(v: float) -> str:
    return f"{v:.3f}"


def cell(board: pd.DataFrame, e: int, metric: str, statistic: str) -> str:
    row = board[
        (board["group"] == f"first_task_epochs={e}")
        & (board["metric"] == metric)
        & (board["statistic"] == statistic)
    ].iloc[0]
    return interval_text(row["estimate"], row["ci_low"], row["ci_high"])


def task_mean(summary: pd.DataFrame, e: int, column: str, lo: int, hi: int) -> float:
    part = summary[(summary["first_task_epochs"] == e) & summary["task"].between(lo, hi)]
    return float(part[column].mean())


def paper_value(kind_metric: str) -> str:
    """A paper number of Setup A by what it measures (docs/paper.md via PAPER_NUMBERS)."""
    for n in PAPER_NUMBERS:
        if n.kind == "headline_r" and kind_metric == "headline":
            return f"{n.value:+.3f}"
        params = n.params
        if n.kind == "value" and f"{params['metric']}{params['tasks']}" == kind_metric:
            return f"{n.value:g}"
    raise KeyError(kind_metric)


def paper_table(summary: pd.DataFrame, board: pd.DataFrame) -> str:
    settings = sorted(summary["first_task_epochs"].unique())
    e = settings[0]
    last = MAX_TASKS - 1
    rows = [
        "| quantity | paper (MNIST, 5 seeds) | this run (Fashion-MNIST, E = 1, mean of 5 seeds) |",
        "|---|---|---|",
        f"| r(mean NC1, mean accuracy), tasks 0–{last}, r of per-task means (`paper_mean_curve_r`) | {paper_value('headline')} (arithmetic means of `nc1_pinv`) | geometric mean of `nc1_pinv`: {cell(board, e, 'nc1_pinv', CONVENTION)}; of log `nc1`: {cell(board, e, 'log_nc1', CONVENTION)} (Newey-West, one series of {last + 1} means) |",
        f"| online accuracy, task 0 | {paper_value('accuracy(0, 0)')} | {f3(task_mean(summary, e, 'accuracy', 0, 0))} |",
        f"| online accuracy, mean of tasks 130–139 | {paper_value('accuracy(130, 139)')} | {f3(task_mean(summary, e, 'accuracy', 130, 139))} |",
        f"| NC1 (authors' convention), task 0 | {paper_value('nc1_pinv(0, 0)')} | {f3(task_mean(summary, e, 'nc1_pinv_geomean', 0, 0))} (geometric mean) |",
        f"| NC1 (authors' convention), mean of tasks 130–139 | {paper_value('nc1_pinv(130, 139)')} | {task_mean(summary, e, 'nc1_pinv_geomean', 130, 139):.2f} (mean of the geometric means) |",
    ]
    return "\n".join(rows)


def settings_table(summary: pd.DataFrame, board: pd.DataFrame) -> str:
    settings = sorted(summary["first_task_epochs"].unique())
    last_task = int(summary["task"].max())
    head = "| E (first-task epochs) | " + " | ".join(f"{e:g}" for e in settings) + " |"
    rows = [head, "|---" * (len(settings) + 1) + "|"]

    def line(label, values):
        rows.append(f"| {label} | " + " | ".join(values) + " |")

    line(
        "accuracy, task 0 (mean of its epochs)",
        [f3(task_mean(summary, e, "accuracy", 0, 0)) for e in settings],
    )
    line(
        "accuracy, mean of tasks 130–139",
        [f3(task_mean(summary, e, "accuracy", 130, 139)) for e in settings],
    )
    line("PL, mean of tasks 130–139", [f3(task_mean(summary, e, "pl", 130, 139)) for e in settings])
    line(
        "`nc1_pinv` (geometric mean), task 0",
        [f"{task_mean(summary, e, 'nc1_pinv_geomean', 0, 0):.2f}" for e in settings],
    )
    line(
        f"dead fraction (last hidden layer), task {last_task}",
        [f"{task_mean(summary, e, 'dead_fraction', last_task, last_task):.2f}" for e in settings],
    )
    return "\n".join(rows)


def nc1_table(board: pd.DataFrame) -> str:
    metrics = (
        ("`nc1` (exact, geometric mean)", "nc1"),
        ("`nc1_pinv` (authors', geometric mean)", "nc1_pinv"),
        ("log `nc1` (mean over seeds)", "log_nc1"),
        ("`nc1_quotient` (Tr Σ_W / Tr Σ_B)", "nc1_quotient"),
        ("`cdnv`", "cdnv"),
    )
    head = "| metric | " + " | ".join(f"E = {e}: {CONVENTION} / {HEADLINE}" for e in SHOWN_E) + " |"
    rows = [head, "|---" * (len(SHOWN_E) + 1) + "|"]
    for label, metric in metrics:
        cells = [
            f"{cell(board, e, metric, CONVENTION)} / {cell(board, e, metric, HEADLINE)}"
            for e in SHOWN_E
        ]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def ranking_table(board: pd.DataFrame) -> str:
    rows = [
        f"| E | first by {HEADLINE} | second | third | NC1 variants' ranks (of {{n}} distinct metrics) | first by {CONVENTION} |",
        "|---|---|---|---|---|---|",
    ]
    out = []
    for e in SHOWN_E:
        part = board[board["group"] == f"first_task_epochs={e}"]
        head = part[(part["statistic"] == HEADLINE) & part["rank"].notna()].sort_values("rank")
        level = part[(part["statistic"] == CONVENTION) & part["rank"].notna()].sort_values("rank")
        top = [
            f"`{r.metric}` {interval_text(r.estimate, r.ci_low, r.ci_high)}"
            for r in head.head(3).itertuples()
        ]
        nc1 = head[head["metric"].isin(["nc1", "nc1_pinv", "log_nc1", "nc1_quotient"])]
        ranks = ", ".join(f"`{r.metric}` {int(r.rank)}" for r in nc1.itertuples())
        first = level.iloc[0]
        out.append(
            f"| {e} | {' | '.join(top)} | {ranks} | `{first.metric}` {interval_text(first.estimate, first.ci_low, first.ci_high)} |"
        )
        n = len(head)
    rows[0] = rows[0].replace("{n}", str(n))
    return "\n".join(rows + out)


def reading(summary: pd.DataFrame, board: pd.DataFrame) -> str:
    settings = sorted(summary["first_task_epochs"].unique())
    pl = [task_mean(summary, e, "pl", 130, 139) for e in settings]
    ordered = all(a < b for a, b in zip(pl, pl[1:], strict=False))
    late = [task_mean(summary, e, "accuracy", 130, 139) for e in settings]
    head = board[board["statistic"] == HEADLINE]
    nc1 = head[head["metric"] == "log_nc1"]
    nc1_negative = int((nc1["ci_high"] < 0).sum())
    level = board[board["statistic"] == CONVENTION]
    top_levels = level[level["rank"] == 1]["metric"].value_counts()
    top_head = head[head["rank"] == 1]["metric"].value_counts()
    by = level.set_index(["group", "metric"])["estimate"]
    groups = list(dict.fromkeys(level["group"]))
    both_negative = sum(by[(g, "nc1")] < 0 and by[(g, "nc1_pinv")] < 0 for g in groups)
    logs = [by[(g, "log_nc1")] for g in groups]
    log_range = f"{max(logs):+.2f} to {min(logs):+.2f}"
    diff = head.set_index(["group", "metric"])["estimate"]
    rank_wins = sum(abs(diff[(g, "effective_rank")]) > abs(diff[(g, "log_nc1")]) for g in groups)
    weight = head[head["metric"] == "weight_magnitude"]
    weight_zero = int(((weight["ci_low"] <= 0) & (weight["ci_high"] >= 0)).sum())
    return (
        f"PL over tasks 130–139 grows with first-task training ({f3(pl[0])} at E = {settings[0]:g} to "
        f"{f3(pl[-1])} at E = {settings[-1]:g}{', in order at every E' if ordered else ''}), while "
        f"late online accuracy stays within {f3(min(late))}–{f3(max(late))}: PL is the gap to task 0, "
        "so a longer first task raises acc_0 and PL together.\n\n"
        f"Ranked by r of levels (the paper's convention), the first metric is "
        + ", ".join(f"`{m}` in {c} of {len(settings)} settings" for m, c in top_levels.items())
        + ". Over 140 trending means, that r reads a shared trend as a relation. Ranked by the "
        "r of first differences (do the metric's task-to-task changes go with accuracy's?), "
        "the first is "
        + ", ".join(f"`{m}` in {c}" for m, c in top_head.items())
        + f"; `weight_magnitude`'s interval covers 0 in {weight_zero} of {len(settings)} settings. "
        f"Log NC1's changes go against accuracy's (interval below 0) in {nc1_negative} of "
        f"{len(settings)} settings.\n\n"
        f"**What these data support.** On Fashion-MNIST, the per-task mean NC1 goes against "
        f"mean accuracy in both conventions in {both_negative} of {len(settings)} settings (r of "
        f"levels below 0), most closely on a log scale (r of log NC1 {log_range}). Effective "
        f"rank's changes track accuracy's more closely than log NC1's in {rank_wins} of "
        f"{len(settings)} settings. **What they do not.** They are means over "
        "5 seeds with the seeds gone: no interval here says how much a seed changes any of "
        "this, no across-run statistic can be computed, and the paper's headline, r of the "
        "arithmetic per-task means of `nc1_pinv`, cannot be recomputed (summary.csv holds the "
        "geometric mean). This run cannot tell whether MNIST gives the paper's r with this "
        "code: MNIST could not be downloaded here."
    )


def report(summary: pd.DataFrame, board: pd.DataFrame, prov: dict[str, str]) -> str:
    settings = sorted(summary["first_task_epochs"].unique())
    tasks = int(summary["task"].max()) + 1
    seeds = int(summary["seeds"].min())
    last = MAX_TASKS - 1
    return f"""# Permuted Fashion-MNIST, the authors' full protocol: {len(settings)} first-task settings × {seeds} seeds × {tasks} tasks

**What this is.** Setup A of the paper with the authors' protocol
([docs/paper.md](../../paper.md)): a 784-100-100-100-10 ReLU MLP, plain SGD at lr 0.01,
batch size 1, pixel permutations composed task after task, samples shuffled once per task,
the first task trained for E ∈ {{{", ".join(f"{e:g}" for e in settings)}}} epochs (its accuracy the
mean over its epochs). NC1–NC4 are measured after every task on the task's training
images. The data set is **Fashion-MNIST**, not the paper's MNIST (this machine had no
internet), so nothing below is a difference from the paper.

**What the committed data are.** `summary.csv`: per setting and task, the means over the
{seeds} seeds (geometric means for both NC1 conventions and `sigma_b_condition`). The run
folders were not committed. Each setting is therefore one series of per-task means, and
every interval below is a Newey-West (HAC) interval on that one series
([docs/statistics.md](../../statistics.md)); there is no p-value and no interval over seeds.

## Command, machine, wall time

{commands_block("permuted_fashion", prov)}

- Machine: {prov["machine"]}
- Wall time: {prov["wall_time"]}
- Code: commit {prov["commit"]}.

## The paper's numbers beside these (not like for like: another data set)

{paper_table(summary, board)}

{settings_table(summary, board)}

## NC1 in both conventions, and the collapse companions

![NC1 (geometric mean over seeds) in both conventions and PL per task](permuted_nc1_pl.png)

Per metric and E: the paper's convention (r of the per-task means with mean accuracy, tasks
0–{last}) / the r of their first differences, each with its Newey-West 95% interval
(n = {last + 1} tasks, one series of means).

{nc1_table(board)}

![Per-task NC1 vs accuracy on a log axis, with the r of log NC1](permuted_nc1_vs_accuracy.png)

## Which metric tracks accuracy

`metric_ranking.csv` holds every statistic of the leaderboard (docs/statistics.md) for the
metrics summary.csv has, per setting, tasks 0–{last}; aliases would be listed once. The
earlier ranking of 33–34 recorded names came from the run folders and cannot be recomputed.

{ranking_table(board)}

**Reading.** {reading(summary, board)}
"""


def figures(summary: pd.DataFrame, board: pd.DataFrame, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted(summary["first_task_epochs"].unique())
    seeds = int(summary["seeds"].min())
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(settings)))
    panels = (
        ("nc1_geomean", "NC1, exact [nc1]", True),
        ("nc1_pinv_geomean", "NC1, authors' pinv [nc1_pinv]", True),
        ("pl", "PL = acc(0) - acc(i)", False),
    )
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, (column, label, log) in zip(axes, panels, strict=True):
        for e, colour in zip(settings, colours, strict=True):
            part = summary[summary["first_task_epochs"] == e]
            ax.plot(part["task"], part[column], color=colour, lw=0.9, label=f"E = {e:g}")
        ax.set_yscale("log" if log else "linear")
        ax.set_xlabel("task")
        ax.set_ylabel(label)
    axes[-1].legend(fontsize=7)
    fig.suptitle(
        f"Permuted Fashion-MNIST: per-task means over n = {seeds} seeds per setting (NC1: geometric mean); no band: the seeds are not committed",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out / FIGURES[0], dpi=110, metadata={"Software": None})
    plt.close(fig)

    shown = [e for e in settings if e in SHOWN_E]
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.4), sharey=True)
    for ax, e in zip(axes, shown, strict=True):
        part = summary[(summary["first_task_epochs"] == e) & (summary["task"] <= MAX_TASKS - 1)]
        ax.scatter(part["nc1_geomean"], part["accuracy"], s=6, c=part["task"], cmap="viridis")
        ax.set_xscale("log")
        ax.set_xlabel("NC1 [nc1], geometric mean over seeds (log axis)")
        ax.set_title(
            f"E = {e:g}: r(log NC1, acc) = {cell(board, e, 'log_nc1', CONVENTION)}", fontsize=8
        )
    axes[0].set_ylabel("online accuracy, mean over seeds")
    fig.suptitle(
        f"Per-task means, tasks 0-{MAX_TASKS - 1} (n = {MAX_TASKS} tasks, {seeds} seeds each; colour: task); r on log NC1, as drawn, with its Newey-West 95% interval",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out / FIGURES[1], dpi=110, metadata={"Software": None})
    plt.close(fig)


def main(*args: str) -> None:
    out, draw = render_target(args, HERE)
    summary, prov = load()
    board = ranking(summary)
    board.to_csv(out / "metric_ranking.csv", index=False, float_format="%.6g")
    (out / "report.md").write_text(report(summary, board, prov))
    if draw:
        figures(summary, board, out)
    print(out / "report.md")


if __name__ == "__main__":
    main(*sys.argv[1:])
