"""What a study hands the report (:class:`StudyResults`) and what it gives back
(:class:`ReportSection`): plain data, so the report's toolkit knows no study."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class StudyResults:
    """One study's runs, as the report hands them to a study's ``report`` method.

    ``table`` is the tidy long table of :func:`plasticollapse.analysis.load_results`
    restricted to the study (columns ``run_id, experiment, <settings>, seed, step, metric,
    value``); ``runs`` has one row per run (``run_id``, ``folder``, ``label``, settings,
    ``seed``, ``status`` and the summary's scalars); ``settings`` names the setting columns;
    ``summaries`` holds the summary.json scalars in long form (the table's columns without
    ``step``; :func:`plasticollapse.analysis.load_summaries`). Figures and files go into
    ``out``.
    """

    study: str
    table: pd.DataFrame
    runs: pd.DataFrame
    settings: list[str]
    out: Path
    bootstrap: int = 1000
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    summaries: pd.DataFrame | None = None


@dataclass
class ReportSection:
    """What a study contributes to a report: plain data, rendered by :mod:`plasticollapse.report`.

    ``tables`` and ``figures`` are ``(caption, DataFrame)`` and ``(caption, path)`` pairs;
    ``files`` are CSVs the study wrote (listed in the report); ``notes`` are paragraphs.
    """

    title: str
    protocol: str = ""
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
