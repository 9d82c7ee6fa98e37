"""The protocol a study satisfies: :class:`Experiment`, and the :data:`Callback` its run takes.

Kept apart from :mod:`plasticollapse.studies.base` (how runs are planned and executed) so
that the registry (:mod:`plasticollapse.studies`) checks a study against it without
importing the planning, which asks the registry for studies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import nn

    from plasticollapse.report.section import ReportSection, StudyResults
    from plasticollapse.runs.spec import RunSpec

#: ``callback(step, model, row)``: may add keys to ``row`` in place or return a dict of them.
Callback = Callable[[int, "nn.Module", dict[str, Any]], "Mapping[str, Any] | None"]


@runtime_checkable
class Experiment(Protocol):
    """What a study provides. Attributes:

    - ``name``: its registry name and CLI subcommand (``"permuted"``);
    - ``title``: one line for ``--help`` and the report's heading;
    - ``Config``: a frozen dataclass of one run's settings, with ``seed``, ``out``,
      ``device`` and ``threads`` fields; every field documented with
      :func:`plasticollapse.runs.config.field` (help, choices);
    - ``step_key``: the metrics.jsonl key that orders a run's rows (``"task"``, ``"epoch"``);
    - ``setting_keys``: config fields that always label a run's setting in tables and
      figures, even when a study holds one value of them (``("first_task_epochs",)``).
    """

    name: str
    title: str
    Config: type
    step_key: str
    setting_keys: tuple[str, ...]

    def run_label(self, config: Any) -> str:
        """A short readable label of the run's setting (``"fte5"``, ``"shrink_perturb"``)."""

    def estimated_cost(self, config: Mapping[str, Any]) -> float:
        """Relative cost of a run (any unit): sweeps start the most expensive first."""

    def run(self, config: Any, folder: Any, callbacks: Iterable[Callback] = ()) -> dict:
        """Train and measure, resuming from ``folder``; append rows; return the summary."""

    def summarise(self, specs: Sequence[RunSpec]) -> str:
        """A short text table of the runs, printed after a sweep."""

    def report(self, results: StudyResults) -> ReportSection:
        """The study's analyses, figures and comparison with its paper's numbers."""
