"""The registry of studies: every experiment plasticollapse can run, plan, sweep and report.

A study is one folder below ``plasticollapse/studies/`` (or any importable module) whose
object satisfies :class:`~plasticollapse.studies.protocol.Experiment`. The registry maps its
name to ``"module:attribute"``; a planned run's spec carries that target, so that sweep
workers in other processes (a process pool, Ray, SLURM) import the study from it.

Adding a study is one line here, or, for a third-party package, one entry point::

    # pyproject.toml of the other package
    [project.entry-points."plasticollapse.studies"]
    mystudy = "mypackage.mystudy:STUDY"

The CLI, sweeps, the tidy table and the report loop over :func:`study_names`; none of them
names a study.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points

from plasticollapse.studies.protocol import Experiment

#: Built-in studies: name -> "module:attribute" of the object implementing Experiment.
REGISTRY: dict[str, str] = {
    "permuted": "plasticollapse.studies.permuted:STUDY",
    "warmstart": "plasticollapse.studies.warmstart:STUDY",
    "label_permuted": "plasticollapse.studies.label_permuted:STUDY",
    "random_labels": "plasticollapse.studies.random_labels:STUDY",
    "class_incremental": "plasticollapse.studies.class_incremental:STUDY",
    "bitflip_regression": "plasticollapse.studies.bitflip_regression:STUDY",
}

#: The entry-point group through which other packages register studies.
ENTRY_POINT_GROUP = "plasticollapse.studies"

__all__ = [
    "ENTRY_POINT_GROUP",
    "REGISTRY",
    "Experiment",
    "get_study",
    "register",
    "study_names",
    "study_target",
]


@cache
def _entry_point_studies() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _known() -> dict[str, str]:
    # Built-in and explicitly registered names win over an entry point of the same name.
    return {**_entry_point_studies(), **REGISTRY}


def study_names() -> list[str]:
    """Every registered study's name: built-in first, then entry points, in order."""
    return list(dict.fromkeys([*REGISTRY, *_entry_point_studies()]))


def register(name: str, target: str) -> None:
    """Register ``target`` ("module:attribute") as study ``name`` in this process."""
    if ":" not in target:
        raise ValueError(f"register({name!r}, {target!r}): target must be 'module:attribute'")
    REGISTRY[name] = target
    _load.cache_clear()


def study_target(name: str) -> str:
    """The ``"module:attribute"`` registered as ``name`` (what a :class:`~plasticollapse.
    runs.spec.RunSpec` carries, so workers import the study without this registry); a
    ValueError listing the known names otherwise."""
    known = _known()
    if name not in known:
        raise ValueError(f"unknown study {name!r}; choose one of {', '.join(study_names())}")
    return known[name]


def get_study(name: str) -> Experiment:
    """The study registered as ``name``; a ValueError listing the known names otherwise."""
    return _load(study_target(name))


@cache
def _load(target: str) -> Experiment:
    module_name, _, attribute = target.partition(":")
    study = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(study, Experiment):
        raise TypeError(f"{target} does not implement plasticollapse.studies.Experiment")
    return study
