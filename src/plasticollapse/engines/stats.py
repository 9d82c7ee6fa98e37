"""What an online pass reports, whichever engine ran it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping


@dataclasses.dataclass(frozen=True)
class OnlineStats:
    """Prequential totals of one pass: each sample was scored before its update.

    ``extra``: counts the remedies report for the pass (``redo_units_reset`` of ReDo every
    k steps, ``cbp_units_replaced`` of Continual Backprop), summed over the pass.
    """

    correct: int
    count: int
    loss_sum: float
    extra: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.correct / self.count if self.count else float("nan")

    @property
    def loss(self) -> float:
        return self.loss_sum / self.count if self.count else float("nan")


def add_counts(total: dict[str, float], counts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Sum each mapping of ``counts`` into ``total`` key by key; returns ``total``."""
    for mapping in counts:
        for key, value in mapping.items():
            total[key] = total.get(key, 0) + value
    return total


def recent_samples(order, end: int, steps: int, batch_size: int = 1):
    """The indices (of ``order``) that :meth:`Remedy.at_interval` sees after the step ending
    at sample ``end``: the last ``steps`` steps' samples, at most ``INTERVAL_SAMPLES``."""
    from plasticollapse.remedies.base import INTERVAL_SAMPLES

    span = min(steps * batch_size, INTERVAL_SAMPLES, end)
    return order[end - span : end]
