"""What an online pass reports, whichever engine ran it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OnlineStats:
    """Prequential totals of one pass: each sample was scored before its update."""

    correct: int
    count: int
    loss_sum: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.count if self.count else float("nan")

    @property
    def loss(self) -> float:
        return self.loss_sum / self.count if self.count else float("nan")
