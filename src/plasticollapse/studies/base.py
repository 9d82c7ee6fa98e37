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

import importlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from plasticollapse.runs.config import Study, config_hash, from_dict, parse_study, to_dict
from plasticollapse.runs.folder import RunFolder

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

        <package>/config.py    Config, run_label(config), estimated_cost(config)
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
    ``seed``, ``status`` and the summary's scalars); ``settings`` names the setting columns.
    Figures and files go into ``out``.
    """

    study: str
    table: pd.DataFrame
    runs: pd.DataFrame
    settings: list[str]
    out: Path
    bootstrap: int = 1000
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)


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


def run_id(experiment: Experiment, config: Any) -> str:
    """``<label>_seed<k>_<hash>``: readable, and unique for every distinct setting."""
    return f"{experiment.run_label(config)}_seed{config.seed}_{config_hash(config)}"


def plan(experiment_name: str, study: Study) -> list[RunSpec]:
    """One :class:`RunSpec` per run of the study, each with its own folder under ``out``.

    The runs' loggers are checked here, so that a missing optional extra (tensorboard,
    wandb) stops the study before its first run rather than inside a worker.
    """
    from plasticollapse.runs.loggers import check_loggers
    from plasticollapse.studies import get_study

    experiment = get_study(experiment_name)
    specs = []
    for config in study.expand():
        check_loggers(getattr(config, "loggers", ()))
        folder = Path(config.out) / run_id(experiment, config)
        specs.append(RunSpec(experiment_name, to_dict(config), str(folder)))
    folders = [s.folder for s in specs]
    if len(set(folders)) != len(folders):  # pragma: no cover - the hash makes this impossible
        raise RuntimeError("two runs of the study map to one folder")
    return specs


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
    """Run one spec to completion. Returns ``skipped``, ``resumed`` or ``done``.

    ``threads`` (when given) overrides the config's thread count: sweep backends use it to
    keep workers x threads within the machine's cores.
    """
    import torch

    from plasticollapse.studies import get_study

    experiment = get_study(spec.experiment)
    config = from_dict(experiment.Config, spec.config)
    status = run_status(spec)
    if status == "complete":
        return "skipped"
    n_threads = threads if threads is not None else config.threads
    if n_threads and n_threads > 0:
        torch.set_num_threads(n_threads)
        os.environ["NUMBA_NUM_THREADS"] = str(n_threads)
    folder = RunFolder.open(
        spec.folder,
        spec.experiment,
        spec.config,
        device=str(config.device),
        run_id=spec.run_id,
        step_key=experiment.step_key,
    )
    try:
        summary = experiment.run(config, folder)
    except BaseException as exc:
        folder.write_error(exc)
        raise
    finally:
        folder.close()
    folder.write_summary(summary)
    return "resumed" if status == "partial" else "done"
