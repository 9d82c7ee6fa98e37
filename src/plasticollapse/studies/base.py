"""The seam every study plugs into: how runs are planned and executed, and
:class:`FolderStudy`.

A study (``permuted``, ``warmstart``, a test's toy study, a third-party package's) is one
object satisfying :class:`~plasticollapse.studies.protocol.Experiment` (importable from
here too), registered by name in :mod:`plasticollapse.studies`.
Everything else is generic:

- :func:`plan` expands a config file and ``--field value`` overrides into :class:`RunSpec` s
  (plain and picklable: what sweep backends ship to workers);
- :func:`execute` runs one spec: it skips a complete run, resumes a partial one, and records
  a failure's traceback in the run folder before re-raising
  (:func:`plasticollapse.runs.execute.execute`, which finds the study from the spec's
  ``"module:attribute"`` target, so that the runs floor needs no registry);
- run folders record the study's ``step_key`` and ``setting_keys``, with which the tidy
  table (:mod:`plasticollapse.analysis`) reads them; the report command
  (:mod:`plasticollapse.studies.report_command`) asks each study present for its
  :class:`ReportSection`.

Data flows one way: config -> study.run -> run folder -> analysis -> report.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from plasticollapse.report.section import ReportSection, StudyResults
from plasticollapse.runs.config import (
    EXECUTION_FIELDS,
    ConfigError,
    Study,
    from_dict,
    parse_study,
    to_dict,
)
from plasticollapse.runs.execute import execute as execute_with_target
from plasticollapse.runs.folder import RunFolder
from plasticollapse.runs.identity import config_hash, legacy_config_hash

# Defined elsewhere (the runs protocol, the report's plain data, the study protocol) and
# re-exported for the studies and users that import them from here.
from plasticollapse.runs.naming import setting_text, value_text
from plasticollapse.runs.spec import RunSpec, run_status
from plasticollapse.studies.protocol import Callback, Experiment

__all__ = [
    "Callback",
    "Experiment",
    "FolderStudy",
    "MAX_NAME",
    "ReportSection",
    "RunSpec",
    "StudyResults",
    "execute",
    "named_axes",
    "plan",
    "plan_from_file",
    "run_id",
    "run_status",
    "same_run_elsewhere",
    "setting_text",
    "value_text",
    "with_target",
]


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
    from plasticollapse.studies import get_study, study_target

    experiment = get_study(experiment_name)
    target = study_target(experiment_name)
    axes = named_axes(experiment, study)
    existing: dict[Path, dict[str, list[Path]]] = {}
    specs = []
    for config in study.expand():
        check_loggers(getattr(config, "loggers", ()))
        folder = Path(config.out) / run_id(experiment, config, axes)
        if not folder.exists():
            folder = same_run_elsewhere(experiment_name, config, existing) or folder
        specs.append(RunSpec(experiment_name, to_dict(config), str(folder), target))
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


def with_target(spec: RunSpec) -> RunSpec:
    """``spec`` with its study's ``"module:attribute"`` from the registry, when it has none
    (a spec made by hand, or a JSON or pickle of one written before specs carried it)."""
    if spec.study:
        return spec
    from plasticollapse.studies import study_target

    return dataclasses.replace(spec, study=study_target(spec.experiment))


def execute(spec: RunSpec, threads: int | None = None) -> str:
    """:func:`plasticollapse.runs.execute.execute` of the spec, its study target looked up
    in the registry when the spec has none (:func:`with_target`)."""
    return execute_with_target(with_target(spec), threads)
