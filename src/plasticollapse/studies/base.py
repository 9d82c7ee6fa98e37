"""The seam every study plugs into: the :class:`Experiment` protocol, and how runs are
planned and executed.

A study (``permuted``, ``warmstart``, a test's toy study, a third-party package's) is one
object satisfying :class:`Experiment`, registered by name in :mod:`plasticollapse.studies`.
Everything else is generic:

- :func:`plan` expands a config file and ``--field value`` overrides into :class:`RunSpec` s
  (plain and picklable: what sweep backends ship to workers);
- :func:`execute` runs one spec: it skips a complete run, resumes a partial one, and records
  a failure's traceback in the run folder before re-raising;
- the tidy table (:mod:`plasticollapse.analysis`) reads run folders using ``step_key`` and
  ``setting_keys``; the report (:mod:`plasticollapse.report`) asks each study present for
  its :class:`ReportSection`.

Data flows one way: config -> study.run -> run folder -> analysis -> report.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from plasticollapse.runs.config import (
    EXECUTION_FIELDS,
    ConfigError,
    Study,
    from_dict,
    parse_study,
    to_dict,
)
from plasticollapse.runs.folder import RunFolder
from plasticollapse.runs.identity import config_hash, legacy_config_hash, run_identity

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

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


class FolderStudy:
    """An :class:`Experiment` whose parts are the modules of one study folder::

        <package>/config.py    Config, run_label(config), estimated_cost(config), and
                               optionally estimated_cpu_hours(config): (least, most)
                               hours on one CPU core, for the notice a sweep prints
                               before training a GPU-scale study on the CPU
        <package>/run.py       run(config, folder, callbacks)
        <package>/summary.py   summarise_study(specs)
        <package>/report.py    report(results)

    ``run``, ``summary`` and ``report`` are imported only when used, so listing the studies
    (the CLI, a sweep's planning) does not import torch.
    """

    def __init__(
        self, package: str, name: str, title: str, step_key: str, setting_keys: tuple[str, ...]
    ):
        self.package, self.name, self.title = package, name, title
        self.step_key, self.setting_keys = step_key, setting_keys
        self._config = importlib.import_module(f"{package}.config")
        self.Config = self._config.Config

    def _part(self, module: str) -> Any:
        return importlib.import_module(f"{self.package}.{module}")

    def run_label(self, config: Any) -> str:
        return self._config.run_label(config)

    def estimated_cost(self, config: Mapping[str, Any]) -> float:
        return self._config.estimated_cost(config)

    def estimated_cpu_hours(self, config: Mapping[str, Any]) -> tuple[float, float] | None:
        """The config module's ``estimated_cpu_hours(config)`` (optional: None without it)."""
        estimate = getattr(self._config, "estimated_cpu_hours", None)
        return estimate(config) if estimate is not None else None

    def run(self, config: Any, folder: Any, callbacks: Iterable[Callback] = ()) -> dict:
        return self._part("run").run(config, folder, callbacks)

    def summarise(self, specs: Sequence[RunSpec]) -> str:
        return self._part("summary").summarise_study(specs)

    def report(self, results: StudyResults) -> ReportSection:
        return self._part("report").report(results)


@dataclass
class StudyResults:
    """One study's runs, as the report hands them to :meth:`Experiment.report`.

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


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs to execute one run: picklable and JSON-ready."""

    experiment: str
    config: dict[str, Any]
    folder: str

    @property
    def run_id(self) -> str:
        return Path(self.folder).name


#: Longest run-folder name (file systems allow 255 bytes); longer axis parts are cut.
MAX_NAME = 200


def run_id(experiment: Experiment, config: Any, axes: Sequence[str] = ()) -> str:
    """``<label>[_<axis values>]_seed<k>_<hash>``: readable, and unique for every distinct
    setting (the hash). ``axes`` are fields whose values the name shows besides the label
    (``fte5_lr0.01_seed0_1a2b3c4d``): :func:`plan` passes the study's axes that the label
    does not already tell apart."""
    label = experiment.run_label(config)
    values = "_".join(setting_text(name, getattr(config, name)) for name in axes)
    tail = f"seed{config.seed}_{config_hash(config)}"
    values = values[: max(0, MAX_NAME - len(label) - len(tail) - 2)]
    return "_".join(part for part in (label, values, tail) if part)


def value_text(value: Any) -> str:
    """A setting's value as names and tables show it: ``0.01``, ``64-64``, ``true``, ``none``."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return "-".join(map(value_text, value)) or "none"
    return str(value)


def setting_text(name: str, value: Any) -> str:
    """``lr0.01``, ``hidden64-64``, ``dataset-digits``, ``augment-true``: a field's value as
    a run name shows it (characters other than letters, digits, ``.``, ``+`` and ``-``
    become ``-``)."""
    numeric = all(
        isinstance(v, (int, float)) and not isinstance(v, bool)
        for v in (value if isinstance(value, (tuple, list)) else [value])
    )
    shown = re.sub(r"[^A-Za-z0-9.+-]", "-", value_text(value))
    return f"{name}{shown}" if numeric and shown else f"{name}-{shown}"


def named_axes(experiment: Experiment, study: Study) -> list[str]:
    """The study's axes a run name must show: all but ``seed``, execution fields, and axes
    whose every value already gives the run another label (``first_task_epochs``: ``fte5``)."""
    configs = study.expand()
    if not configs:
        return []
    first = configs[0]
    named = []
    for name, values in study.axes.items():
        if name == "seed" or name in EXECUTION_FIELDS:
            continue
        labels = {experiment.run_label(dataclasses.replace(first, **{name: v})) for v in values}
        if len(labels) < len(values):
            named.append(name)
    return named


def plan(experiment_name: str, study: Study) -> list[RunSpec]:
    """One :class:`RunSpec` per run of the study, each with its own folder under ``out``.

    A run's folder is ``out/<run_id>`` (:func:`run_id`, naming the axes :func:`named_axes`
    picks), unless that folder does not exist and a folder of the same run does under
    another name: a folder of an older naming scheme (``<label>_seed<k>_<hash>``) or of a
    sweep with other axes. Then that folder is reused, so existing runs resume. A folder
    named by the hash before :func:`~plasticollapse.runs.identity.run_identity` (its
    ``legacy_config_hash``) is renamed to the new name once, and says so.

    The runs' loggers are checked here, so that a missing optional extra (tensorboard,
    wandb) stops the study before its first run rather than inside a worker.
    """
    from plasticollapse.runs.loggers import check_loggers
    from plasticollapse.studies import get_study

    experiment = get_study(experiment_name)
    axes = named_axes(experiment, study)
    existing: dict[Path, dict[str, list[Path]]] = {}
    specs = []
    for config in study.expand():
        check_loggers(getattr(config, "loggers", ()))
        folder = Path(config.out) / run_id(experiment, config, axes)
        if not folder.exists():
            folder = same_run_elsewhere(experiment_name, config, existing) or folder
        specs.append(RunSpec(experiment_name, to_dict(config), str(folder)))
    folders = [s.folder for s in specs]
    if len(set(folders)) != len(folders):
        raise ConfigError("two runs of the study map to one folder; give each value once")
    return specs


def same_run_elsewhere(
    experiment_name: str, config: Any, cache: dict[Path, dict[str, list[Path]]]
) -> Path | None:
    """An existing folder under ``config.out`` whose name ends in the run's hash and whose
    config.json describes this run (a complete one first), or None. ``cache`` keeps each
    ``out``'s folders by hash, so a sweep lists its ``out`` once.

    A folder named by the run's legacy hash (the naming before the identity counted
    remedies' parameters only where applied) is renamed to ``run_id``'s name: returned
    under that name, so that it is found by the hash alone from then on.
    """
    out = Path(config.out)
    if out not in cache:
        by_hash: dict[str, list[Path]] = {}
        if out.is_dir():
            for child in sorted(out.iterdir()):
                if child.is_dir() and "_" in child.name:
                    by_hash.setdefault(child.name.rsplit("_", 1)[1], []).append(child)
        cache[out] = by_hash
    found = _matching(experiment_name, config, cache[out], config_hash)
    if found is not None:
        return found
    legacy = _matching(experiment_name, config, cache[out], legacy_config_hash)
    if legacy is None:
        return None
    renamed = legacy.with_name(legacy.name.rsplit("_", 1)[0] + "_" + config_hash(config))
    if renamed.exists():
        return None
    legacy.rename(renamed)
    print(f"plasticollapse: renamed {legacy} to {renamed.name} (its new identity hash)")
    cache[out].setdefault(config_hash(config), []).append(renamed)
    return renamed


def _matching(
    experiment_name: str,
    config: Any,
    by_hash: dict[str, list[Path]],
    digest_of: Callable[[Any], str],
) -> Path | None:
    """The folder among ``by_hash[digest_of(config)]`` whose config.json is this run's (a
    complete one first), or None."""
    digest = digest_of(config)
    matches = []
    for candidate in by_hash.get(digest, []):
        try:
            record = RunFolder(candidate).read_config()
            stored = from_dict(type(config), record["config"])
        except (ConfigError, ValueError, KeyError, TypeError):
            continue
        if record["experiment"] == experiment_name and digest_of(stored) == digest:
            matches.append(candidate)
    matches.sort(key=lambda path: not RunFolder(path).is_complete)
    return matches[0] if matches else None


def plan_from_file(experiment_name: str, config_file: str | None, argv: list[str]) -> list[RunSpec]:
    """:func:`plan` of a preset (a TOML file or a preset name) and ``--field`` overrides.

    A preset whose ``experiment`` key names another study is refused.
    """
    from plasticollapse.studies import get_study

    experiment = get_study(experiment_name)
    study = parse_study(experiment.Config, config_file, argv, experiment=experiment_name)
    return plan(experiment_name, study)


def run_status(spec: RunSpec) -> str:
    """``complete``, ``partial`` (has a checkpoint or rows) or ``new``."""
    folder = RunFolder(spec.folder)
    if folder.is_complete:
        return "complete"
    if folder.checkpoint_path.exists() or folder.metrics_path.exists():
        return "partial"
    return "new"


def execute(spec: RunSpec, threads: int | None = None) -> str:
    """Run one spec to completion. Returns ``skipped`` (it was complete), ``resumed``,
    ``done``, or ``diverged`` (it ended with summary status ``diverged``).

    ``threads`` is the thread count for a run whose config leaves ``threads`` at 0 (sweep
    backends use it to keep workers x threads within the machine's cores); a config that
    sets ``threads`` gets exactly that. The count used is what config.json records.
    """
    import torch

    from plasticollapse.studies import get_study

    experiment = get_study(spec.experiment)
    config: Any = from_dict(experiment.Config, spec.config)  # the study's own Config
    status = run_status(spec)
    if status == "complete":
        return "skipped"
    n_threads = config.threads if config.threads > 0 else threads
    if n_threads and n_threads > 0:
        torch.set_num_threads(n_threads)
        os.environ["NUMBA_NUM_THREADS"] = str(n_threads)
    used = torch.get_num_threads()
    if config.threads != used:
        config = dataclasses.replace(config, threads=used)
    folder = RunFolder.open(
        spec.folder,
        spec.experiment,
        {**spec.config, "threads": used},
        device=str(config.device),
        run_id=spec.run_id,
        step_key=experiment.step_key,
        identity=lambda data: run_identity(from_dict(experiment.Config, data)),
    )
    try:
        summary = experiment.run(config, folder)
    except BaseException as exc:
        folder.write_error(exc)
        raise
    finally:
        folder.close()
    folder.write_summary(summary)
    if summary.get("status") == "diverged":
        return "diverged"
    return "resumed" if status == "partial" else "done"
