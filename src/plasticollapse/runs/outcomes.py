"""What happened to one run of a sweep: its :class:`Status`, its :class:`RunOutcome`, and
the notes read from its folder (complete, diverged, running elsewhere, its summary's note).

The sweep (:mod:`plasticollapse.runs.sweep`) and its backends
(:mod:`plasticollapse.runs.backends`) both speak these; neither imports the other for them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plasticollapse.runs.spec import RunSpec


class Status(str, enum.Enum):
    """What happened to one run of a sweep (a str, so it prints and compares as its name)."""

    DONE = "done"
    RESUMED = "resumed"
    SKIPPED = "skipped"
    FAILED = "failed"
    DIVERGED = "diverged"

    def __str__(self) -> str:
        return self.value


STATUSES = tuple(s.value for s in Status)


#: The note of a run skipped because another process holds its lock.
ELSEWHERE = "running elsewhere"
#: The note of a run skipped because it is complete, and of one that is complete but diverged.
COMPLETE, DIVERGED_SUFFIX = "complete", ", diverged"


@dataclass
class RunOutcome:
    """What happened to one run of a sweep."""

    spec: RunSpec
    status: Status
    seconds: float = 0.0
    error: str | None = None  # "ExceptionType: message" of a failed run
    note: str = ""  # why it was skipped ("complete", "running elsewhere"), or where to look
    error_type: str | None = None  # the exception's class name of a failed run
    ended_diverged: bool = False  # its summary says it diverged (this time or before)

    def __post_init__(self):
        self.status = Status(self.status)

    @property
    def folder(self) -> str:
        return self.spec.folder

    @property
    def elsewhere(self) -> bool:
        """Skipped because another process holds the run's lock: not finished here."""
        return self.status is Status.SKIPPED and self.note == ELSEWHERE

    @property
    def diverged(self) -> bool:
        """The run ended diverged: now, or before (then it is skipped as complete)."""
        return self.status is Status.DIVERGED or self.ended_diverged

    @property
    def config_error(self) -> bool:
        """It failed on a :class:`~plasticollapse.runs.config.ConfigError`."""
        return self.status is Status.FAILED and self.error_type == "ConfigError"


def complete_note(spec: RunSpec) -> str:
    """The note of a complete run: ``complete``, or ``complete, diverged``, followed by the
    summary's own note if it has one (``complete; stopped at the safety cap of ...``)."""
    note = COMPLETE + (DIVERGED_SUFFIX if divergence(spec) is not None else "")
    return "; ".join(filter(None, (note, summary_note(spec))))


def summary_note(spec: RunSpec) -> str:
    """The ``note`` of the run's summary.json: what a run that ended without error still
    wants said beside it (a threshold run stopped at its safety cap); "" when none."""
    note = _read_summary(spec).get("note")
    return note if isinstance(note, str) else ""


def _read_summary(spec: RunSpec) -> dict[str, Any]:
    """The run's summary.json, or {} when it has none (or an unreadable one)."""
    import json

    try:
        summary = json.loads((Path(spec.folder) / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def divergence(spec: RunSpec) -> str | None:
    """``"loss = nan at step 3"`` for a run whose summary says it diverged, else None."""
    summary = _read_summary(spec)
    if summary.get("status") != "diverged":
        return None
    info = summary.get("diverged")
    if not isinstance(info, dict):
        info = {}
    where = info.get("epoch", info.get("step"))
    what = f"{info.get('metric')} = {info.get('value')}" if info.get("metric") else "diverged"
    return what + (f" at step {where}" if where is not None else "")
