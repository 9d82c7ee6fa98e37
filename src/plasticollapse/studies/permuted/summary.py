"""What a Permuted run and study come to: summary.json and the text table after a sweep."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from plasticollapse.runs.folder import DivergenceError, RunFolder
from plasticollapse.studies.common import finite, fmt, pearson
from plasticollapse.studies.permuted.config import Config, run_label


def summarise_run(
    rows: list[dict[str, Any]], seconds: float, divergence: DivergenceError | None = None
) -> dict[str, Any]:
    """summary.json: correlations over the measured tasks, final accuracy, status.

    ``r_nc1_accuracy`` and ``r_nc1_pl`` are Pearson r across this run's measured tasks.
    Since ``pl = accuracy_0 - accuracy`` is affine in accuracy, ``r_nc1_pl`` is exactly
    ``-r_nc1_accuracy``; the paper's threshold-variant correlation is across runs (``nc1``
    after task 0 vs PL_i) and lives in :mod:`plasticollapse.analysis`.
    """
    measured = [r for r in rows if r.get("nc1") is not None]
    nc1 = [r["nc1"] for r in measured]
    last = rows[-1] if rows else {}
    summary: dict[str, Any] = {
        "status": "diverged" if divergence is not None else "complete",
        "tasks_done": len(rows),
        "accuracy_task0": rows[0]["accuracy"] if rows else None,
        "final_accuracy": last.get("accuracy"),
        "final_pl": last.get("pl"),
        "nc1_task0": rows[0].get("nc1") if rows else None,
        "final_nc1": measured[-1]["nc1"] if measured else None,
        "first_task_epochs_used": rows[0]["task_epochs"] if rows else None,
        "measured_tasks": len(measured),
        "r_nc1_accuracy": pearson(nc1, [r["accuracy"] for r in measured]),
        "r_nc1_pl": pearson(nc1, [r["pl"] for r in measured]),
        "seconds": seconds,
    }
    if divergence is not None:
        summary["diverged"] = {
            "task": len(rows),
            "epoch": divergence.step,
            "metric": divergence.metric,
            "value": str(divergence.value),
        }
    return summary


def threshold_outcome(config: Config, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the threshold variant's task 0 came to, for summary.json: ``nc1_threshold_reached``
    and, when task 0 stopped at the safety cap (``first_task_epochs``) with NC1 still at or
    above ``nc1_threshold``, a ``note`` saying so. The sweep prints a summary's ``note``
    beside the run, and the report leaves such runs out of the threshold analysis (the
    authors had no cap: every run of theirs met its threshold). Empty for other runs and
    before task 0 has its row."""
    if config.nc1_threshold is None or not rows or "nc1_threshold_reached" not in rows[0]:
        return {}
    first = rows[0]
    reached = bool(first["nc1_threshold_reached"])
    outcome: dict[str, Any] = {"nc1_threshold_reached": reached}
    if not reached:
        outcome["note"] = cap_note(
            first.get("task_epochs"),
            config.threshold_metric,
            first.get(config.threshold_metric),
            config.nc1_threshold,
        )
    return outcome


def cap_note(epochs: Any, metric: str, value: Any, threshold: float) -> str:
    """``stopped at the safety cap of 200 epochs, nc1_pinv 0.313 above its threshold 0.2``."""
    return (
        f"stopped at the safety cap of {epochs} epochs, {metric} {fmt(value, '.3g')} above its "
        f"threshold {threshold:g}"
    )


