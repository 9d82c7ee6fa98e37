"""Table cells and the tables every study's report shares: number formatting, protocol
lines, correlation tables, and the comparison with a paper's numbers.

Studies build their :class:`~plasticollapse.report.section.ReportSection` tables from these
helpers, so that the same quantity reads the same way in every section: an r is signed
with two decimals, an accuracy in percent, a missing value is a dash.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from plasticollapse.analysis import (
    NOT_SETTINGS,
    normalise_setting,
    same,
    setting_groups,
    setting_label,
)

if TYPE_CHECKING:
    from plasticollapse.report.section import StudyResults

DASH = "—"


# =========================================================================== cells


def fmt(value: Any, unit: str = "", digits: int = 3) -> str:
    """A table cell: None/NaN -> "—"; a (low, high) range "a..b"; by ``unit``: "r" signed
    with two decimals, "%" one decimal and a percent sign, "frac" three decimals, "p" a
    p-value (scientific below 0.001), "int" an integer; else ``digits`` significant digits."""
    if value is None:
        return DASH
    if isinstance(value, tuple):
        return f"{fmt(value[0], unit, digits)}..{fmt(value[1], unit, digits)}"
    if isinstance(value, str):
        return value
    v = float(value)
    if not math.isfinite(v):
        return DASH
    if unit == "r":
        return f"{v:+.2f}"
    if unit == "%":
        return f"{v:.1f}%"
    if unit == "frac":
        return f"{v:.3f}"
    if unit == "p":
        return f"{v:.1e}" if v < 1e-3 else f"{v:.3f}"
    if unit == "int":
        return str(int(v))
    return f"{v:.{digits}g}"


def percent_scale(values: Any) -> float:
    """100 when accuracies are fractions (max <= 1.5), else 1: tables and axes read in %."""
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    return 100.0 if finite.size == 0 or finite.max() <= 1.5 else 1.0


def to_percent(values: Any) -> np.ndarray:
    """Accuracies as percent whether the runs wrote fractions (<= 1.5) or percent."""
    v = np.asarray(values, dtype=np.float64)
    return v * percent_scale(v)


def to_fraction(values: Any) -> np.ndarray:
    """Accuracies as fractions whether the runs wrote fractions or percent."""
    v = np.asarray(values, dtype=np.float64)
    return v / (100.0 / percent_scale(v))


def mean_std(values: Any, unit: str = "") -> str:
    """``mean ± std`` over the finite values (population std, ddof 0); a dash when none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return f"{fmt(v.mean(), unit)} ± {fmt(v.std(), unit)}" if v.size else DASH


# =========================================================================== protocol


def seeds_text(runs: pd.DataFrame) -> str:
    """``2 seeds (0, 1; 2 complete)``, with ``, 1 diverged`` when a run diverged."""
    seeds = sorted({str(s) for s in runs["seed"]})
    done = int(runs["complete"].sum())
    diverged = int((runs["status"] == "diverged").sum())
    text = f"{len(seeds)} seed{'s' * (len(seeds) != 1)} ({', '.join(seeds)}; {done} complete"
    return text + (f", {diverged} diverged)" if diverged else ")")


def reached(runs: pd.DataFrame) -> float:
    """The last step any of the runs reached (NaN when none wrote a row)."""
    steps = runs["last_step"].to_numpy(dtype=float)
    steps = steps[np.isfinite(steps)]
    return float(steps.max()) if steps.size else math.nan


def shared_value(runs: pd.DataFrame, key: str) -> str:
    """A config field's value as text when every run has the same, else ``various``."""
    values = {str(normalise_setting(c.get(key))) for c in runs["config"]}
    return values.pop() if len(values) == 1 else "various"


