# ruff: noqa: E501  (the report template keeps its Markdown lines whole)
"""README.md of docs/results/online_remedies, from its CSVs and the preset it ran.

    PYTHONPATH=src python docs/results/online_remedies/render.py [OUT_DIR] [--no-figures]

Every number comes from summary.csv (per setting, means over seeds; ``figure.py`` writes
it and the figure from the run folders), speed.csv (the remedies' benchmark), the preset
``quick/permuted_remedies`` (tasks, seeds) and provenance.csv (command, machine, wall
time, the benchmark's record). The figure is drawn by figure.py from the runs, so
``--no-figures`` changes nothing here. tests/test_published_results.py fails when the
committed README.md differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import tomllib

import plasticollapse
from plasticollapse.report.render import render_target
from plasticollapse.studies.permuted.report import PAPER_NUMBERS

HERE = Path(__file__).parent
PRESET = Path(plasticollapse.__file__).parent / "presets" / "quick" / "permuted_remedies.toml"


def load(folder: Path = HERE):
    summary = pd.read_csv(folder / "summary.csv").set_index("setting")
    speed = pd.read_csv(folder / "speed.csv", keep_default_na=False)
    provenance = pd.read_csv(folder / "provenance.csv", keep_default_na=False)
    preset = tomllib.loads(PRESET.read_text())
    return summary, speed, dict(zip(provenance["key"], provenance["value"], strict=True)), preset


def pts(v: float) -> str:
    return f"{100 * v:+.1f} pts"


def results_table(s: pd.DataFrame) -> str:
    lines = [
        "| setting | acc task 0 | acc tasks 1-10 | acc last 10 | change | NC1 median, tasks 1-10 | NC1 median, last 10 | Tr Σ_W / Tr Σ_B, last 10 | dead units of the last hidden layer, last 10 | s / task | CBP units replaced / task |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in s.iterrows():
        cbp = (
            "–"
            if pd.isna(r.cbp_units_replaced_per_task)
            else f"{r.cbp_units_replaced_per_task:.0f}"
        )
        lines.append(
            f"| {name} | {r.acc_task0:.3f} | {r.acc_tasks1_10:.3f} | {r.acc_last10:.3f} | {pts(r.acc_change)} "
            f"| {r.nc1_median_tasks1_10:.2f} | {r.nc1_median_last10:.3g} | {r.nc1_quotient_last10:.3f} "
            f"| {100 * r.dead_fraction_layer3_last10:.1f} % | {r.seconds_per_task:.2f} | {cbp} |"
        )
    return "\n".join(lines)


def speed_table(speed: pd.DataFrame) -> str:
    lines = [
        "| remedy | synthetic MNIST-like (79 % zeros) | ratio (before) | Fashion-MNIST (50 % zeros) | ratio (before) | target |",
        "|---|---|---|---|---|---|",
    ]

    def ratio(now, before):
        return f"{float(now):.2f}" + (f" ({float(before):.2f})" if before != "" else "")

    def target(r):
        if not r.target:
            return ""
        least = float(r.target.split()[-1])
        met = [float(r.mnist_like_ratio) >= least, float(r.fashion_ratio) >= least]
        if all(met):
            return f"{r.target}: met"
        if met[0]:
            return f"{r.target}: met on MNIST-like, not on Fashion-MNIST"
        return f"{r.target}: not met"

    for r in speed.itertuples(index=False):
        lines.append(
            f"| {r.remedy} | {int(r.mnist_like_updates_per_s):,} | {ratio(r.mnist_like_ratio, r.mnist_like_ratio_before)} "
            f"| {int(r.fashion_updates_per_s):,} | {ratio(r.fashion_ratio, r.fashion_ratio_before)} | {target(r)} |"
        )
    return "\n".join(lines)


def shows(s: pd.DataFrame) -> str:
    plain, reset = s.loc["plain"], s.loc["reset_all"]
    remedies = s.drop(index="plain")
    low, high = (
        remedies[["nc1_median_tasks1_10", "nc1_median_last10"]].min().min(),
        remedies[["nc1_median_tasks1_10", "nc1_median_last10"]].max().max(),
    )
    slow, fast = s.loc["cbp (rate 1e-6)"], s.loc["cbp (rate 1e-5)"]
    sp, l2 = s.loc["shrink_perturb"], s.loc["l2_init"]
    dead_free = [
        n
        for n, r in remedies.iterrows()
        if r.dead_fraction_layer3_last10 == 0 and n.startswith(("cbp", "l2"))
    ]
    quotients = remedies["nc1_quotient_last10"]
    return f"""- **Plain SGD loses plasticity**: online accuracy falls from {plain.acc_tasks1_10:.3f} (tasks 1-10) to
  {plain.acc_last10:.3f} (last 10 tasks), {pts(plain.acc_change)}; by the end {100 * plain.dead_fraction_layer3_last10:.0f} % of the
  last hidden layer's units are dead (never fire on the task's images) and NC1's median
  rises from {plain.nc1_median_tasks1_10:.2f} to {plain.nc1_median_last10:.3g}.
- **Continual Backprop and L2 Init keep online accuracy where plain loses it**, as
  Dohare et al. (2024) and Kumar et al. (2023) report: CBP at Dohare et al.'s rate (1e-6:
  {slow.cbp_units_replaced_per_task:.0f} units replaced per task) changes by {pts(slow.acc_change)} from tasks 1-10 to the last 10, at
  1e-5 ({fast.cbp_units_replaced_per_task:.0f} units per task) by {pts(fast.acc_change)}, and L2 Init by {pts(l2.acc_change)}.
  {", ".join(dead_free)} have no dead unit in the last 10 tasks.
