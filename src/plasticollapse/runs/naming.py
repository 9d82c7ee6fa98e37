"""How a setting's value reads in run names, tables and ``--dry-run``: one spelling
everywhere (``0.01``, ``64-64``, ``true``, ``none``)."""

from __future__ import annotations

import re
from typing import Any


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
