"""A matrix preset: which studies (each with its preset and overrides), remedies and seeds.

A matrix preset is a TOML file (or a shipped preset name, ``quick/matrix``)::

    experiment = "matrix"
    remedies = ["plain", "shrink_perturb", "l2_init", "redo", "weight_decay"]
    seeds = "0-1"                    # any seed syntax: [0, 1], "0,1", "0-1"
    out = "runs/matrix_quick"        # cells go to <out>/<study>/<run folder>
    baseline = "plain"               # the heatmap's colours are relative to this remedy
    last = 3                         # a run's value: mean of its last 3 measured steps
    metrics = ["accuracy", "pl", "nc1"]                 # optional (default: METRICS)
    correlate = [["nc1", "accuracy"], ["nrc1", "loss"]]  # optional (default: CORRELATE)
    bootstrap = 1000                 # optional: resamples of the seeds

    [studies.permuted]               # one table per study, in the order they are listed
    preset = "quick/permuted_digits" # optional: the study's own preset
    first_task_epochs = 1            # any other key: a field of the study's config

A study's fields must leave one run per seed: a preset's axes (``first_task_epochs =
[1, 5, 20]``) are pinned here. ``remedies``, ``seed``/``seeds`` and ``out`` belong to the
matrix and may not be set per study. Every mistake is a :class:`ConfigError` naming the
key and what to write instead.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from plasticollapse.runs.config import ConfigError, load_toml, parse_seeds

#: The table's default columns: row keys of the studies (a study without one shows n/a).
METRICS = (
    "accuracy",
    "pl",
    "nc1",
    "test_nc1",
    "loss",
    "nrc1",
    "dormant_fraction",
    "effective_rank",
)
#: The default (collapse, performance) pairs correlated across remedies in each study.
CORRELATE = (("nc1", "accuracy"), ("test_nc1", "accuracy"), ("nrc1", "loss"))
#: Keys a study's table may not set: the matrix sets them for every cell.
MATRIX_OWNED = ("remedies", "seed", "seeds", "out")
TOP_LEVEL = (
    "experiment",
    "remedies",
    "seeds",
    "out",
    "baseline",
    "last",
    "metrics",
    "correlate",
    "bootstrap",
    "studies",
)


@dataclasses.dataclass(frozen=True)
class StudyEntry:
    """One study of the matrix: its registry name, preset and field overrides."""

    name: str
    preset: str | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class MatrixConfig:
    """A parsed matrix preset (see the module docstring)."""

    studies: tuple[StudyEntry, ...]
    remedies: tuple[str, ...]
    seeds: tuple[int, ...]
    out: str
    baseline: str = "plain"
    last: int = 1
    metrics: tuple[str, ...] = METRICS
    correlate: tuple[tuple[str, str], ...] = CORRELATE
    bootstrap: int = 1000
    source: str = ""  # the preset or file it was read from

    def __post_init__(self):
        if not self.studies:
            raise ConfigError(f"matrix {self.source}: [studies.<name>] lists no study")
        if not self.remedies:
            raise ConfigError(f"matrix {self.source}: remedies is empty; list one or more")
        if self.baseline not in self.remedies:
            raise ConfigError(
                f"matrix {self.source}: baseline {self.baseline!r} is not among the remedies "
                f"({', '.join(self.remedies)}); add it, or set baseline to one of them"
            )
        if self.last < 1:
            raise ConfigError(f"matrix {self.source}: last must be >= 1, got {self.last}")
        if self.bootstrap < 0:
            raise ConfigError(f"matrix {self.source}: bootstrap must be >= 0, got {self.bootstrap}")

    @property
    def read_metrics(self) -> tuple[str, ...]:
        """Every metric the matrix reads: the table's and the correlated ones."""
        return tuple(dict.fromkeys([*self.metrics, *(m for pair in self.correlate for m in pair)]))

    def restricted(
        self,
        studies: list[str] | None = None,
        remedies: list[str] | None = None,
        seeds: str | list[str] | None = None,
        out: str | None = None,
    ) -> MatrixConfig:
        """The same matrix on a subset of its studies / remedies, other seeds or ``out``."""
        changes: dict[str, Any] = {}
        if studies:
            unknown = sorted(set(studies) - {s.name for s in self.studies})
            if unknown:
                raise ConfigError(f"--studies: {', '.join(unknown)} not in the matrix")
            changes["studies"] = tuple(s for s in self.studies if s.name in studies)
        if remedies:
            unknown = sorted(set(remedies) - set(self.remedies))
            if unknown:
                raise ConfigError(f"--remedies: {', '.join(unknown)} not in the matrix")
            changes["remedies"] = tuple(r for r in self.remedies if r in remedies)
            if self.baseline not in remedies:
                changes["baseline"] = changes["remedies"][0]
        if seeds:
            changes["seeds"] = _seeds(seeds if isinstance(seeds, str) else ",".join(seeds))
        if out:
            changes["out"] = str(out)
        return dataclasses.replace(self, **changes)


