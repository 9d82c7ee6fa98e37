"""``plasticollapse report``: run folders -> results table, each study's section, report.md/html.

The command that loops over the studies, on the studies' floor: it asks the registry for
each study present, hands it its runs, and lays out what it returns with the report's
toolkit (:mod:`plasticollapse.report`: formats, plots, the renderer), which knows no study.

:func:`main_report` reads every run folder under the given paths (the tidy table of
:func:`plasticollapse.analysis.load`) and, for every study present, in the registry's
order, hands that study's runs to its ``report`` method
(:meth:`~plasticollapse.studies.protocol.Experiment.report`), which returns a
:class:`~plasticollapse.studies.base.ReportSection`. It writes into ``out``::

    results.csv           the tidy long table (run_id, experiment, settings, seed, step,
                          metric, value); results.parquet beside it when pyarrow is installed
    summaries.csv         summary.json's scalars (the same columns without step), and its
                          .parquet
    <study>/              what each study's report wrote: its figures (PNG and PDF) and CSVs
    report.md             the runs, then each study's section: protocol, tables, figures
    report.html           the same, self-contained (figures as base64 PNG; no network)

This module names no study: analyses, figures and a paper's numbers belong to each study's
``report`` module (e.g. :mod:`plasticollapse.studies.permuted.report`). A study in the run
folders that is not registered gets a section saying so, and its rows stay in results.csv.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from plasticollapse import analysis
from plasticollapse.report.format import common_config_text, runs_overview
from plasticollapse.report.render import Doc, add_section, relative
from plasticollapse.report.section import ReportSection, StudyResults
from plasticollapse.studies import get_study, study_names

__all__ = ["main_report", "study_sections"]


def study_sections(
    results: analysis.Results, out: Path, bootstrap: int = 1000, seed: int = 0, **options
) -> list[tuple[str, pd.DataFrame, ReportSection]]:
    """``(study, its runs, its section)`` for every study in ``results``, registry order first.

    Each study writes its figures and files into ``out / <study>``; ``options`` (e.g. the
    sliding window's ``window`` and ``stride``) are passed to every study, which uses the
    ones it knows.
    """
    present = results.experiments()
    ordered = [n for n in study_names() if n in present] + [
        n for n in present if n not in study_names()
    ]
    sections = []
    for name in ordered:
        table, runs = results.study(name)
        try:
            study = get_study(name)
        except (ValueError, ImportError, AttributeError, TypeError) as e:
            note = f"{len(runs)} run(s) of a study that is not registered here ({e}); "
            note += "their rows are in results.csv."
            sections.append((name, runs, ReportSection(title=name, notes=[note])))
            continue
        folder = Path(out) / name
        folder.mkdir(parents=True, exist_ok=True)
        study_results = StudyResults(
            study=name,
            table=table,
            runs=runs,
            settings=list(results.settings[name]),
            out=folder,
            bootstrap=bootstrap,
            seed=seed,
            options=dict(options),
            summaries=results.study_summaries(name),
        )
        print(f"report: {name}: {len(runs)} runs, {len(table)} rows")
        sections.append((name, runs, study.report(study_results)))
    return sections


def main_report(
    run_dirs: Sequence[str | Path],
    out: Path,
    window: int = 100,
    stride: int = 5,
    bootstrap: int = 1000,
    seed: int = 0,
) -> Path:
    """Write the results table, each study's figures and files, report.md and report.html
    into ``out``; return ``out``.

    Options (mirror them as ``report`` flags):

    * ``run_dirs``: run folders or folders containing them (searched recursively).
    * ``out``: the report folder (created; files in it are overwritten).
    * ``window``: sliding-window width in steps (default 100), for studies that correlate
      inside sliding windows: the window ending at step e holds ``e - window < step <= e``.
    * ``stride``: steps between consecutive window ends (default 5).
    * ``bootstrap``: bootstrap resamples of the seeds for the 95 % intervals (0: none).
    * ``seed``: seed of the bootstrap's random generator (the report is deterministic).

    Raises ValueError when no run folder is found.
    """
    out = Path(out)
    results = analysis.load(run_dirs)
    if not len(results.runs):
        raise ValueError(
            f"no run folders (config.json + metrics.jsonl) under {', '.join(map(str, run_dirs))}"
        )
    out.mkdir(parents=True, exist_ok=True)
    written = analysis.write_results(results.table, out, results.summaries)
    sections = study_sections(results, out, bootstrap, seed, window=window, stride=stride)

    doc = Doc()
    runs = results.runs
    done = int(runs["complete"].sum())
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    doc.h(1, "plasticollapse report")
    doc.p(
        f"Generated {now} from {', '.join(map(str, run_dirs))}: {len(runs)} runs "
        f"({done} complete, {len(runs) - done} partial), {len(results.table)} table rows."
    )
    doc.h(2, "Runs")
    overview = [
        runs_overview(r, results.settings[name]).assign(study=name) for name, r, _ in sections
    ]
    overview = pd.concat(overview, ignore_index=True)
    doc.table(overview[["study", *overview.columns.drop("study")]])
    absent = [n for n in study_names() if n not in results.experiments()]
    if absent:
        doc.p(f"Registered studies with no runs here: {', '.join(absent)}.")
    doc.p(
        "Files: "
        + ", ".join(relative(p, out) for p in written)
        + " (results: one row per run, step and metric; summaries: one row per run and "
        "summary value)."
    )
    for name, study_runs, section in sections:
        shared = common_config_text(study_runs, results.settings[name])
        add_section(doc, section, out, shared)
        written += [*section.files, *(png for _, png in section.figures)]

    (out / "report.md").write_text(doc.markdown(out))
    (out / "report.html").write_text(doc.html("plasticollapse report"))
    written += [out / "report.md", out / "report.html"]
    print(f"report written to {out}/:")
    for path in written:
        print(f"  {relative(path, out)}")
    return out
