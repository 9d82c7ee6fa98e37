"""What a bit-flipping run and study come to: summary.json and the text table after a sweep."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from plasticollapse.runs.folder import DivergenceError, RunFolder
from plasticollapse.studies.common import fmt, mean_finite, pearson

#: The summary's scalars the sweep table shows, with their headers.
COLUMNS = {
    "loss_task0": "mse task 0",
    "best_loss": "best mse",
    "final_loss": "final mse",
    "final_pl": "final pl",
    "final_nrc1": "final NRC1",
    "final_dormant": "dormant",
    "r_nrc1_loss": "r(NRC1,mse)",
}


def summarise_run(
    rows: list[dict[str, Any]], seconds: float, divergence: DivergenceError | None = None
) -> dict[str, Any]:
    """summary.json: the online error of the first, best and last period, the last
    measured NRC1 and dormant fraction, and Pearson r of NRC1 with the online error across
    the run's measured periods."""
    measured = [r for r in rows if r.get("nrc1") is not None]
    last = measured[-1] if measured else {}
    summary: dict[str, Any] = {
        "status": "complete" if divergence is None else "diverged",
        "tasks_done": len(rows),
        "loss_task0": rows[0]["loss"] if rows else None,
        "best_loss": min((r["loss"] for r in rows), default=None),
        "final_loss": rows[-1]["loss"] if rows else None,
        "final_pl": rows[-1]["pl"] if rows else None,
        "final_nrc1": last.get("nrc1"),
        "final_dormant": last.get("dormant_fraction"),
        "measured_tasks": len(measured),
        "r_nrc1_loss": pearson([r["nrc1"] for r in measured], [r["loss"] for r in measured]),
        "seconds": seconds,
    }
    if divergence is not None:
        summary["diverged"] = {"task": len(rows), "metric": divergence.metric}
        summary["diverged"]["value"] = str(divergence.value)
    return summary


def summarise_study(specs: Sequence[Any]) -> str:
    """Each run's status, then per setting (label) the means over seeds of :data:`COLUMNS`."""
    from plasticollapse.runs.config import from_dict
    from plasticollapse.studies.base import run_status
    from plasticollapse.studies.bitflip_regression.config import Config, run_label

    lines = [f"{len(specs)} bitflip_regression run(s):"]
    by_label: dict[str, list[dict[str, Any]]] = {}
    for spec in specs:
        summary = RunFolder(spec.folder).read_summary()
        label = run_label(from_dict(Config, spec.config))
        if summary is None:
            lines.append(f"  {spec.folder}  {run_status(spec)}")
            continue
        by_label.setdefault(label, []).append(summary)
        lines.append(
            f"  {spec.folder}  {summary['status']}  ({summary['tasks_done']} periods, online "
            f"mse {fmt(summary['loss_task0'])} -> {fmt(summary['final_loss'])})"
        )
    lines.append("per setting, mean over seeds (pl = final - first period's online mse):")
    lines.append(f"  {'setting':<28} {'runs':>4} " + " ".join(f"{h:>11}" for h in COLUMNS.values()))
    for label, summaries in by_label.items():
        means = [mean_finite(s.get(key) for s in summaries) for key in COLUMNS]
        cells = " ".join(fmt(m, width=11) for m in means)
        lines.append(f"  {label:<28} {len(summaries):>4} {cells}")
    return "\n".join(lines)
