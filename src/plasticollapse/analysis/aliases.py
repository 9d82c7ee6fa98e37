"""One canonical name per metric: aliases are found, listed, and never ranked twice.

Runs record some quantities under two names: ``dead_fraction`` is the last hidden layer's
``dead_fraction_layer<L>`` (likewise ``effective_rank``, ``srank``, ``dormant_fraction``),
and ``nc4_mismatch = 1 - nc4_agreement`` (Papyan's mismatch against the authors'
agreement). Ranking both counts one metric twice ("33 metrics" were 28 distinct ones).

:func:`find_aliases` finds such pairs in the data itself: two metrics are aliases when,
over every (run, step) where either is recorded, both are recorded and one is an exact
affine function of the other, x = a + b y (identical: a = 0, b = 1; negated: b = -1).
Every correlation-based statistic is then the same up to sign, so one name stands for
both. The canonical name of a group is the one :data:`DECLARED` names, else a name
without a ``_layer<k>`` suffix, else the shortest (then alphabetical).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

#: Aliases known by definition (alias -> canonical), whatever the data say.
DECLARED = {"nc4_mismatch": "nc4_agreement"}
#: Relative tolerance of "exact": max |x - (a + b y)| <= TOLERANCE * max(|x|, 1e-12).
TOLERANCE = 1e-9


def per_step_matrix(table: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """(run, step) x metric values of the per-step rows (a repeated row: last wins)."""
    rows = table[table["step"].notna()]
    if metrics is not None:
        rows = rows[rows["metric"].isin(list(metrics))]
    rows = rows.drop_duplicates(["run_id", "step", "metric"], keep="last")
    return rows.pivot(index=["run_id", "step"], columns="metric", values="value")


def affine_relation(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """``(a, b)`` with x = a + b y exactly (see :data:`TOLERANCE`), else None. Both must
    be finite at the same entries (at least 3); a constant only matches the same constant
    (``(0, 1)``: identical)."""
    fx, fy = np.isfinite(x), np.isfinite(y)
    if not np.array_equal(fx, fy) or fx.sum() < 3:
        return None
    x, y = x[fx], y[fy]
    if np.ptp(x) == 0 or np.ptp(y) == 0:  # a constant matches only the same constant
        return (0.0, 1.0) if np.array_equal(x, y) else None
    b, a = np.polyfit(y, x, 1)
    scale = float(np.abs(x).max())
    if np.abs(x - (a + b * y)).max() <= TOLERANCE * scale:
        return float(a), float(b)
    return None


def relation_text(a: float, b: float) -> str:
    """``identical``, ``negated (= 1 - x)`` or ``affine (= a + b x)``: how an alias reads."""
    a_text = f"{a:.6g}"
    if abs(b - 1) <= 1e-9 and abs(a) <= 1e-12:
        return "identical"
    if abs(b + 1) <= 1e-9:
        return f"negated (= {a_text} - x)"
    return f"affine (= {a_text} + {b:.6g} x)"


def _preference(name: str) -> tuple:
    return (re.search(r"_layer\d+$", name) is not None, len(name), name)


def find_aliases(table: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Alias pairs among the per-step ``metrics`` of ``table`` (default: all of them).

    Returns one row per alias: ``alias, canonical, relation`` (alias = a + b canonical,
    :func:`relation_text`), ``a``, ``b`` and ``n`` (the (run, step) entries compared). The
    canonical metrics are those that never appear as ``alias``. Declared aliases
    (:data:`DECLARED`) are listed when both names are present, whether or not the data
    bear them out exactly (the relation then says ``declared``).
    """
    matrix = per_step_matrix(table, metrics)
    names = sorted(matrix.columns)
    values = {m: matrix[m].to_numpy(dtype=np.float64) for m in names}
    # Candidates first: an exact affine pair has |r| = 1 (or both are the same constant).
    corr = matrix.corr(min_periods=3).abs()
    parent = {m: m for m in names}

    def root(m: str) -> str:
        while parent[m] != m:
            m = parent[m]
        return m

    for i, m in enumerate(names):
        for other in names[i + 1 :]:
            c = corr.at[m, other]
            if not (np.isnan(c) or c > 1 - 1e-6):
                continue
            if affine_relation(values[m], values[other]) is not None:
                parent[root(other)] = root(m)
    for alias, canonical in DECLARED.items():
        if alias in parent and canonical in parent:
            parent[root(alias)] = root(canonical)

    groups: dict[str, list[str]] = {}
    for m in names:
        groups.setdefault(root(m), []).append(m)
    rows = []
    for members in groups.values():
        if len(members) < 2:
            continue
        declared = [DECLARED[m] for m in members if DECLARED.get(m) in members]
        canonical = declared[0] if declared else min(members, key=_preference)
        for m in sorted(set(members) - {canonical}):
            relation = affine_relation(values[m], values[canonical])
            a, b = relation if relation is not None else (np.nan, np.nan)
            text = relation_text(a, b) if relation is not None else "declared"
            n = int(np.isfinite(values[m]).sum())
            rows.append(dict(alias=m, canonical=canonical, relation=text, a=a, b=b, n=n))
    columns = ["alias", "canonical", "relation", "a", "b", "n"]
    return pd.DataFrame(rows, columns=columns)


def canonical_metrics(metrics: Sequence[str], aliases: pd.DataFrame) -> list[str]:
    """``metrics`` without the aliases of :func:`find_aliases`, order kept."""
    drop = set(aliases["alias"])
    return [m for m in metrics if m not in drop]


def aliases_of(aliases: pd.DataFrame) -> dict[str, str]:
    """canonical -> ``"alias (relation); ..."``: the text the leaderboard lists."""
    out: dict[str, list[str]] = {}
    for row in aliases.itertuples(index=False):
        out.setdefault(row.canonical, []).append(f"{row.alias} ({row.relation})")
    return {k: "; ".join(v) for k, v in out.items()}