def rank_by_setting(
    results: StudyResults,
    targets: Sequence[str],
    exclude: Sequence[str],
    definition: str = "mean_curve",
    select: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """:func:`~plasticollapse.analysis.ranking.rank_metrics` for every setting of a study,
    stacked: ``setting``, ``rank`` (1 = largest |Pearson r| with the first target), then
    its columns."""
    from plasticollapse.analysis import rank_metrics

    frames = []
    for setting, runs in setting_groups(results.runs, results.settings):
        ids = list(runs["run_id"])
        ranked = rank_metrics(results.table, ids, targets, exclude, definition, select)
        ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
        ranked.insert(0, "setting", setting_label(setting))
        frames.append(ranked)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def ranking_table(
    ranking: pd.DataFrame,
    top: int,
    also: Callable[[str], bool],
    columns: Mapping[str, tuple[str, str]],
) -> pd.DataFrame:
    """The report's view of :func:`rank_by_setting`: per setting its ``top`` metrics and
    those ``also(metric)`` picks wherever they rank; ``columns`` maps each shown header to
    (column of ``ranking``, :func:`fmt` unit)."""
    if not len(ranking):
        return ranking
    shown = ranking[(ranking["rank"] <= top) | ranking["metric"].map(also).astype(bool)]
    out = {"setting": shown["setting"], "rank": shown["rank"], "metric": shown["metric"]}
    out.update({head: [fmt(v, unit) for v in shown[col]] for head, (col, unit) in columns.items()})
    return pd.DataFrame(out)


def common_config_text(runs: pd.DataFrame, settings: Sequence[str]) -> str:
    """``k=v, ...`` for the config fields every run shares (the fixed part of the protocol)."""
    configs = list(runs["config"])
    if not configs:
        return ""
    skip = set(settings) | NOT_SETTINGS
    shared = {
        k: normalise_setting(v)
        for k, v in sorted(configs[0].items())
        if k not in skip and all(repr(c.get(k)) == repr(v) for c in configs)
    }
    return ", ".join(f"{k}={v}" for k, v in shared.items())


def runs_overview(runs: pd.DataFrame, settings: Sequence[str]) -> pd.DataFrame:
    """setting | runs | complete | partial | seeds: what was run, one row per setting."""
    rows = []
    for setting, group in setting_groups(runs, settings):
        done = int(group["complete"].sum())
        rows.append(
            {
                "setting": setting_label(setting),
                "runs": len(group),
                "complete": done,
                "partial": len(group) - done,
                "seeds": ", ".join(str(s) for s in group["seed"]),
            }
        )
    return pd.DataFrame(rows)


# =========================================================================== correlations

#: Columns of a correlation row (a dict per correlation; see :func:`correlation_tables`).
CORRELATION_FIELDS = (
    "analysis",
    "label",
    "steps",
    "n",
    "pearson_r",
    "spearman_rho",
    "ci_low",
    "ci_high",
    "n_seeds",
    "per_seed_r",
)


#: The shown table's headers. No p-values: the steps behind an r over steps are
#: autocorrelated (lag-1 ~0.95 over Permuted tasks), so a p-value from their count is false;
#: the interval over seeds is the statement of uncertainty.
CORRELATION_HEADERS = [
    "analysis",
    "setting",
    "steps",
    "n",
    "Pearson r",
    "Spearman rho",
    "95% CI (seeds)",
    "seeds",
    "per-seed r",
]


def correlation_tables(rows: Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(shown, raw)``: the report's formatted correlation table and the numbers for CSV.

    A row holds :data:`CORRELATION_FIELDS` (``label`` is the setting, ``per_seed_r`` a list
    of each seed's r, ``ci_low``/``ci_high`` a bootstrap interval over seeds).
    """
    raw = pd.DataFrame([{k: r.get(k, math.nan) for k in CORRELATION_FIELDS} for r in rows])
    if len(raw):
        raw["per_seed_r"] = [
            " ".join(repr(float(v)) for v in r.get("per_seed_r", [])) for r in rows
        ]
    shown = []
    for r in rows:
        per = [v for v in r.get("per_seed_r", []) if math.isfinite(v)]
        low, high = r.get("ci_low", math.nan), r.get("ci_high", math.nan)
        shown.append(
            [
                r["analysis"],
                r.get("label", DASH),
                r.get("steps", DASH),
                fmt(r.get("n"), "int"),
                fmt(r.get("pearson_r"), "r"),
                fmt(r.get("spearman_rho"), "r"),
                f"[{fmt(low, 'r')}, {fmt(high, 'r')}]" if math.isfinite(low) else DASH,
                fmt(r.get("n_seeds"), "int"),
                ", ".join(fmt(v, "r") for v in per) or DASH,
            ]
        )
    return pd.DataFrame(shown, columns=CORRELATION_HEADERS), raw


# =========================================================================== a paper's numbers


@dataclass(frozen=True)
class PaperNumber:
    """One number a paper reports, and how a study computes its counterpart from runs.

    ``value`` is a float or a (low, high) range; ``unit`` is a :func:`fmt` unit ("r",
    "frac", "%", or "" for plain numbers); ``kind`` and ``params`` tell the study's
    ``reproduce`` function what to compute. ``require`` are setting values a run must have
    to count (a different scheme is a different experiment); ``prefer`` the paper's values
    of other settings, used to pick the closest setting that was run. ``protocol`` holds
    the paper's values of the config fields that must match for the two numbers to be
    like for like (dataset, model, learning rate, ...): a difference is printed only when
    they all match (and the runs reached the paper's step).
    """

    quantity: str
    value: float | tuple[float, float]
    unit: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    require: dict[str, Any] = field(default_factory=dict)
    prefer: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reproduced:
    """A study's counterpart of a paper number: the ``value`` (NaN when its runs cannot give
    it), a ``note`` for the protocol column (``"tasks 0-24 only"``), and whether it is
    ``comparable`` with the paper's (False when, e.g., the runs stop short of the paper's
    step or measured another NC1 convention): then no difference is printed."""

    value: Any
    note: str = ""
    comparable: bool = True


#: ``reproduce(number, setting, runs) -> Reproduced``: the study's counterpart of a paper
#: number for one setting.
Reproduce = Callable[[PaperNumber, dict[str, Any], pd.DataFrame], Reproduced]


#: Differences from the paper's protocol named in a cell (the rest are counted).
MISMATCHES_SHOWN = 3


def protocol_mismatch(ref: PaperNumber, runs: pd.DataFrame) -> str:
    """``"dataset digits (paper mnist), lr 0.03 (paper 0.01)"``: the config fields of
    ``ref.protocol`` where the runs differ from the paper; "" when all match (like for
    like). A field the runs' configs lack counts as different (it is unknown)."""
    differs = []
    for key, want in ref.protocol.items():
        have = {repr(normalise_setting(c.get(key))): c.get(key) for c in runs["config"]}
        if len(have) == 1 and same(next(iter(have.values())), want):
            continue
        shown = normalise_setting(next(iter(have.values()))) if len(have) == 1 else "mixed"
        differs.append(f"{key} {shown} (paper {normalise_setting(want)})")
    if len(differs) > MISMATCHES_SHOWN:
        differs[MISMATCHES_SHOWN:] = [f"{len(differs) - MISMATCHES_SHOWN} more"]
    return ", ".join(differs)


#: A ``require`` value meaning "set to anything but None" (e.g. a threshold variant's runs).
ANY_VALUE = "<any value>"


def _meets(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, str) and wanted == ANY_VALUE:
        return value is not None and not (isinstance(value, float) and math.isnan(value))
    return same(value, wanted)


def pick_setting(
    runs: pd.DataFrame, settings: Sequence[str], require: Mapping[str, Any], prefer: Mapping
) -> tuple[dict[str, Any], pd.DataFrame] | None:
    """The setting (and its runs) that has every ``require`` value (:data:`ANY_VALUE`:
    any value but None) and most ``prefer`` ones."""
    best, best_score = None, -1
    for setting, group in setting_groups(runs, settings):
        value = {**group["config"].iloc[0], **setting}
        if any(not _meets(value.get(k), v) for k, v in require.items()):
            continue
        score = sum(same(value.get(k), v) for k, v in prefer.items())
        if score > best_score:
            best, best_score = (setting, group), score
    return best


def _mid(value: Any) -> float:
    return 0.5 * (value[0] + value[1]) if isinstance(value, tuple) else float(value)


def difference_text(ours: Any, ref: PaperNumber) -> str:
    """reproduced - paper in the number's unit; ranges compare by their midpoints."""
    diff = _mid(ours) - _mid(ref.value)
    if not math.isfinite(diff):
        return DASH
    if ref.unit == "%":
        text = f"{diff:+.1f} pts"
    elif ref.unit == "r":
        text = fmt(diff, "r")
    else:
        text = f"{diff:+.3g}"
    ranged = isinstance(ref.value, tuple) or isinstance(ours, tuple)
    return text + (" (midpoints)" if ranged else "")


def comparison_table(
    numbers: Sequence[PaperNumber],
    runs: pd.DataFrame,
    settings: Sequence[str],
    reproduce: Reproduce,
    protocol_line: Callable[[dict[str, Any], pd.DataFrame], str],
) -> pd.DataFrame:
    """quantity | paper | reproduced | difference | protocol run, one row per number.

    For each number the closest setting that was run is picked (:func:`pick_setting`);
    ``protocol_line(setting, its runs)`` says what was run for it. The difference is
    computed only like for like: the runs match the number's ``protocol``
    (:func:`protocol_mismatch`) and the study's ``reproduce`` calls its value comparable;
    otherwise the cell says why not, and the reproduced value stands alone.
    """
    rows = []
    for ref in numbers:
        picked = pick_setting(runs, settings, ref.require, ref.prefer)
        if picked is None:
            wanted = setting_label(ref.require).replace(f"={ANY_VALUE}", " set")
            wanted = wanted or "any setting"
            ours, protocol, difference = math.nan, f"not run ({wanted})", DASH
        else:
            got = reproduce(ref, *picked)
            ours = got.value
            protocol = protocol_line(*picked) + (f"; {got.note}" if got.note else "")
            mismatch = protocol_mismatch(ref, picked[1])
            if mismatch:
                difference = f"not like for like: {mismatch}"
            elif not got.comparable:
                difference = f"not like for like: {got.note}" if got.note else DASH
            else:
                difference = difference_text(ours, ref)
        rows.append(
            {
                "quantity": ref.quantity,
                "paper": fmt(ref.value, ref.unit),
                "reproduced": fmt(ours, ref.unit),
                "difference": difference,
                "protocol run": protocol,
            }
        )
    return pd.DataFrame(rows)


def paper_tables(
    results: StudyResults,
    numbers: Sequence[PaperNumber],
    reproduce: Reproduce,
    protocol_line: Callable[[dict[str, Any], pd.DataFrame], str],
    note: str,
) -> list[tuple[str, pd.DataFrame]]:
    """A study section's first two tables: the protocol run per setting, and the paper's
    numbers beside the reproduced ones (``note`` says where the paper's values come from
    and how ours are taken)."""
    protocols = [
        {"setting": setting_label(setting), "protocol run": protocol_line(setting, runs)}
        for setting, runs in setting_groups(results.runs, results.settings)
    ]
    comparison = comparison_table(numbers, results.runs, results.settings, reproduce, protocol_line)
    return [
        ("Protocol actually run", pd.DataFrame(protocols)),
        (
            f"Reproduced numbers beside the paper's\n{note} '{DASH}' means the runs cannot "
            "give the number (not run, or not reached). A difference is given only like for "
            "like (same dataset, model, training protocol and step reached); otherwise the "
            "difference column says what differs.",
            comparison,
        ),
    ]


def bootstrap_text(results: StudyResults) -> str:
    """How the report's intervals were made, for a table's caption."""
    return (
        f"95% CI: percentile bootstrap resampling seeds ({results.bootstrap} resamples, seed "
        f"{results.seed}); {DASH} with fewer than 2 seeds."
    )
