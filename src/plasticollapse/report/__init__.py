"""The report's toolkit: what every study's section and every results page is made of.

- :mod:`~plasticollapse.report.format`: table cells and shared tables (numbers, intervals,
  correlations, the comparison with a paper's numbers);
- :mod:`~plasticollapse.report.plots`: the figures (curves per setting, scatter plots);
- :mod:`~plasticollapse.report.predictors`: the predictor-ranking views;
- :mod:`~plasticollapse.report.render`: blocks rendered to Markdown and self-contained HTML;
- :mod:`~plasticollapse.report.section`: :class:`StudyResults` (what a study is handed) and
  :class:`ReportSection` (what it gives back), plain data.

None of them knows a study. The ``plasticollapse report`` command, which loops over the
studies present, is :mod:`plasticollapse.studies.report_command` (``main_report``,
``study_sections``), a floor above.
"""

from __future__ import annotations

import importlib
from typing import Any

#: name -> the module that defines it, imported when the name is first asked for (so that
#: importing a toolkit module loads neither pandas nor the studies).
_EXPORTS = {
    "DASH": "plasticollapse.report.format",
    "PaperNumber": "plasticollapse.report.format",
    "fmt": "plasticollapse.report.format",
    "ReportSection": "plasticollapse.report.section",
    "StudyResults": "plasticollapse.report.section",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'plasticollapse.report' has no attribute {name!r}")
