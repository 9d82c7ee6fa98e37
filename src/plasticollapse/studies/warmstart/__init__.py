"""The warm-start study (the paper's Setup B): warm-starting CIFAR-10 with ResNet-18.

One folder: :mod:`.config` (the run's settings), :mod:`.run` (the warm-up loop and its
measurements), :mod:`.training` (data, SGD epochs, the plasticity probe), :mod:`.summary`
(summary.json and the sweep's text table) and :mod:`.report` (its analyses, figures and the
paper's numbers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from plasticollapse.studies.base import Callback, ReportSection, RunSpec, StudyResults
from plasticollapse.studies.warmstart.config import Config, estimated_cost, run_label


class WarmstartStudy:
    name = "warmstart"
    title = "warm-starting CIFAR-10 with ResNet-18 (the paper's Setup B)"
    Config = Config
    step_key = "epoch"
    setting_keys = ("scheme",)

    def run_label(self, config: Config) -> str:
        return run_label(config)

    def estimated_cost(self, config: Mapping[str, Any]) -> float:
        return estimated_cost(config)

    def run(self, config: Config, folder: Any, callbacks: Iterable[Callback] = ()) -> dict:
        from plasticollapse.studies.warmstart.run import run

        return run(config, folder, callbacks)

    def summarise(self, specs: Sequence[RunSpec]) -> str:
        from plasticollapse.studies.warmstart.summary import summarise_study

        return summarise_study(specs)

    def report(self, results: StudyResults) -> ReportSection:
        from plasticollapse.studies.warmstart.report import report

        return report(results)


STUDY = WarmstartStudy()