def _seeds(value: Any) -> tuple[int, ...]:
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return tuple(parse_seeds(str(value)))


def _names(value: Any, key: str, source: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"matrix {source}: {key} must be a list of names, got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"matrix {source}: {key} lists a name twice: {value}")
    return tuple(value)


def _pairs(value: Any, source: str) -> tuple[tuple[str, str], ...]:
    ok = isinstance(value, list) and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(v, str) for v in p) for p in value
    )
    if not ok:
        raise ConfigError(
            f"matrix {source}: correlate must be a list of [x, y] metric pairs, got {value!r}"
        )
    return tuple((x, y) for x, y in value)


def _study_entries(tables: Any, source: str) -> tuple[StudyEntry, ...]:
    from plasticollapse.studies import study_names

    if not isinstance(tables, dict):
        raise ConfigError(f"matrix {source}: write each study as a [studies.<name>] table")
    entries = []
    for name, table in tables.items():
        if name not in study_names():
            raise ConfigError(
                f"matrix {source}: [studies.{name}] is not a registered study; "
                f"studies: {', '.join(study_names())}"
            )
        table = dict(table)
        owned = sorted(set(table) & set(MATRIX_OWNED))
        if owned:
            raise ConfigError(
                f"matrix {source}: [studies.{name}] sets {', '.join(owned)}, which the matrix "
                "sets for every cell; set them at the top of the preset (remedies, seeds, out)"
            )
        preset = table.pop("preset", None)
        entries.append(StudyEntry(name, preset, table))
    return tuple(entries)


def load_matrix(ref: str | Path) -> MatrixConfig:
    """Read a matrix preset (a TOML file or a preset name such as ``quick/matrix``)."""
    from plasticollapse.remedies import REMEDIES

    raw = load_toml(ref)
    source = str(ref)
    if raw.get("experiment", "matrix") != "matrix":
        raise ConfigError(
            f"{ref} is a preset of the {raw['experiment']!r} study, not a matrix; run it with "
            f"`plasticollapse {raw['experiment']} --config {ref}`"
        )
    unknown = sorted(set(raw) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(
            f"matrix {source}: unknown key(s) {', '.join(unknown)}; keys: {', '.join(TOP_LEVEL)} "
            "(a study's fields go in its [studies.<name>] table)"
        )
    for key in ("remedies", "seeds", "out", "studies"):
        if key not in raw:
            raise ConfigError(f"matrix {source}: {key} is missing")
    remedies = _names(raw["remedies"], "remedies", source)
    bad = [r for r in remedies if r not in REMEDIES]
    if bad:
        raise ConfigError(
            f"matrix {source}: remedies {', '.join(bad)} are not registered; "
            f"remedies: {', '.join(REMEDIES)}"
        )
    optional: dict[str, Any] = {}
    if "metrics" in raw:
        optional["metrics"] = _names(raw["metrics"], "metrics", source)
    if "correlate" in raw:
        optional["correlate"] = _pairs(raw["correlate"], source)
    for key, kind in (("baseline", str), ("last", int), ("bootstrap", int)):
        if key in raw:
            if not isinstance(raw[key], kind) or isinstance(raw[key], bool):
                raise ConfigError(f"matrix {source}: {key} must be a {kind.__name__}")
            optional[key] = raw[key]
    return MatrixConfig(
        studies=_study_entries(raw["studies"], source),
        remedies=remedies,
        seeds=_seeds(raw["seeds"]),
        out=str(raw["out"]),
        source=source,
        **optional,
    )
