"""What a stream run and study come to: summary.json and the text table after a sweep."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from plasticollapse.runs.folder import DivergenceError, RunFolder
from plasticollapse.studies.common import fmt, mean_finite, pearson
from plasticollapse.studies.permuted.summary import summarise_run as summarise_permuted_run

#: Keys whose value at the last task the summary reports as ``final_<key>`` (when present).
FINAL_KEYS = (
    "test_accuracy",
    "test_nc1",
    "dormant_fraction",
    "effective_rank",
    "plasticity_score",
    "retrained_accuracy",
    "retrained_gap",
    "task0_accuracy",
)


def summarise_run(
    rows: list[dict[str, Any]], seconds: float, divergence: DivergenceError | None = None
) -> dict[str, Any]:
    """summary.json of a stream run.

    The permuted study's summary (status, tasks_done, accuracy_task0, final_accuracy,
    final_pl, nc1_task0, final_nc1, measured_tasks, r_nc1_accuracy, r_nc1_pl, seconds,
    diverged), plus ``mean_accuracy`` (the mean over tasks of their average online accuracy:
    Kumar et al.'s "total average online accuracy" for tasks of equal length),
    ``r_test_nc1_test_accuracy`` (Pearson r across the measured tasks), and ``final_<key>``
    of each of :data:`FINAL_KEYS` the rows hold: its value at the last task that has it.
    """
    summary = summarise_permuted_run(rows, seconds, divergence)
    summary.pop("first_task_epochs_used", None)  # every task of a stream is alike
    summary["mean_accuracy"] = mean_finite(r.get("accuracy") for r in rows) if rows else None
    tested = [r for r in rows if r.get("test_nc1") is not None]
    summary["r_test_nc1_test_accuracy"] = pearson(
        [r["test_nc1"] for r in tested], [r["test_accuracy"] for r in tested]
    )
    for key in FINAL_KEYS:
        values = [r[key] for r in rows if r.get(key) is not None]
        if values:
            summary[f"final_{key}"] = values[-1]
    return summary


def summarise_study(specs: Sequence[Any], window: int = 5) -> str:
    """A text table: each run's status, then per study and setting, means over seeds of the
    online accuracy of task 0 and of the last ``window`` tasks, the last task's held-out
    accuracy and NC1, and r(NC1, accuracy) across each run's measured tasks."""
    from plasticollapse.runs.config import from_dict
    from plasticollapse.studies import get_study
    from plasticollapse.studies.base import run_status

    lines = [f"{len(specs)} stream run(s):"]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for spec in specs:
        study = get_study(spec.experiment)
        label = study.run_label(from_dict(study.Config, spec.config))
        folder = RunFolder(spec.folder)
        rows, summary = folder.read_metrics(), folder.read_summary()
        if summary is None:
            lines.append(f"  {spec.folder}  {run_status(spec)}  ({len(rows)} tasks so far)")
            continue
        late = [r["accuracy"] for r in rows[-window:]]
        groups.setdefault((spec.experiment, label), []).append({**summary, "late": late})
        lines.append(
            f"  {spec.folder}  {summary['status']}  ({summary['tasks_done']} tasks, accuracy "
            f"{fmt(summary['accuracy_task0'])} -> {fmt(summary['final_accuracy'])})"
        )
    columns = ("acc task 0", f"acc last {window}", "test acc", "NC1", "test NC1", "r(NC1, acc)")
    keys = ("accuracy_task0", "late", "final_test_accuracy", "final_nc1", "final_test_nc1")
    lines.append("per setting, mean over seeds (last task unless said):")
    header = " ".join(f"{c:>11}" for c in columns)
    lines.append(f"  {'study':<18} {'setting':<24} {'runs':>4} {header}")
    for (experiment, label), summaries in groups.items():
        means = [
            mean_finite(v for s in summaries for v in (s[k] if k == "late" else [s.get(k)]))
            for k in (*keys, "r_nc1_accuracy")
        ]
        lines.append(
            f"  {experiment:<18} {label:<24} {len(summaries):>4} "
            + " ".join(f"{fmt(m):>11}" for m in means)
        )
    return "\n".join(lines)
