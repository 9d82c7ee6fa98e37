"""Render docs/results/matrix/README.md and its heatmap from the committed CSVs alone.

    PYTHONPATH=src python docs/results/matrix/render.py [OUT_DIR]

Reads, from this folder, matrix.csv (one row per study x remedy: means, seed-bootstrap
intervals, paired differences from plain), correlations.csv (per study, collapse against
performance across remedies, with the leave-one-remedy-out range), runs.csv (each run's
final values) and run.json (the command, commit, machine and times of the call that made
them), and writes README.md and matrix_heatmap.png to OUT_DIR (default: this folder).
Every number in the README is read from those files; tests/test_published_matrix.py
renders again and fails when the committed README differs.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd

from plasticollapse.matrix.figure import DIRECTION, METRIC_TEXT, as_flag, heatmap_figure
from plasticollapse.matrix.report import (
    HEATMAP_CAPTION,
    add_correlations,
    add_tables,
    difference_text,
    metrics_in,
    pair_text,
    r_text,
    seeds_text,
    value_text,
)
from plasticollapse.matrix.table import LOG_METRICS
from plasticollapse.report.render import Doc

HERE = Path(__file__).resolve().parent
BASELINE = "plain"
#: The outcome a study's "better or worse than plain" is read in: accuracy, else loss.
OUTCOMES = ("accuracy", "loss")
#: Collapse metrics whose difference from plain is listed beside the outcome.
COLLAPSE = ("nc1", "nrc1")


def load(folder: Path):
    table = pd.read_csv(folder / "matrix.csv", keep_default_na=True)
    table["note"] = table["note"].fillna("")
    corr = pd.read_csv(folder / "correlations.csv", dtype={"loo_low_without": str,
                                                          "loo_high_without": str})  # fmt: skip
    for column in ("loo_low_without", "loo_high_without"):
        corr[column] = corr[column].fillna("")
    runs = pd.read_csv(folder / "runs.csv")
    run = json.loads((folder / "run.json").read_text())
    return table, corr, runs, run


def duration(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s"


# =========================================================================== the verdicts


def listed(rows: pd.DataFrame, metric: str) -> str:
    """``redo +0.091 [0.080, 0.10] n=5 *, l2_init ...`` or "none"."""
    items = [f"{r['remedy']} {difference_text(r, metric)}" for _, r in rows.iterrows()]
    return "; ".join(items) or "none"


def sides(rows: pd.DataFrame, metric: str):
    """The non-baseline rows with a value whose paired difference's interval lies above 0,
    below 0, covers 0, and those without an interval (fewer than 3 seeds paired)."""
    others = rows[rows["remedy"] != BASELINE]
    others = others[others[metric].notna()]
    flag = others[f"{metric}_excludes_0"].map(as_flag)
    flagged = flag.eq(True)
    return (
        others[flagged & (others[f"{metric}_diff"] > 0)],
        others[flagged & (others[f"{metric}_diff"] < 0)],
        others[flag.eq(False)],
        others[flag.isna()],
    )


def runs_done(rows: pd.DataFrame) -> tuple[int, int]:
    """(complete, planned) runs of a study's applicable cells ("3/5" in ``runs``)."""
    applicable = rows[~rows["note"].str.startswith("not applicable")]
    counts = applicable["runs"].str.split("/", expand=True).astype(int)
    return int(counts[0].sum()), int(counts[1].sum())


def study_verdict(study: str, rows: pd.DataFrame) -> str:
    """What one study's cells show against plain, in its outcome and its collapse metric."""
    done, planned = runs_done(rows)
    missing = ""
    if done < planned:
        empty = rows[rows["runs"].str.startswith("0/") & ~rows["note"].str.startswith("not appl")]
        missing = f" Incomplete: {done} of {planned} runs"
        missing += f"; not run yet: {', '.join(empty['remedy'])}." if len(empty) else "."
    outcome = next((m for m in OUTCOMES if m in rows and rows[m].notna().any()), None)
    base = rows[rows["remedy"] == BASELINE].iloc[0]
    if outcome is None or not math.isfinite(base[outcome]):
        return f"- **{study}**: nothing to compare with {BASELINE} yet.{missing}"
    higher, lower, unclear, few = sides(rows, outcome)
    better, worse = (higher, lower) if DIRECTION[outcome] > 0 else (lower, higher)
    text = (
        f"- **{study}** ({METRIC_TEXT[outcome]}; {BASELINE} {value_text(base, outcome)}). "
        f"Better than {BASELINE}: {listed(better, outcome)}. Worse: {listed(worse, outcome)}. "
        f"Not told apart from {BASELINE}: "
        f"{', '.join(unclear['remedy']) or 'none'}."
    )
    if len(few):
        text += f" Too few seeds for an interval: {', '.join(few['remedy'])}."
    for metric in COLLAPSE:
        if metric in rows and rows[metric].notna().any():
            up, down, *_ = sides(rows, metric)
            word = "ratio" if metric in LOG_METRICS else "difference"
            text += (
                f" {METRIC_TEXT[metric]} ({BASELINE} {value_text(base, metric)}; {word} "
                f"from {BASELINE}): higher under {listed(up, metric)}; lower under "
                f"{listed(down, metric)}."
            )
    return text + missing


