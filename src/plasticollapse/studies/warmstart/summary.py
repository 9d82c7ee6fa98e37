"""What a warm-start run and study come to: summary.json and the text table after a sweep."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from plasticollapse.runs.folder import DivergenceError, RunFolder
from plasticollapse.studies.common import finite, fmt, mean_finite, pearson
from plasticollapse.studies.warmstart.config import Config, run_label


def summarise_run(
    rows: list[dict[str, Any]],
    fresh: Mapping[str, Any] | None,
    seconds: float,
    divergence: DivergenceError | None = None,
) -> dict[str, Any]:
    """summary.json: the fresh-init baseline, final values, correlations, status.

    ``r_nc1_full_test_acc`` is the Pearson r of NC1 vs full-data test accuracy across this
    run's checkpoints (the paper: +0.85 to +0.89), ``r_nc1_full_test_acc_first100`` the same
    over warm-up epochs <= 100 (+0.88 to +0.92). ``warmstart_gap`` is the last checkpoint's
    full-data test accuracy minus the fresh network's; ``mean_warmstart_gap`` the mean of
    that difference over checkpoints. With Continual Backprop, ``cbp_units_replaced`` is
    the units it replaced over the rows' warm-up epochs.
    """
    measured = [r for r in rows if r.get("full_test_acc") is not None]
    early = [r for r in measured if r["epoch"] <= 100]
    fresh = fresh or {}
    fresh_acc = fresh.get("full_test_acc")
    last = measured[-1] if measured else {}

    def gap(acc: Any) -> float | None:
        return acc - fresh_acc if finite(acc) and finite(fresh_acc) else None

    gaps = [g for g in (gap(r["full_test_acc"]) for r in measured) if g is not None]
    summary: dict[str, Any] = {
        "status": "diverged" if divergence is not None else "complete",
        "checkpoints": len(measured),
        "fresh_full_test_acc": fresh_acc,
        "fresh_finetune_epochs": fresh.get("finetune_epochs"),
        "fresh_finetune_train_acc": fresh.get("finetune_train_acc"),
        "final_epoch": last.get("epoch"),
        "final_nc1": last.get("nc1"),
        "final_full_test_acc": last.get("full_test_acc"),
        "final_warmup_test_acc": last.get("warmup_test_acc"),
        "warmstart_gap": gap(last.get("full_test_acc")),
        "mean_warmstart_gap": float(np.mean(gaps)) if gaps else None,
        "r_nc1_full_test_acc": pearson(
            [r["nc1"] for r in measured], [r["full_test_acc"] for r in measured]
        ),
        "r_nc1_full_test_acc_first100": pearson(
            [r["nc1"] for r in early], [r["full_test_acc"] for r in early]
        ),
        "seconds": seconds,
    }
    replaced = [r["cbp_units_replaced"] for r in measured if "cbp_units_replaced" in r]
    if replaced:
        summary["cbp_units_replaced"] = int(sum(replaced))
    if divergence is not None:
        summary["diverged"] = {
            "epoch": divergence.step,
            "metric": divergence.metric,
            "value": str(divergence.value),
        }
    return summary


def summarise_study(specs: Sequence[Any], max_rows: int = 8) -> str:
    """A text table per scheme (mean over seeds): NC1, warm-up and full-data test accuracy
    at (up to ``max_rows``) checkpoints, the gap to a fresh network, and run times."""
    from plasticollapse.runs.config import from_dict
    from plasticollapse.studies.base import run_status

    groups: dict[str, list[tuple[dict, list[dict]]]] = {}
    lines = [f"{len(specs)} warmstart run(s):"]
    for spec in specs:
        config = from_dict(Config, spec.config)
        folder = RunFolder(spec.folder)
        summary = folder.read_summary()
        rows = [r for r in folder.read_metrics() if r.get("full_test_acc") is not None]
        status = summary.get("status", "?") if summary else run_status(spec)
        lines.append(f"  {spec.folder}  {status}  ({len(rows)} checkpoints)")
        if summary is not None:
            groups.setdefault(run_label(config), []).append((summary, rows))

    for label, runs in groups.items():
        summaries = [s for s, _ in runs]

        def across(key: str, summaries=summaries) -> float:
            return _mean_of(summaries, key)

        fresh = across("fresh_full_test_acc")
        lines.append(
            f"{label}: {len(runs)} seed(s), fresh-init full-data test acc {fmt(fresh)} "
            f"(in {fmt(across('fresh_finetune_epochs'), '.1f')} epochs), "
            f"mean per-seed r(NC1, full acc) {fmt(across('r_nc1_full_test_acc'))}, "
            f"{fmt(across('seconds'), '.0f')} s/run"
        )
        epochs = sorted({r["epoch"] for _, rows in runs for r in rows})
        if len(epochs) > max_rows:
            picks = np.linspace(0, len(epochs) - 1, max_rows).round().astype(int)
            epochs = [epochs[i] for i in sorted(set(picks))]
        lines.append(
            f"  {'epoch':>6} {'NC1':>9} {'warmup acc':>10} {'warmup test':>11} "
            f"{'full test':>9} {'gap':>7} {'ft epochs':>9}"
        )
        for epoch in epochs:
            at = [r for _, rows in runs for r in rows if r["epoch"] == epoch]

            def mean(key: str, at=at) -> float:
                return _mean_of(at, key)

            full = mean("full_test_acc")
            lines.append(
                f"  {epoch:>6} {fmt(mean('nc1'), '.4g', 9)} "
                f"{fmt(mean('warmup_train_acc'), width=10)} "
                f"{fmt(mean('warmup_test_acc'), width=11)} {fmt(full, width=9)} "
                f"{fmt(full - fresh, '+.3f', 7)} {fmt(mean('finetune_epochs'), '.1f', 9)}"
            )
    return "\n".join(lines)


def _mean_of(records: Sequence[Mapping[str, Any]], key: str) -> float:
    """The mean of ``key`` over the records that have a finite value of it (NaN if none)."""
    return mean_finite([r.get(key) for r in records])
