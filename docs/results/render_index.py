# ruff: noqa: E501  (the index template keeps its Markdown lines whole)
"""docs/results/README.md, the index of the published results, from the folders' CSVs.

    PYTHONPATH=src python docs/results/render_index.py [OUT_DIR]

What each folder ran (settings, seeds, tasks, runs) is read from its committed CSVs and
presets, never typed here, so the index cannot drift from the folders.
tests/test_published_results.py fails when the committed README.md differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import tomllib

import plasticollapse
from plasticollapse.report.render import render_target

HERE = Path(__file__).parent
PRESETS = Path(plasticollapse.__file__).parent / "presets"


def permuted_row() -> str:
    s = pd.read_csv(HERE / "permuted_fashion" / "summary.csv")
    settings, seeds = s["first_task_epochs"].nunique(), int(s["seeds"].min())
    tasks = int(s["task"].max()) + 1
    return f"{settings} first-task settings × {seeds} seeds × {tasks} tasks ({settings * seeds} runs; means over seeds committed)"


def threshold_row() -> str:
    runs = pd.read_csv(HERE / "nc_threshold_fashion" / "runs.csv", keep_default_na=False)
    distinct = runs[(runs["duplicate_of"] == "") & (runs["reached"].astype(str) == "True")]
    return (
        f"{runs['nc1_threshold'].nunique()} thresholds × {runs['seed'].nunique()} seeds: "
        f"{len(runs)} run folders, {len(distinct)} distinct runs"
    )


def warmstart_row() -> str:
    s = pd.read_csv(HERE / "warmstart_fashion" / "summary.csv")
    schemes = " and ".join(
        {"plain": "plain", "shrink_perturb": "Shrink & Perturb"}.get(x, x)
        for x in dict.fromkeys(s["scheme"])
    )
    seeds = ", ".join(str(x) for x in sorted(s["seed"].unique()))
    return f"{schemes}, seed {seeds}, {s.groupby('scheme').size().iloc[0]} checkpoints"


def warmstart_seeds_row() -> str:
    s = pd.read_csv(HERE / "warmstart_seeds" / "summary.csv")
    names = {"plain": "plain", "shrink_perturb": "S&P", "nc1_reg": "NC1 regulariser"}
    present = list(dict.fromkeys(s["scheme"]))
    ordered = [x for x in names if x in present] + sorted(x for x in present if x not in names)
    schemes = ", ".join(
        names.get(x, x.replace("weight_decay_wd", "weight decay ")) for x in ordered
    )
    return f"{schemes}; {s['seed'].nunique()} seeds, {len(s)} runs, {int(s['checkpoints'].max())} checkpoints each"


def remedies_row() -> str:
    s = pd.read_csv(HERE / "online_remedies" / "summary.csv")
    preset = tomllib.loads((PRESETS / "quick" / "permuted_remedies.toml").read_text())
    return f"{len(s)} settings, {preset['tasks']} tasks, {len(preset['seeds'])} seeds"


def index() -> str:
    return f"""# Published reproductions

Small files only. Each folder has a report (exact command, machine, wall time, what was
and was not run), its figures and the CSVs they are rendered from: each report is written
by the folder's `render.py` from its CSVs, and `tests/test_published_results.py` fails
when a committed report differs from what its script writes. Everything was run on a
2-core CPU VM with no GPU and no internet. So the data sets are Fashion-MNIST (installed
from Debian's `dataset-fashion-mnist`) and scikit-learn's digits. The paper's MNIST and
CIFAR-10 are not used, and no comparison with the paper's numbers is made as a difference.
Statistics follow [docs/statistics.md](../statistics.md): intervals over seeds (or
Newey-West on a single series), each with its n, and no p-value from an autocorrelated n.

| folder | what | run |
|---|---|---|
| [permuted_fashion](permuted_fashion/report.md) | Setup A, the authors' full protocol, on Fashion-MNIST: NC1 in both conventions, the metrics ranked by detrended r | {permuted_row()} |
| [nc_threshold_fashion](nc_threshold_fashion/report.md) | the NC-threshold variant: across-run r with intervals over seeds, acc_0 separated from later accuracy, and the authors' per-task analysis | {threshold_row()} |
| [warmstart_fashion](warmstart_fashion/report.md) | Setup B at the paper's lr 1e-3, scaled down to a CPU (ResNet-18 width 8) | {warmstart_row()} |
| [warmstart_seeds](warmstart_seeds/report.md) | Setup B with seeds at CPU scale (ResNet-18 width 4, 500 images, lr 0.05): accuracy per scheme with seed intervals, per-seed and sliding-window r, claims (b) and (c) checked | {warmstart_seeds_row()} |
| [online_remedies](online_remedies/README.md) | plain vs Continual Backprop, L2 Init, Shrink & Perturb and resets on Permuted Fashion-MNIST, and the remedies' speed in the compiled engine | {remedies_row()} |
| [matrix](matrix/README.md) | every online study × every remedy on digits (`quick/matrix`) | see its README |

Not run here, for want of a GPU and of the downloads: the paper's MNIST (`plasticollapse
sweep paper/permuted_mnist`) and its CIFAR-10 warm start at full width
(`plasticollapse warmstart --config paper/warmstart_cifar10`).
"""


def main(*args: str) -> None:
    out, _ = render_target(args, HERE)
    (out / "README.md").write_text(index())
    print(out / "README.md")


if __name__ == "__main__":
    main(*sys.argv[1:])
