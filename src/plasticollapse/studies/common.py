"""Small helpers the experiments share: a NaN-tolerant Pearson r and table formatting."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def pearson(a: Sequence[float], b: Sequence[float]) -> float:
    """Pearson r over the pairs where both are finite; NaN with < 3 pairs or a constant side.

    r = sum (a_i - a_bar)(b_i - b_bar) / sqrt(sum (a_i - a_bar)^2 sum (b_i - b_bar)^2)
    """
    pairs = np.array(
        [(u, v) for u, v in zip(a, b, strict=True) if finite(u) and finite(v)], dtype=float
    )
    if len(pairs) < 3:
        return float("nan")
    da, db = pairs[:, 0] - pairs[:, 0].mean(), pairs[:, 1] - pairs[:, 1].mean()
    denominator = math.sqrt(float((da**2).sum() * (db**2).sum()))
    return float((da * db).sum() / denominator) if denominator > 0 else float("nan")


def finite(v: Any) -> bool:
    """A real number (not a bool) that is neither NaN nor infinite."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def mean_finite(values: Iterable[Any]) -> float:
    """The mean of the finite values, NaN when there are none."""
    kept = [v for v in values if finite(v)]
    return float(np.mean(kept)) if kept else float("nan")


def fmt(value: Any, spec: str = ".3f", width: int = 0) -> str:
    """``value`` formatted with ``spec``, or ``n/a`` when it is not a finite number."""
    text = format(value, spec) if finite(value) else "n/a"
    return f"{text:>{width}}"
