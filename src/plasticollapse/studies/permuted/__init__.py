"""The Permuted study (the paper's Setup A): online Permuted MNIST with an MLP.

One folder: :mod:`.config` (the run's settings), :mod:`.run` (the task stream and the
training loop), :mod:`.summary` (summary.json and the sweep's text table) and
:mod:`.report` (its analyses, figures and the paper's numbers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from plasticollapse.studies.base import Callback, ReportSection, RunSpec, StudyResults
from plasticollapse.studies.permuted.config import Config, estimated_cost, run_label


class PermutedStudy:
    name = "permuted"
    title = "online Permuted MNIST (the paper's Setup A)"
    Config = Config
    step_key = "task"
    setting_keys = ("first_task_epochs",)

    def run_label(self, config: Config) -> str:
        return run_label(config)

    def estimated_cost(self, config: Mapping[str, Any]) -> float:
        return estimated_cost(config)

    def run(self, config: Config, folder: Any, callbacks: Iterable[Callback] = ()) -> dict:
        from plasticollapse.studies.permuted.run import run

        return run(config, folder, callbacks)

    def summarise(self, specs: Sequence[RunSpec]) -> str:
        from plasticollapse.studies.permuted.summary import summarise_study

        return summarise_study(specs)

    def report(self, results: StudyResults) -> ReportSection:
        from plasticollapse.studies.permuted.report import report

        return report(results)


STUDY = PermutedStudy()