def correlation_verdict(row: pd.Series) -> str | None:
    """Whether an across-remedy r stands: its interval excludes 0 and no single remedy's
    removal takes it to the other side of 0 (or to |r| < 0.3)."""
    r = row["r_remedies"]
    if not math.isfinite(r):
        return None
    low, high = row["r_remedies_low"], row["r_remedies_high"]
    head = (
        f"- {row['study']}, {pair_text(row['x'], row['y'])}: r = {r_text(r)} "
        f"[{r_text(low)}, {r_text(high)}] over {row['n_remedies']} remedies, "
        f"{row['n_seeds']} seeds"
    )
    if math.isfinite(row["loo_low"]):
        head += (
            f"; leaving one out {r_text(row['loo_low'])} (without {row['loo_low_without']}) "
            f"to {r_text(row['loo_high'])} (without {row['loo_high_without']})"
        )
    if not (math.isfinite(low) and math.isfinite(high)):
        return head + ": no interval."
    if low <= 0 <= high:
        return head + ": the interval covers 0; not supported."
    if not math.isfinite(row["loo_low"]):
        return head + ": the interval excludes 0; too few remedies to leave one out."
    weakest = row["loo_high"] if r < 0 else row["loo_low"]
    without = row["loo_high_without"] if r < 0 else row["loo_low_without"]
    if weakest * r <= 0 or abs(weakest) < 0.3:
        return head + f": the interval excludes 0, but the sign rests on {without}."
    if abs(r - weakest) > 0.25:  # the sign holds, but one remedy carries much of the size
        return (
            head + f": the interval excludes 0 and the sign holds without any one remedy, but "
            f"without {without} r is only {r_text(weakest)}: much of its size rests on {without}."
        )
    return head + ": the interval excludes 0 and no single remedy makes it."


def flag_counts(table: pd.DataFrame, metrics: list[str]) -> tuple[int, int]:
    """(differences with an interval, of those whose interval excludes 0)."""
    flags = pd.concat([table[f"{m}_excludes_0"].map(as_flag) for m in metrics])
    known = flags.dropna()
    return int(len(known)), int(known.eq(True).sum())


def replaced_text(runs: pd.DataFrame) -> str:
    """Per study, the units Continual Backprop replaced in a run (runs.csv's
    ``cbp_units_replaced``, the run's total): mean over seeds, [min, max], n."""
    cbp = runs[(runs["remedy"] == "cbp") & runs["cbp_units_replaced"].notna()]
    if cbp.empty:
        return ""
    parts = []
    for study, rows in cbp.groupby("study", sort=False):
        counts = rows["cbp_units_replaced"]
        parts.append(
            f"{study} {counts.mean():.0f} [{counts.min():.0f}, {counts.max():.0f}] n={len(counts)}"
        )
    return (
        "Units Continual Backprop replaced in a run (mean over seeds [min, max], n seeds; "
        "each study's preset sets its rate to replace the fraction of units per task that "
        "it replaces at full size, from the source's rate where the source has one): "
        + "; ".join(parts)
        + "."
    )


# =========================================================================== the README


