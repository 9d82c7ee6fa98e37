"""Which recorded metric tracks a target best: every per-step metric's correlation with it.

:func:`rank_metrics` correlates each metric of the tidy table with one or more targets
(``accuracy`` and ``pl`` in the Permuted study, ``full_test_acc`` in the warm start) across
steps, with one of the two definitions the reports use for an r over steps:

* ``"mean_curve"``: r over steps between the per-step means over runs (the Permuted
  headline: mean NC1 vs mean accuracy per task);
* ``"mean_of_runs"``: the mean over runs of each run's own r over its steps (the warm
  start's per-seed correlations).

Spearman rho is computed the same way. A metric is left out when it has fewer than 3
finite pairs with the target or is constant (r undefined).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from plasticollapse.analysis.frames import metrics, paired_curves
from plasticollapse.analysis.stats import mean_curve_r, nanmean, per_run_r

#: The r definitions :func:`rank_metrics` knows, by name.
DEFINITIONS: dict[str, Callable[[np.ndarray, np.ndarray, str], float]] = {
    "mean_curve": mean_curve_r,
    "mean_of_runs": lambda x, y, method: nanmean(per_run_r(x, y, method)),
}

#: How each definition reads in a caption.
DEFINITION_TEXT = {
    "mean_curve": "r across steps of the per-step means over seeds",
    "mean_of_runs": "mean over seeds of each seed's r across its steps",
}


def rank_metrics(
    table: pd.DataFrame,
    run_ids: Sequence[str],
    targets: Sequence[str],
    exclude: Sequence[str] = (),
    definition: str = "mean_curve",
    select: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Every per-step metric of ``run_ids`` correlated with each of ``targets``.

    Returns one row per metric, ranked by |Pearson r| with the first target (largest
    first): ``metric``, then ``pearson_r_<target>`` and ``spearman_rho_<target>`` for each
    target, and ``n`` (steps with a finite pair with the first target, per-step means
    for ``"mean_curve"``, the most of any run for ``"mean_of_runs"``). ``exclude`` names
    metrics to leave out (the targets always are); ``select`` restricts the steps (e.g.
    ``lambda f: analysis.between(f, hi=139)``).
    """
    if definition not in DEFINITIONS:
        raise ValueError(f"definition must be one of {sorted(DEFINITIONS)}, not {definition!r}")
    statistic = DEFINITIONS[definition]
    skip = set(exclude) | set(targets)
    rows = []
    for metric in metrics(table[table["run_id"].isin(list(run_ids))]):
        if metric in skip:
            continue
        row: dict[str, float | str] = {"metric": metric}
        lead = math.nan  # Pearson r with the first target: the ranking key
        for i, target in enumerate(targets):
            cx, cy = paired_curves(table, metric, target, run_ids)
            if select is not None:
                cx, cy = select(cx), select(cy)
            x, y = cx.to_numpy(), cy.to_numpy()
            row[f"pearson_r_{target}"] = r = statistic(x, y, "pearson")
            row[f"spearman_rho_{target}"] = statistic(x, y, "spearman")
            if i == 0:
                row["n"] = _pairs(x, y, definition)
                lead = r
        if math.isfinite(lead):
            rows.append(row)
    columns = ["metric"]
    for target in targets:
        columns += [f"pearson_r_{target}", f"spearman_rho_{target}"]
    frame = pd.DataFrame(rows, columns=[*columns, "n"])
    order = frame[f"pearson_r_{targets[0]}"].abs().sort_values(ascending=False, kind="stable")
    return frame.loc[order.index].reset_index(drop=True)


def _pairs(x: np.ndarray, y: np.ndarray, definition: str) -> int:
    """Finite pairs behind one coefficient (see :func:`rank_metrics`)."""
    if definition == "mean_curve":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN steps: NaN, quietly
            mx, my = np.nanmean(x, axis=0), np.nanmean(y, axis=0)
        return int((np.isfinite(mx) & np.isfinite(my)).sum())
    return int((np.isfinite(x) & np.isfinite(y)).sum(axis=1).max(initial=0))
