"""The ``--help`` text of a study's config fields: flag, type or choices, help, default.

``plasticollapse <study> --help`` and ``--fields`` print :func:`describe_fields` of the
study's config class (:mod:`plasticollapse.runs.config`).
"""

from __future__ import annotations

import dataclasses
import textwrap
import types
import typing
from typing import Any, Literal, get_args, get_origin

from plasticollapse.runs.config import ALIAS_HELP, field_types

#: Width of the ``--name TYPE`` column of :func:`describe_fields`; longer flags put their
#: help on the next line, as argparse does.
FLAG_COLUMN = 34
HELP_WIDTH = 100


def describe_fields(config_class: type, heading: str | None = None) -> str:
    """Every field as ``--help`` lists it: flag, type or choices, help and default.

    ::

        --engine {auto, fast, reference}  online engine: fast (Numba) ... (default: auto)
        --hidden INT [INT ...]            hidden layer widths (default: 100 100 100)

    The choices come from ``Literal`` types, the help from :func:`field` (a field without
    help shows its default only).
    """
    kinds = field_types(config_class)
    lines = [heading or f"fields of {config_class.__name__}:"]
    for f in dataclasses.fields(config_class):
        flag = f"  --{f.name} {type_text(kinds[f.name])}"
        help_text = f.metadata.get("help", "") + ALIAS_HELP.get(f.name, "")
        text = " ".join(filter(None, [help_text, f"(default: {_default(f)})"]))
        indent = " " * FLAG_COLUMN
        if len(flag) <= FLAG_COLUMN - 2:
            first = flag.ljust(FLAG_COLUMN)
        else:
            lines.append(flag)
            first = indent
        lines.extend(
            textwrap.wrap(text, HELP_WIDTH, initial_indent=first, subsequent_indent=indent)
        )
    return "\n".join(lines)


def type_text(kind: Any) -> str:
    """``INT``, ``FLOAT|none``, ``{auto, fast, reference}``, ``INT [INT ...]`` ..."""
    origin = get_origin(kind)
    if origin is Literal:
        return "{" + ", ".join(map(str, get_args(kind))) + "}"
    if origin in (typing.Union, types.UnionType):
        options = [type_text(a) for a in get_args(kind) if a is not type(None)]
        return "|".join([*options, "none"])
    if origin is tuple:
        item = type_text(get_args(kind)[0])
        return f"{item} [{item} ...]"
    if kind is bool:
        return "{true, false}"
    return getattr(kind, "__name__", str(kind)).upper()


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value)
