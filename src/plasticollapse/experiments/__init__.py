"""The paper's experiments, and the one way every run of them is planned and executed.

An experiment is a module exposing:

- ``NAME``: its name (``"permuted"``, ``"warmstart"``);
- ``Config``: a frozen dataclass of one run's settings (with ``seed``, ``out``, ``device``,
  ``threads``; any scalar field may be given several values to make a study);
- ``run_label(config) -> str``: a short readable label of the run's setting (``"fte5"``);
- ``run(config, folder: RunFolder) -> dict``: trains, resuming from the folder's checkpoint,
  appends metrics rows, and returns the summary to write.

:func:`plan` turns a study into :class:`RunSpec` s (plain, picklable: what sweep backends ship
to workers) and :func:`execute` runs one of them: it skips a complete run, resumes a partial
one, and records a failure's traceback in the run folder before re-raising.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from plasticollapse.config import Study, config_hash, from_dict, parse_study, to_dict
from plasticollapse.results import RunFolder

EXPERIMENTS = {
    "permuted": "plasticollapse.experiments.permuted",
    "warmstart": "plasticollapse.experiments.warmstart",
}


def get_experiment(name: str) -> ModuleType:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    return importlib.import_module(EXPERIMENTS[name])


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs to execute one run: picklable and JSON-ready."""

    experiment: str
    config: dict[str, Any]
    folder: str

    @property
    def run_id(self) -> str:
        return Path(self.folder).name


def run_id(experiment: ModuleType, config: Any) -> str:
    """``<label>_seed<k>_<hash>``: readable, and unique for every distinct setting."""
    return f"{experiment.run_label(config)}_seed{config.seed}_{config_hash(config)}"


def plan(experiment_name: str, study: Study) -> list[RunSpec]:
    """One :class:`RunSpec` per run of the study, each with its own folder under ``out``."""
    experiment = get_experiment(experiment_name)
    specs = []
    for config in study.expand():
        folder = Path(config.out) / run_id(experiment, config)
        specs.append(RunSpec(experiment_name, to_dict(config), str(folder)))
    folders = [s.folder for s in specs]
    if len(set(folders)) != len(folders):  # pragma: no cover - the hash makes this impossible
        raise RuntimeError("two runs of the study map to one folder")
    return specs


def plan_from_file(experiment_name: str, config_file: str | None, argv: list[str]) -> list[RunSpec]:
    experiment = get_experiment(experiment_name)
    return plan(experiment_name, parse_study(experiment.Config, config_file, argv))


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

    experiment = get_experiment(spec.experiment)
    config = from_dict(experiment.Config, spec.config)
    status = run_status(spec)
    if status == "complete":
        return "skipped"
    n_threads = threads if threads is not None else config.threads
    if n_threads and n_threads > 0:
        torch.set_num_threads(n_threads)
        os.environ["NUMBA_NUM_THREADS"] = str(n_threads)
    folder = RunFolder.open(
        spec.folder, spec.experiment, spec.config, device=str(config.device), run_id=spec.run_id
    )
    try:
        summary = experiment.run(config, folder)
    except BaseException as exc:
        folder.write_error(exc)
        raise
    folder.write_summary(summary)
    return "resumed" if status == "partial" else "done"
