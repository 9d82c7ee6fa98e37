"""The narrow protocol the runs floor executes: a :class:`RunSpec`, and the study it names.

A spec is plain data (picklable and JSON-ready): the study's registry name, the run's config
as a dict, its folder, and ``study``, the ``"module:attribute"`` of the object that runs it.
A worker in another process (a process pool, Ray, SLURM) imports that target itself
(:func:`load_study`), so nothing above this floor has to be shipped or imported by name here:
the registry of :mod:`plasticollapse.studies` fills the target in when it plans a run.

What this floor asks of that object is :class:`RunnableStudy`, a part of
:class:`~plasticollapse.studies.protocol.Experiment`: its ``Config``, ``step_key`` and
``setting_keys``, ``run`` and ``estimated_cost`` (and, optionally, ``estimated_cpu_hours``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from plasticollapse.runs.folder import RunFolder


@runtime_checkable
class RunnableStudy(Protocol):
    """What executing, ordering and labelling a run needs of its study."""

    Config: type
    step_key: str
    setting_keys: tuple[str, ...]

    def estimated_cost(self, config: Mapping[str, Any]) -> float:
        """Relative cost of a run (any unit): sweeps start the most expensive first."""

    def run(self, config: Any, folder: Any, callbacks: Iterable[Any] = ()) -> dict:
        """Train and measure, resuming from ``folder``; append rows; return the summary."""


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs to execute one run: picklable and JSON-ready.

    ``study`` is the ``"module:attribute"`` of the object that runs it; specs made by
    :func:`plasticollapse.studies.base.plan` always carry it. A spec without one (made by
    hand, or pickled before the field existed: unpickling leaves this default) is given its
    target by :func:`plasticollapse.studies.base.with_target`.
    """

    experiment: str
    config: dict[str, Any]
    folder: str
    study: str = ""

    @property
    def run_id(self) -> str:
        return Path(self.folder).name


class MissingTargetError(ValueError):
    """A spec names no ``"module:attribute"`` to run it."""


def study_of(spec: RunSpec) -> RunnableStudy:
    """The object that runs ``spec``, imported from its ``study`` target."""
    if not spec.study:
        raise MissingTargetError(
            f"the spec of {spec.folder} names no study target ('module:attribute'); plan it "
            "with plasticollapse.studies.base.plan, or give it one with "
            "plasticollapse.studies.base.with_target"
        )
    return load_study(spec.study)


@cache
def load_study(target: str) -> RunnableStudy:
    """The object at ``target`` (``"module:attribute"``); a TypeError when it cannot run."""
    module_name, _, attribute = target.partition(":")
    if not attribute:
        raise ValueError(f"study target {target!r} is not 'module:attribute'")
    study = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(study, RunnableStudy):
        raise TypeError(f"{target} does not implement plasticollapse.runs.spec.RunnableStudy")
    return study


def run_status(spec: RunSpec) -> str:
    """``complete``, ``partial`` (has a checkpoint or rows) or ``new``."""
    folder = RunFolder(spec.folder)
    if folder.is_complete:
        return "complete"
    if folder.checkpoint_path.exists() or folder.metrics_path.exists():
        return "partial"
    return "new"
