"""The points of a training protocol where a remedy can act, and the one check that a study
has the points a remedy needs.

A study declares the events its protocol has (``EVENTS`` on its config class); a remedy's
needs follow from the hooks it overrides (:func:`events_needed`). A remedy needs *every*
per-step event it uses (its loss term, weight decay or ``after_step``, with the step's
hidden activations for Continual Backprop; ``at_interval`` when it is set to act every k
steps) and *one* of the boundary events it acts at (Shrink & Perturb acts at a new task of
an online stream and at the start of a warm start's probe: either makes it useful).

:func:`check_events` refuses a combination with a message that names the study, the
remedy and the missing event, so that adding a study or a remedy needs no per-pair rule.
This module imports no torch.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import TYPE_CHECKING

from plasticollapse.runs.config import ConfigError

if TYPE_CHECKING:
    from plasticollapse.remedies.base import Remedy


class Event(str, enum.Enum):
    """A point of a training protocol where remedies' hooks are called."""

    #: every optimizer step: loss terms, SGD weight decay, ``after_step``
    STEP = "every step"
    #: every step, with the step's hidden activations passed to ``after_step``
    STEP_ACTIVATIONS = "every step with the hidden activations"
    #: every k steps inside a pass (``at_interval``)
    INTERVAL = "every k steps of a pass"
    #: before training each new task t >= 1 of a stream (``at_task_start``)
    TASK_START = "the start of a new task"
    #: a warm start's checkpoints (``at_checkpoint``)
    CHECKPOINT = "a warm-up checkpoint"
    #: the start of a warm start's plasticity probe (``at_probe_start``)
    PROBE_START = "the start of a probe"

    def __str__(self) -> str:
        return self.value


#: The events of an online stream trained through an engine (permuted, the streams,
#: bitflip regression).
ONLINE_EVENTS = frozenset({Event.STEP, Event.STEP_ACTIVATIONS, Event.INTERVAL, Event.TASK_START})

#: Boundary hooks and the event each is called at.
BOUNDARY_HOOKS = {
    "at_task_start": Event.TASK_START,
    "at_checkpoint": Event.CHECKPOINT,
    "at_probe_start": Event.PROBE_START,
}


def events_needed(remedy: Remedy) -> tuple[frozenset[Event], frozenset[Event]]:
    """``(all_of, one_of)``: the events the remedy needs every one of, and those of which
    it needs at least one (empty: it acts at no boundary)."""
    from plasticollapse.remedies.base import Remedy

    all_of = set()
    if remedy.per_step_hooks():
        all_of.add(Event.STEP)
    if remedy.needs_activations:
        all_of.add(Event.STEP_ACTIVATIONS)
    if remedy.interval() > 0:
        all_of.add(Event.INTERVAL)
    one_of = {
        event
        for hook, event in BOUNDARY_HOOKS.items()
        if getattr(type(remedy), hook) is not getattr(Remedy, hook)
    }
    # A remedy set to act every k steps acts there instead of at a boundary.
    if remedy.interval() > 0:
        one_of = set()
    return frozenset(all_of), frozenset(one_of)


def check_events(study: str, events: Iterable[Event], remedies: Iterable[Remedy]) -> None:
    """Raise a :class:`ConfigError` naming ``study``, the remedy and the event it misses
    when a remedy needs an event that ``events`` (the study's) lacks."""
    have = frozenset(events)
    for remedy in remedies:
        all_of, one_of = events_needed(remedy)
        missing = sorted(all_of - have, key=list(Event).index)
        if missing:
            raise ConfigError(
                f"the {study} study has no '{missing[0]}' event, which the {remedy.name} "
                f"remedy needs; the {study} study offers: {describe(have)}"
            )
        if one_of and not one_of & have:
            wanted = " or ".join(f"'{e}'" for e in sorted(one_of, key=list(Event).index))
            raise ConfigError(
                f"the {remedy.name} remedy acts at {wanted}, which the {study} study does not "
                f"have; it offers: {describe(have)}"
            )


def describe(events: Iterable[Event]) -> str:
    """The events as a readable list, in protocol order."""
    ordered = sorted(events, key=list(Event).index)
    return ", ".join(f"'{e}'" for e in ordered) or "no events"
