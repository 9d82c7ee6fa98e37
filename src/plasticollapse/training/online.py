"""What every online study's loop shares: the state a run checkpoints, and how many of a new
task's inputs the remedies see at its start.

The state is a plain dict (it is written to the run's checkpoint as plain data,
:mod:`plasticollapse.runs.checkpoint`), the same for the permuted and the stream studies::

    task            the task in progress (or next to start)
    task_epoch      epochs of that task already trained
    epoch           epochs trained over the whole run
    task_stats      one entry per epoch of the task in progress (the study's own tuple:
                    permuted (accuracy, loss), streams (correct, count, loss_sum))
    task_extra      keys the remedies added at the start of the task in progress
    task_seconds    time spent on the task in progress
    accuracy_task0  task 0's accuracy (None until it is done): pl = accuracy_0 - accuracy_t
    seconds         time spent on the finished tasks
"""

from __future__ import annotations

from typing import Any

#: How many of a new task's inputs remedies see at its start (ReDo scores dormancy on them).
TASK_START_SAMPLES = 2048


def fresh_state() -> dict[str, Any]:
    """Where a new run starts: task 0, nothing trained, nothing timed."""
    return {
        "task": 0,
        "task_epoch": 0,
        "epoch": 0,
        "task_stats": [],
        "task_extra": {},
        "task_seconds": 0.0,
        "accuracy_task0": None,
        "seconds": 0.0,
    }
