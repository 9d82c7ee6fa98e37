"""Every (study x remedy x seed) cell of a matrix, planned as ordinary run folders.

A cell is planned exactly as ``plasticollapse <study> --config <preset> --<field> <value>
... --remedies <remedy> --seeds <seeds> --out <out>/<study>`` would plan it
(:func:`plasticollapse.runs.config.parse_study` and :func:`plasticollapse.studies.base.plan`),
so a cell is the same run folder that command makes, and a sweep or the study's own
subcommand resumes or reuses it. A remedy that a study refuses (its config raises a
:class:`ConfigError`, e.g. a classification-only remedy on a regression stream) makes an
*n/a* cell carrying the reason, not an error; a mistake in a study's own fields is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plasticollapse.matrix.config import MatrixConfig, StudyEntry
from plasticollapse.runs.config import ConfigError, Study, parse_study
from plasticollapse.studies import get_study
from plasticollapse.studies.base import RunSpec, plan, run_status

NOT_APPLICABLE = "not_applicable"


@dataclass(frozen=True)
class Cell:
    """One (study, remedy, seed); ``spec`` is None for a cell the study refuses (``reason``)."""

    study: str
    remedy: str
    seed: int | None
    spec: RunSpec | None = None
    reason: str = ""

    @property
    def status(self) -> str:
        """``complete``, ``partial``, ``new``, or ``not_applicable`` (no run: see ``reason``)."""
        return NOT_APPLICABLE if self.spec is None else run_status(self.spec)


def _token(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def study_argv(
    entry: StudyEntry, remedy: str | None, seeds: tuple[int, ...], out: str
) -> list[str]:
    """The ``--field value`` overrides of one study's cells (remedy None: none given).

    A list value is a tuple field's value or an axis, as in a TOML preset; an empty list is
    written ``none`` (an empty tuple)."""
    argv: list[str] = []
    for key, value in entry.overrides.items():
        values = value if isinstance(value, list) else [value]
        argv += [f"--{key}", *([_token(v) for v in values] or ["none"])]
    if remedy is not None:
        argv += ["--remedies", remedy]
    return [*argv, "--seeds", ",".join(map(str, seeds)), "--out", str(Path(out) / entry.name)]


def _parse(config: MatrixConfig, entry: StudyEntry, remedy: str | None) -> Study:
    experiment = get_study(entry.name)
    argv = study_argv(entry, remedy, config.seeds, config.out)
    return parse_study(experiment.Config, entry.preset, argv, experiment=entry.name)


def plan_study(config: MatrixConfig, entry: StudyEntry) -> list[Cell]:
    """The cells of one study: one per remedy and seed."""
    where = f"matrix {config.source}: [studies.{entry.name}]"
    try:
        fields = _parse(config, entry, None)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    axes = {k: v for k, v in fields.axes.items() if k != "seed"}
    if axes:
        listed = "; ".join(f"{k} = {', '.join(map(str, v))}" for k, v in axes.items())
        raise ConfigError(
            f"{where} leaves several runs per seed ({listed}); pin each to one value in the "
            "study's table"
        )
    cells = []
    for remedy in config.remedies:
        try:
            specs = plan(entry.name, _parse(config, entry, remedy))
        except ConfigError as e:
            cells += [Cell(entry.name, remedy, s, reason=str(e)) for s in config.seeds]
            continue
        cells += [Cell(entry.name, remedy, s.config["seed"], s) for s in specs]
    return cells


def plan_matrix(config: MatrixConfig) -> list[Cell]:
    """Every cell, study by study in the preset's order, then remedy, then seed."""
    return [cell for entry in config.studies for cell in plan_study(config, entry)]


def describe(cells: list[Cell]) -> str:
    """One line per cell (study, remedy, seed, status, folder or reason) and the totals."""
    width = max([len("study")] + [len(c.study) for c in cells])
    rwidth = max([len("remedy")] + [len(c.remedy) for c in cells])
    lines = [f"{'study':<{width}}  {'remedy':<{rwidth}}  seed  {'status':<8}  run folder"]
    counts: dict[str, int] = {}
    for c in cells:
        status = c.status
        counts[status] = counts.get(status, 0) + 1
        where = c.spec.folder if c.spec is not None else c.reason
        lines.append(
            f"{c.study:<{width}}  {c.remedy:<{rwidth}}  {c.seed!s:>4}  {status:<8}  {where}"
        )
    totals = ", ".join(f"{n} {status}" for status, n in counts.items())
    lines.append(f"{len(cells)} cells: {totals}")
    return "\n".join(lines)