def summarise_study(specs: Sequence[Any], window: int = 5) -> str:
    """A text table: each run's status, then per setting, mean over its seeds:

    - ``acc task 0``: online accuracy of the first task (its last epoch);
    - ``acc early`` / ``acc late``: mean online accuracy over tasks 1..window and over the
      last ``window`` tasks (both one epoch per task, so their gap is plasticity loss
      free of the first task's extra epochs, and smoother than single tasks);
    - ``drop``: accuracy of task 0 - of the last task (``final_pl``);
    - ``r of means``: Pearson r across tasks of the per-task means over seeds of NC1 and
      accuracy (the paper's headline and the report's definition);
    - ``mean seed r``: the mean over seeds of each run's own r across its tasks (each run's
      line shows its own as ``per-run r``).
    """
    from plasticollapse.runs.config import from_dict
    from plasticollapse.studies.base import run_status

    lines = [f"{len(specs)} permuted run(s):"]
    groups: dict[str, list[dict[str, Any]]] = {}
    capped, threshold_runs = 0, 0
    for spec in specs:
        config = from_dict(Config, spec.config)
        folder = RunFolder(spec.folder)
        status, rows, summary = run_status(spec), folder.read_metrics(), folder.read_summary()
        group = groups.setdefault(run_label(config), [])
        # From the rows, not the summary: summaries written before the note existed say it too.
        outcome = threshold_outcome(config, rows)
        threshold_runs += bool(outcome)
        capped += "note" in outcome
        if summary is not None:
            status = summary.get("status", status)
            accuracy = [r["accuracy"] for r in rows]
            late = accuracy[1:][-window:]
            group.append(
                {
                    **summary,
                    "acc_early": float(np.mean(accuracy[1 : window + 1])) if late else None,
                    "acc_late": float(np.mean(late)) if late else None,
                    "rows": rows,
                }
            )
            detail = (
                f"{summary['tasks_done']} tasks, accuracy {fmt(summary['accuracy_task0'])} -> "
                f"{fmt(summary['final_accuracy'])}, per-run r(NC1, acc) "
                f"{fmt(summary['r_nc1_accuracy'])}"
            )
        else:
            detail = f"{len(rows)} tasks so far"
        note = f" ({outcome['note']})" if "note" in outcome else ""
        lines.append(f"  {spec.folder}  {status}{note}  ({detail})")

    lines.append(
        f"per setting, mean over seeds (early = tasks 1-{window}, late = last {window} tasks, "
        "drop = task 0 - last task):"
    )
    columns = ("acc task 0", "acc early", "acc late", "drop", "r of means", "mean seed r")
    keys = ("accuracy_task0", "acc_early", "acc_late", "final_pl", None, "r_nc1_accuracy")
    lines.append(f"  {'setting':<20} {'runs':>4} " + " ".join(f"{c:>11}" for c in columns))
    for label, summaries in groups.items():
        means = []
        for key in keys:
            if key is None:
                means.append(mean_curve_r([s["rows"] for s in summaries]))
                continue
            values = [s[key] for s in summaries if finite(s.get(key))]
            means.append(float(np.mean(values)) if values else float("nan"))
        lines.append(
            f"  {label:<20} {len(summaries):>4} " + " ".join(f"{fmt(m):>11}" for m in means)
        )
    lines.append("  r: Pearson r(NC1, online accuracy) across tasks (see the report for more)")
    if capped:
        lines.append(capped_line(capped, threshold_runs))
    return "\n".join(lines)


def capped_line(capped: int, threshold_runs: int) -> str:
    """The line under the table when threshold runs stopped at the safety cap."""
    return (
        f"{capped} of {threshold_runs} threshold runs stopped at the safety cap "
        "(first_task_epochs) before NC1 fell below their threshold: the report leaves them "
        "out of the threshold analysis. Raise --first_task_epochs, or the threshold, and rerun."
    )


def mean_curve_r(runs: Sequence[Sequence[dict[str, Any]]]) -> float:
    """Pearson r across tasks of the per-task means over runs of NC1 and of accuracy."""
    from plasticollapse.analysis.stats import mean_curve_r as r_of_means

    tasks = sorted({r["task"] for rows in runs for r in rows if r.get("nc1") is not None})
    nc1 = np.full((len(runs), len(tasks)), np.nan)
    acc = np.full((len(runs), len(tasks)), np.nan)
    where = {t: j for j, t in enumerate(tasks)}
    for i, rows in enumerate(runs):
        for r in rows:
            if r.get("nc1") is not None and r["task"] in where:
                nc1[i, where[r["task"]]], acc[i, where[r["task"]]] = r["nc1"], r["accuracy"]
    return r_of_means(nc1, acc) if tasks else float("nan")
