"""How to read a run folder: the study's step and setting keys, and the run's setting
fields, as its config.json records them (:func:`plasticollapse.runs.execute.reading_keys`).

Run folders written before config.json recorded them are read with what the registered
study says: the one place the analysis floor asks the study registry, a lazy import up a
floor kept for those folders (tests/test_architecture.py lists it as a known exception).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def study_keys(experiment: str) -> tuple[str | None, tuple[str, ...]]:
    """``(step_key, setting_keys)`` of a registered study; ``(None, ())`` for any other.

    Only for run folders written before config.json recorded these keys (the tidy table
    reads them from the folder first).
    """
    study = _registered(experiment)
    if study is None:
        return None, ()  # not registered (or its module is gone): still load its rows
    return study.step_key, tuple(study.setting_keys)


def _registered(experiment: str) -> Any:
    """The registered study ``experiment``, or None (for folders of before, as above)."""
    from plasticollapse.studies import get_study

    try:
        return get_study(experiment)
    except (ValueError, ImportError, AttributeError, TypeError):
        return None


def folder_keys(runs: Sequence[Mapping[str, Any]]) -> tuple[str | None, tuple[str, ...]] | None:
    """``(step_key, setting_keys)`` as the first of ``runs`` (config.json records) that
    records them says, or None when none does (folders written before they were recorded)."""
    for record in runs:
        if "step_key" in record:
            return record["step_key"], tuple(record.get("setting_keys") or ())
    return None


def applicable_fields(record: Mapping[str, Any]) -> set[str] | None:
    """The config fields that may label this run's setting (config.json's
    ``setting_fields``); for a folder written before they were recorded, what the
    registered study says of its config; None (every field) for an unregistered study."""
    if "setting_fields" in record:
        return set(record["setting_fields"])
    study = _registered(str(record.get("experiment")))
    if study is None:
        return None
    from plasticollapse.runs.config import ConfigError, from_dict
    from plasticollapse.runs.identity import setting_fields

    try:
        return set(setting_fields(from_dict(study.Config, record.get("config") or {})))
    except (ConfigError, ValueError, TypeError, KeyError):
        return None