- **A fresh network at every task** (reset_all) learns each task to {reset.acc_last10:.3f} over the last 10:
  CBP at 1e-5 is {100 * (fast.acc_last10 - reset.acc_last10):+.1f} points from it, L2 Init {100 * (l2.acc_last10 - reset.acc_last10):+.1f}, CBP at 1e-6
  {100 * (slow.acc_last10 - reset.acc_last10):+.1f}, and Shrink & Perturb {100 * (sp.acc_last10 - reset.acc_last10):+.1f} ({pts(sp.acc_change)} from tasks 1-10 to the last 10).
- **NC1**: with every remedy NC1's median stays within {low:.2f}-{high:.2f} in both windows, while
  plain's rises with its loss of plasticity: across these {len(s)} settings, keeping plasticity
  goes with NC1 not rising, the direction of the paper's negative r(NC1, accuracy). The
  trace ratio Tr Σ_W / Tr Σ_B does not follow: plain ends at {plain.nc1_quotient_last10:.2f} against
  {quotients.min():.2f}-{quotients.max():.2f} for the remedies, so which collapse measure one reads matters once
  units die. This is {len(s)} settings of {int(s["seeds"].min())} seeds each: a direction, not a statistic."""


def paper_text() -> str:
    by = {(n.kind, n.params.get("metric"), n.params.get("tasks")): n.value for n in PAPER_NUMBERS}
    return (
        f"accuracy {by[('value', 'accuracy', (0, 0))]:g} to about {by[('value', 'accuracy', (130, 139))]:g} over 140 tasks, "
        f"NC1 in the authors' convention {by[('value', 'nc1_pinv', (0, 0))]:g} to {by[('value', 'nc1_pinv', (130, 139))]:g}"
    )


def readme(s: pd.DataFrame, speed: pd.DataFrame, prov: dict[str, str], preset: dict) -> str:
    seeds = preset["seeds"]
    return f"""# Online remedies on Permuted Fashion-MNIST

Plain SGD against Continual Backprop, L2 Init, Shrink & Perturb and a fresh network at
every task, on Setup A's protocol (docs/paper.md) with Fashion-MNIST instead of MNIST:
an MLP 784-100-100-100-10 (Kaiming-uniform, zero biases), SGD lr 0.01, batch size 1, each
task one epoch over all the training images with a fresh composed pixel permutation,
online (prequential) accuracy, NC1-NC4 and plasticity metrics measured on the task's
images after each task. **{preset["tasks"]} tasks, seeds {" and ".join(str(x) for x in seeds)}**, {len(s)} settings, all trained in
the compiled fast engine (every remedy here runs in it).

![online accuracy and NC1 per task](online_remedies.png)

## What was run

```bash
{prov["command"]}
PYTHONPATH=src python docs/results/online_remedies/render.py            # this README
```

(`plasticollapse` is `python -m plasticollapse` with `PYTHONPATH=src`.) The preset
`quick/permuted_remedies` holds every other setting:

| setting | parameters |
|---|---|
| plain | no remedy |
| cbp (rate 1e-6) | Continual Backprop as Dohare et al.'s Permuted MNIST setting (lop/permuted_mnist/cfg/cbp.json of github.com/shibhansh/loss-of-plasticity): adaptable-contribution utility, decay 0.99, maturity 100 steps, replacement rate 1e-6 per unit and step (the one their figure plots, of 1e-4, 1e-5, 1e-6) |
| cbp (rate 1e-5) | the same with replacement rate 1e-5 |
| l2_init | L2 Init (Kumar et al. 2023), lambda 1e-3 |
| shrink_perturb | theta <- 0.6 theta + 0.01 theta_fresh at every task start (Ash & Adams' values) |
| reset_all | a freshly initialised network at every task start: the plasticity of a new network |

{prov["pilot"]}

**Machine**: {prov["machine"]}. **Wall time**: {prov["wall_time"]}

## Results

Means over the {int(s["seeds"].min())} seeds (summary.csv; the figure's band is the range of the seeds).
Accuracy is the online accuracy of a task; "change" is last 10 tasks minus tasks 1-10.
NC1 is Tr(Σ_W Σ_B⁺)/C in the exact convention (docs/paper.md), as a median over the
window: where units die and Σ_B becomes ill-conditioned it spikes into the thousands on
single tasks (figure, right). With {int(s["seeds"].min())} seeds there is no interval over seeds.

{results_table(s)}

(s / task: wall seconds per task, training and measuring, two runs sharing the two cores,
under load from other jobs.)

## What it shows

{shows(s)}

Not like-for-like with the papers, so no numbers are compared: the paper
(docs/paper.md) reports Permuted MNIST ({paper_text()}), and Dohare et al. plot Permuted
MNIST with 2000-unit layers at lr 0.003 over 800 tasks.

## Speed of the remedies in the compiled engine (speed.csv)

{prov["speed_command"]}

{speed_table(speed)}

{prov["speed_notes"]}
"""


def main(*args: str) -> None:
    out, _ = render_target(args, HERE)
    (out / "README.md").write_text(readme(*load()))
    print(out / "README.md")


if __name__ == "__main__":
    main(*sys.argv[1:])
