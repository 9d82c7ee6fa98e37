"""Small helpers the studies share: the paper they reproduce, the one correlation, and
table formatting."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

#: The paper both built-in studies reproduce.
PAPER = (
    "Bonifazi, Chalas, Hess, Łucki, 'Can We Understand Plasticity Through Neural Collapse?' "
    "(arXiv 2404.02719, 2024)"
)


def pearson(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Pearson r over the pairs where both are finite (None counts as missing); NaN with
    fewer than 3 pairs or a constant side. The package's one implementation:
    :func:`plasticollapse.analysis.stats.correlate`."""
    from plasticollapse.analysis.stats import correlate

    return correlate(a, b, "pearson")


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
