"""Compare the metrics.jsonl rows of two sets of run folders, wall-clock fields aside.

    python scripts/compare_runs.py BEFORE_DIR AFTER_DIR [--ignore seconds ...]
    python scripts/compare_runs.py BEFORE_DIR AFTER_DIR --rtol 1e-4 --exact accuracy loss
    python scripts/compare_runs.py HOST_A_DIR HOST_B_DIR --statistics accuracy nc1 ...

Runs are matched by (study, label, seed) read from each folder's config.json, so folder
names (their config hash) may differ. Prints one line per run and exits 1 on any difference.
Used to check that a refactoring moves no number (issue: one seam for studies and remedies).

With ``--rtol``, two numbers count as equal when |a - b| <= rtol max(|a|, |b|) (NaN equals
NaN), except the keys named by ``--exact``: for a change that measures in another summation
order but trains the same (e.g. issue 19's one-sweep measuring, rtol 1e-4 with the training
keys exact).

Across CPU types rows are not identical (docs/reproducibility.md): with ``--statistics``,
it also prints, for each setting and metric, the mean over a run's rows averaged over
seeds in both sets, their difference with a 95% bootstrap interval over seeds (a seed's
two runs resampled together), and the spread of the seeds; it then exits 1 only when more
intervals exclude 0 than chance would make (the binomial count's 99th percentile).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

#: Keys that hold wall-clock time: they differ between any two runs.
WALL_CLOCK = ("seconds",)


def runs(root: Path) -> dict[tuple, list[dict]]:
    found = {}
    for config_path in sorted(root.rglob("config.json")):
        config = json.loads(config_path.read_text())
        label = config_path.parent.name.rsplit("_", 1)[0]  # <label>_seed<k>
        rows = [json.loads(line) for line in (config_path.parent / "metrics.jsonl").open()]
        found[(config.get("experiment"), label)] = rows
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--ignore", nargs="*", default=list(WALL_CLOCK))
    parser.add_argument("--rtol", type=float, default=0.0, help="relative tolerance of numbers")
    parser.add_argument("--exact", nargs="*", default=[], help="keys compared exactly")
    parser.add_argument(
        "--statistics",
        nargs="+",
        metavar="METRIC",
        help="compare seed statistics of these metrics instead of asking for identical rows",
    )
    args = parser.parse_args()
    before, after = runs(args.before), runs(args.after)
    if set(before) != set(after):
        print(
            f"different runs: only before {set(before) - set(after)}, "
            f"only after {set(after) - set(before)}"
        )
        return 1
    bad = 0
    for key in sorted(before):
        a = [{k: v for k, v in r.items() if k not in args.ignore} for r in before[key]]
        b = [{k: v for k, v in r.items() if k not in args.ignore} for r in after[key]]
        identical = a == b
        same = identical or rows_close(a, b, args.rtol, set(args.exact))
        bad += not same
        diff = (
            ""
            if same
            else next(
                f"row {i}: {sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))[:6]}"
                for i, (x, y) in enumerate(zip(a, b, strict=False))
                if x != y
            )
            if len(a) == len(b)
            else f"{len(a)} vs {len(b)} rows"
        )
        status = "identical" if identical else "close" if same else "DIFFERENT"
        if not same and args.statistics:  # where each compared metric first differs
            diff = ", ".join(f"{m} from row {first_difference(a, b, m)}" for m in args.statistics)
        print(f"{status:<10} {key[0]}/{key[1]} ({len(a)} rows) {diff}")
    within = f", numbers within rtol {args.rtol:g}" if args.rtol > 0 else ""
    print(f"{len(before) - bad} of {len(before)} runs the same (ignoring {args.ignore}{within})")
    if args.statistics:
        return compare_statistics(before, after, args.statistics)
    return 1 if bad else 0


def close(x, y, rtol: float) -> bool:
    """x == y, or both numbers within rtol of the larger magnitude, or both NaN."""
    if x == y:
        return True
    numbers = (int, float)
    if not (isinstance(x, numbers) and isinstance(y, numbers)) or isinstance(x, bool):
        return False
    if np.isnan(x) and np.isnan(y):
        return True
    return abs(x - y) <= rtol * max(abs(x), abs(y))


def rows_close(a: list[dict], b: list[dict], rtol: float, exact: set[str]) -> bool:
    """Whether two runs' rows have the same keys and values equal within ``rtol`` (the
    ``exact`` keys equal)."""
    if rtol <= 0 or len(a) != len(b):
        return False
    return all(
        set(x) == set(y) and all(close(x[k], y[k], 0.0 if k in exact else rtol) for k in x)
        for x, y in zip(a, b, strict=True)
    )


def first_difference(a: list[dict], b: list[dict], metric: str) -> int | None:
    """The first row whose ``metric`` differs between two runs (None: it never does)."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x.get(metric) != y.get(metric):
            return i
    return None


def run_mean(rows: list[dict], metric: str) -> float:
    values = [r[metric] for r in rows if isinstance(r.get(metric), (int, float))]
    return float(np.mean(values)) if values else float("nan")


def bootstrap_interval(diffs: np.ndarray, draws: int = 10_000, seed: int = 0) -> tuple:
    """The 2.5% and 97.5% quantiles of the mean of ``diffs`` resampled with replacement
    (one difference per seed: a seed's two runs go together)."""
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), (draws, len(diffs)))].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def compare_statistics(before: dict, after: dict, metrics: list[str]) -> int:
    """Per setting (a label without its seed) and metric: seed means, their paired
    difference with its seed-bootstrap interval, and the seeds' spread."""
    settings: dict[tuple, list[tuple]] = {}
    for key in before:
        study, label = key
        settings.setdefault((study, re.sub(r"_?seed\d+$", "", label)), []).append(key)
    excluded = compared = 0
    print(
        f"{'setting':<28} {'metric':<16} {'n':>2} {'mean A':>9} {'mean B':>9} "
        f"{'B - A [95% CI]':>28} {'seed sd':>8}"
    )
    for (_study, setting), keys in sorted(settings.items()):
        for metric in metrics:
            a = np.array([run_mean(before[k], metric) for k in keys])
            b = np.array([run_mean(after[k], metric) for k in keys])
            if not np.isfinite(a).all() or not np.isfinite(b).all():
                continue
            diffs = b - a
            low, high = bootstrap_interval(diffs) if len(keys) > 1 else (np.nan, np.nan)
            excluded += bool(low > 0 or high < 0)
            compared += 1
            spread = float(np.std(a, ddof=1)) if len(keys) > 1 else float("nan")
            print(
                f"{setting:<28} {metric:<16} {len(keys):>2} {a.mean():>9.4f} {b.mean():>9.4f} "
                f"{diffs.mean():>+10.5f} [{low:+.5f}, {high:+.5f}] {spread:>8.4f}"
            )
    # Of k independent 95% intervals about 5% exclude 0 by chance: flag only more than the
    # 99th percentile of that binomial count.
    from scipy.stats import binom

    limit = int(binom.ppf(0.99, compared, 0.05))
    print(
        f"{excluded} of {compared} intervals exclude 0 (by chance alone: about "
        f"{0.05 * compared:.1f}, at most {limit} in 99% of comparisons)"
    )
    return 1 if excluded > limit else 0


if __name__ == "__main__":
    sys.exit(main())
