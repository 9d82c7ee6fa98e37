"""A run's identity: what it computes, as plain data, and the hash that names its folder.

Every config field that says *what* a run computes counts, not where it runs
(:data:`~plasticollapse.runs.config.EXECUTION_FIELDS`); two marks, set where a field is
declared (:func:`~plasticollapse.runs.config.field`), refine it: a remedy's parameter counts
only in runs that apply the remedy, and a field added after runs exist is left out while
at its default. The legacy hash names folders made before these marks, so that they can be
found and renamed once (:func:`plasticollapse.studies.base.same_run_elsewhere`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from plasticollapse.runs.config import EXECUTION_FIELDS, to_dict


def run_identity(config: Any) -> dict[str, Any]:
    """What a run computes, as plain JSON data: the fields its folder name's hash covers.

    Every field of the config except the execution fields (:data:`EXECUTION_FIELDS`), with
    two exceptions marked where a field is declared (:func:`field`): a remedy's parameter
    counts only when the run applies that remedy (``config.applied_remedies()``), so that
    ``--shrink 0.5`` without Shrink & Perturb is the same run as without it; a field marked
    ``added_later`` is left out while it holds its default. ``plain`` is left out of
    ``remedies`` (``--remedies plain`` is the run without remedies).
    """
    data = to_dict(config)
    out = {}
    for f in _computing_fields(config):
        if f.metadata.get("added_later") and _same_json(data[f.name], f.default):
            continue
        out[f.name] = data[f.name]
    return identity_fields(out)


def setting_fields(config: Any) -> list[str]:
    """The fields that may label a run's setting in tables and figures: those of
    :func:`run_identity`, with a field marked ``added_later`` kept at its default too (its
    default is a value a reader should see beside another run's). A remedy's parameters
    are among them only when the run applies that remedy, so a plain run is not labelled
    with Continual Backprop's maturity. Run folders record them (config.json's
    ``setting_fields``)."""
    return [f.name for f in _computing_fields(config)]


def _remedy_fields_not_applied(config: Any) -> list[dataclasses.Field]:
    """The parameters of remedies that the run does not apply (none for a config without
    ``applied_remedies``)."""
    computing = {f.name for f in _computing_fields(config)}
    return [
        f
        for f in dataclasses.fields(config)
        if f.metadata.get("remedy") is not None and f.name not in computing
    ]


def _computing_fields(config: Any) -> list[dataclasses.Field]:
    """The config's fields that say what its run computes: no execution field, and a
    remedy's parameter only when the run applies the remedy (``config.applied_remedies()``)."""
    applied = getattr(config, "applied_remedies", None)
    applied = set(applied()) if callable(applied) else None
    fields = []
    for f in dataclasses.fields(config):
        if f.name in EXECUTION_FIELDS:
            continue
        remedy = f.metadata.get("remedy")
        if remedy is not None and applied is not None and remedy not in applied:
            continue
        fields.append(f)
    return fields


def config_hash(config: Any, length: int = 8) -> str:
    """Stable short hash of what a run computes: of :func:`run_identity`."""
    return _digest(run_identity(config), length)


def legacy_config_hash(config: Any, length: int = 8) -> str:
    """The hash run folders were named by before :func:`run_identity` (every field but the
    execution fields; those a config class listed in ``LEGACY_IDENTITY_OMITS`` left out
    while at their defaults). Used only to find such folders and rename them once.

    A parameter of a remedy the run does not apply is taken at its default: it does not
    change what the run computes (:func:`run_identity`), and the folders of that time were
    made with the defaults of the parameters that existed (a preset that sets one later,
    as the quick presets set Continual Backprop's rate, still finds its plain runs)."""
    unapplied = {f.name: f.default for f in _remedy_fields_not_applied(config)}
    if unapplied:
        config = dataclasses.replace(config, **unapplied)
    late: frozenset[str] = getattr(type(config), "LEGACY_IDENTITY_OMITS", frozenset())
    defaults = {f.name: f.default for f in dataclasses.fields(config) if f.name in late}
    data = {
        k: v
        for k, v in identity_fields(to_dict(config)).items()
        if not (k in defaults and _same_json(v, defaults[k]))
    }
    return _digest(data, length)


def identity_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The fields of a config (as a dict) that say what its run computes: the execution
    fields dropped, and ``plain`` (which applies nothing) left out of ``remedies``, so that
    ``--remedies plain`` is the run without remedies (same folder, same matrix cell)."""
    out = {k: v for k, v in data.items() if k not in EXECUTION_FIELDS}
    if isinstance(out.get("remedies"), list | tuple):
        out["remedies"] = [name for name in out["remedies"] if name != "plain"]
    return out


def _digest(data: dict[str, Any], length: int) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``data`` as sorted JSON."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:length]


def _same_json(value: Any, default: Any) -> bool:
    """Equal once written as JSON (a tuple default and its list in to_dict compare equal)."""
    return json.dumps(value) == json.dumps(default)
