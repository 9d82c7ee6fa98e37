"""Compare the metrics.jsonl rows of two sets of run folders, wall-clock fields aside.

    python scripts/compare_runs.py BEFORE_DIR AFTER_DIR [--ignore seconds ...]

Runs are matched by (study, label, seed) read from each folder's config.json, so folder
names (their config hash) may differ. Prints one line per run and exits 1 on any difference.
Used to check that a refactoring moves no number (issue: one seam for studies and remedies).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
        same = a == b
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
        status = "identical" if same else "DIFFERENT"
        print(f"{status:<10} {key[0]}/{key[1]} ({len(a)} rows) {diff}")
    print(f"{len(before) - bad} of {len(before)} runs identical (ignoring {args.ignore})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
