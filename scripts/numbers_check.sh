#!/usr/bin/env bash
# Small runs of every online quick preset (with remedies), to check that a refactoring moves
# no number: run it at the commit before and after, then compare the two folders:
#
#   git worktree add /tmp/before <commit>
#   scripts/numbers_check.sh /tmp/before /tmp/numbers_before
#   scripts/numbers_check.sh "$PWD" /tmp/numbers_after
#   python scripts/compare_runs.py /tmp/numbers_before /tmp/numbers_after
#
# REPO is the checkout whose src/ runs; OUT the folder for the run folders. PYTHON (default
# .venv/bin/python of this checkout) must have the package's dependencies.
set -u
REPO=$(cd "$1" && pwd); OUT=$2
PYTHON=${PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
cd "$REPO"
PC="env PYTHONPATH=$REPO/src $PYTHON -m plasticollapse"
common="--seeds 0 --progress false --backend serial"
$PC permuted --config quick/permuted_digits --tasks 5 $common --out "$OUT/permuted"
$PC permuted --config quick/permuted_digits --tasks 4 --first_task_epochs 1 --remedies cbp l2_init --cbp_replacement_rate 1e-3 --cbp_maturity 50 $common --out "$OUT/permuted"
$PC permuted --config quick/permuted_digits --tasks 4 --first_task_epochs 1 --remedies shrink_perturb redo $common --out "$OUT/permuted"
$PC random_labels --config quick/random_labels --tasks 3 --epochs_per_task 8 $common --out "$OUT/random_labels"
$PC random_labels --config quick/random_labels --tasks 3 --epochs_per_task 8 --remedies l2_init redo $common --out "$OUT/random_labels"
$PC label_permuted --config quick/label_permuted --tasks 8 $common --out "$OUT/label_permuted"
$PC label_permuted --config quick/label_permuted --tasks 6 --remedies cbp --cbp_replacement_rate 1e-3 --cbp_maturity 50 $common --out "$OUT/label_permuted"
$PC class_incremental --config quick/class_incremental --tasks 3 --epochs_per_task 4 $common --out "$OUT/class_incremental"
$PC class_incremental --config quick/class_incremental --tasks 3 --epochs_per_task 4 --remedies shrink_perturb $common --out "$OUT/class_incremental"
$PC bitflip_regression --config quick/bitflip_regression --tasks 8 $common --out "$OUT/bitflip"
$PC bitflip_regression --config quick/bitflip_regression --tasks 6 --remedies l2_init shrink_perturb $common --out "$OUT/bitflip"
$PC bitflip_regression --config quick/bitflip_regression --tasks 6 --remedies redo $common --out "$OUT/bitflip"