def render(out: Path, folder: Path = HERE) -> list[Path]:
    table, corr, runs, run = load(folder)
    metrics = metrics_in(table)
    remedies = list(dict.fromkeys(table["remedy"]))
    studies = list(dict.fromkeys(table["study"]))
    out.mkdir(parents=True, exist_ok=True)
    fig = heatmap_figure(table, remedies, metrics, BASELINE, run["last"])
    png = out / "matrix_heatmap.png"
    fig.savefig(png, dpi=110, bbox_inches="tight", metadata={"Software": None})

    done = runs[runs["status"].isin(["complete", "diverged"])]
    refused = runs[runs["status"] == "not_applicable"]
    seeds = sorted(done["seed"].dropna().astype(int).unique())
    tested, flagged = flag_counts(table, metrics)
    doc = Doc()
    doc.h(1, "The quick study x remedy matrix")
    doc.p(
        f"Preset `{run['preset']}`: {len(studies)} studies ({', '.join(studies)}) x "
        f"{len(remedies)} settings ({', '.join(remedies)}) x {len(seeds)} seeds "
        f"({', '.join(map(str, seeds))}): {len(done)} runs complete of {len(runs)} cells "
        f"({len(refused)} not applicable: "
        f"{'; '.join(sorted(set(refused['study'] + ' ' + refused['remedy'])))}). The "
        "studies' sizes are the preset's (reduced; see its comments)."
    )
    doc.p(
        "Files: [matrix.csv](matrix.csv) (one row per study x remedy), "
        "[correlations.csv](correlations.csv), [runs.csv](runs.csv) (each run's final values), "
        "[run.json](run.json) (how they were made), [matrix_heatmap.png](matrix_heatmap.png); "
        "this README and the heatmap are rendered from them by "
        "`PYTHONPATH=src python docs/results/matrix/render.py`."
    )
    doc.h(2, "How it was run")
    doc.p(f"```\n{run['command']}\n```")
    doc.p(
        f"Commit {run['commit']}; {run['machine']}, {run['cores']} cores (load average "
        f"{run['load']} while it ran). Wall time until the files were written "
        f"{duration(run['wall_s'])}; the {run['runs_timed']} runs' own times (one thread each) "
        f"sum to {duration(run['runs_s'])}. {run['note']}"
    )
    if replaced := replaced_text(runs):
        doc.p(replaced)
    doc.h(2, "What the data support, and what they do not")
    doc.p(
        f"Against {BASELINE}, paired by seed, in each study's outcome (a difference is "
        f"listed as better or worse only when its 95% seed-bootstrap interval excludes 0; "
        f"n = {len(seeds)} seeds):"
    )
    doc.p("\n".join(study_verdict(s, table[table["study"] == s]) for s in studies))
    doc.p(
        f"Of the {tested} differences from {BASELINE} that have an interval (every study, "
        f"remedy and key), {flagged} exclude 0. They are not independent tests, and with "
        f"{len(seeds)} seeds a percentile interval is too narrow (it holds the true mean "
        "less often than 95%): a lone * in a key where the remedy has no mechanism is weak "
        "evidence. Differences of several keys in one direction, and the outcome's, are the "
        "ones to read."
    )
    verdicts = [v for v in (correlation_verdict(r) for _, r in corr.iterrows()) if v]
    doc.p("Collapse against performance across remedies (Pearson r of the per-remedy means):")
    doc.p("\n".join(verdicts) or "(no correlation defined)")
    doc.p(
        "What they do not support: (1) an across-remedy r is a statement about these few "
        "remedies at these sizes, one point per remedy; it is not the paper's r over the "
        "tasks of one run, and it is not evidence that collapse causes the loss of "
        "plasticity (a remedy moves both). (2) The studies run on scikit-learn digits and a "
        "small regression stream at reduced sizes; nothing here transfers to MNIST or "
        "Fashion-MNIST at the papers' sizes without running them (`full/matrix`). (3) "
        "Remedies run at their default parameters, untuned per study (Continual "
        "Backprop's rate is set per study from its source's where it has one, scaled to "
        "the tasks' lengths, never from these outcomes): a remedy that is worse than plain "
        "here may be mis-set, not useless. "
        "(4) With "
        f"{len(seeds)} seeds an interval that covers 0 is not evidence of no effect: it is "
        "an effect, if any, that these runs cannot tell from seed noise."
    )
    doc.h(2, "The table")
    add_tables(doc, table, corr, metrics, BASELINE, run["last"])
    doc.img(png, HEATMAP_CAPTION.format(baseline=BASELINE, n=seeds_text(table)))
    doc.h(2, "Collapse against performance across remedies")
    add_correlations(doc, corr)
    readme = out / "README.md"
    readme.write_text(doc.markdown(out))
    return [readme, png]


if __name__ == "__main__":
    for path in render(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(path)
