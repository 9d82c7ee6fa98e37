"""Run folders -> the tidy long table, the summary table and the run table (pandas).

:func:`find_runs` finds run folders (a directory holding ``config.json`` and
``metrics.jsonl``) under any number of paths; :func:`load` reads them into

* ``table``, the tidy long table, one row per measured number of a step::

      run_id, experiment, <setting columns>, seed, step, metric, value

  ``step`` is the metrics.jsonl key the study names as its ``step_key`` (``task`` for
  ``permuted``, ``epoch`` for ``warmstart``), which its run folders record in config.json
  (folders written before that: the registry's, :mod:`~plasticollapse.analysis.run_keys`);
  without one, a
  ``step`` key, else the row's index.
  ``value`` is a float: JSON ``null`` becomes NaN, booleans 0/1, and non-numeric values
  (strings, lists) are left out (summary strings stay in the run table). Every row has a
  step: a pandas user can group or pivot it as it is.
* ``summaries``, the scalars of summary.json (written when a run completes), in the same
  long form without a step: ``run_id, experiment, <setting columns>, seed, metric, value``.
* ``runs``, one row per run: ``run_id, folder, experiment, label, <setting columns>, seed,
  status, complete, n_rows, last_step, config`` (the config dict) and the summary's scalars.

The *setting columns* of a study are the config fields whose values differ between its
runs (``seed`` and execution fields such as ``device`` or ``out`` excluded; lists joined as
``"100,100,100"``), plus the study's ``setting_keys`` (always shown, so that a figure can be
grouped by them even when one value was run). A field counts only in the runs it applies
to: a run's ``setting_fields`` (recorded in config.json,
:func:`plasticollapse.runs.identity.setting_fields`) hold a remedy's parameters only when
it applies that remedy, so a plain run's ``cbp_maturity`` is :data:`NOT_APPLIED` and its
label does not name it. Rows of other studies hold None there. A run without remedies has
``remedies = "plain"`` whichever command made it (a study command leaves the list empty, a
matrix cell says ``plain``; ``plain`` applies nothing).

:func:`load_results`, :func:`load_summaries` and :func:`load_runs` return one table each;
:func:`wide` pivots the metrics of a long table into columns; :func:`write_results` writes
results.csv and summaries.csv (and their .parquet when pyarrow is installed).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

# What a folder records of how to read it (study_keys: importable from here as before).
from plasticollapse.analysis.run_keys import applicable_fields, folder_keys, study_keys
from plasticollapse.runs.config import EXECUTION_FIELDS
from plasticollapse.runs.folder import CONFIG, METRICS, SUMMARY, read_jsonl

#: Never setting columns: the seed is its own column.
NOT_SETTINGS = EXECUTION_FIELDS | {"seed", "run_id"}
#: The run table's own columns; summary scalars of the same name get a ``summary_`` prefix.
RUN_COLUMNS: tuple[str, ...] = ("run_id", "folder", "experiment", "label", "seed", "status")
RUN_COLUMNS += ("complete", "n_rows", "last_step", "config")

Paths = str | Path | Iterable[str | Path]


# =========================================================================== finding runs


def find_runs(paths: Paths) -> list[Path]:
    """All run folders at or below ``paths``, sorted, each once.

    A run folder is a directory containing both ``config.json`` and ``metrics.jsonl``.
    A path may be a run folder itself or any parent of run folders.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found: dict[Path, None] = {}
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
        if not p.is_dir():
            continue
        for folder in [p, *(c.parent for c in p.rglob(CONFIG))]:
            if (folder / CONFIG).is_file() and (folder / METRICS).is_file():
                found.setdefault(folder.resolve(), None)
    return sorted(found)


# =========================================================================== values


#: What the ``remedies`` column holds for a run that applies none.
PLAIN = "plain"
#: A setting column's value in a run it does not apply to (a remedy's parameter in a run
#: without that remedy); labels leave it out.
NOT_APPLIED = "n/a"


def setting_value(key: str, value: Any) -> Any:
    """A config value as its setting column shows it (:func:`normalise_setting`), with
    ``plain`` left out of ``remedies`` and no remedies written ``plain``: the empty list of a
    study command and the ``["plain"]`` of a matrix cell are the same run (the same folder,
    :func:`plasticollapse.runs.identity.identity_fields`), so they get the same value."""
    if key == "remedies" and isinstance(value, (list, tuple)):
        return normalise_setting([name for name in value if name != PLAIN]) or PLAIN
    return normalise_setting(value)


def normalise_setting(value: Any) -> Any:
    """A hashable, printable setting value: lists -> "a,b,c", dicts -> sorted JSON."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(normalise_setting(v)) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def as_float(value: Any) -> float | None:
    """A metric value as float (null -> NaN, bool -> 0/1); None when it is not a number."""
    if value is None:
        return math.nan
    if isinstance(value, (bool, int, float)):
        return float(value)
    return None


def setting_keys_for(
    configs: Sequence[Mapping[str, Any]],
    always: Sequence[str] = (),
    applicable: Sequence[set[str] | None] | None = None,
) -> list[str]:
    """``always`` first, then the config fields whose (normalised) value differs between runs.

    A field missing from some configs counts as ``None`` there, so it differs too.
    ``applicable`` (one per config; None: every field) limits a field to the runs it
    applies to: a remedy's parameter held at one value by the runs of that remedy does not
    vary, whatever the other runs' configs hold.
    """
    applicable = applicable if applicable is not None else [None] * len(configs)
    keys = sorted({k for c in configs for k in c} - NOT_SETTINGS)
    varying = []
    for k in keys:
        values = {
            repr(setting_value(k, c.get(k)))
            for c, fields in zip(configs, applicable, strict=True)
            if fields is None or k in fields
        }
        if len(values) > 1:
            varying.append(k)
    return [*always, *(k for k in varying if k not in always)]


def setting_label(settings: Mapping[str, Any]) -> str:
    """``first_task_epochs=1, lr=0.01``; '(all runs)' when there are no setting keys.
    Settings that do not apply to the run (:data:`NOT_APPLIED`) are left out."""
    shown = [f"{k}={v}" for k, v in settings.items() if not _not_applied(v)]
    return ", ".join(shown) or "(all runs)"


def _not_applied(value: Any) -> bool:
    return isinstance(value, str) and value == NOT_APPLIED


def sort_key(value: Any) -> tuple:
    """Numbers numerically, then everything else by its printed form; None first."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (0, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0.0, str(value))


# =========================================================================== reading


@dataclass
class _Run:
    """What one run folder holds, read once."""

    path: Path
    record: dict[str, Any]
    rows: list[dict[str, Any]]
    summary: dict[str, Any] | None
    run_id: str = ""

    @property
    def experiment(self) -> str:
        return str(self.record.get("experiment", "unknown"))

    @property
    def config(self) -> dict[str, Any]:
        return self.record.get("config") or {}

    def setting(self, key: str, applicable: set[str] | None) -> Any:
        """The run's value of setting column ``key`` (:data:`NOT_APPLIED` where it does not
        apply to the run)."""
        if applicable is not None and key not in applicable:
            return NOT_APPLIED
        return setting_value(key, self.config.get(key))


def _read_run(path: Path) -> _Run:
    record = json.loads((path / CONFIG).read_text())
    summary = None
    if (path / SUMMARY).is_file():
        try:
            summary = json.loads((path / SUMMARY).read_text())
        except json.JSONDecodeError:
            summary = None  # a half-written summary: the run counts as partial
    run = _Run(path, record, read_jsonl(path / METRICS), summary)
    run.run_id = str(record.get("run_id") or path.name)
    return run


def _unique_run_ids(runs: list[_Run]) -> None:
    """The same folder name in two sweeps: suffix ``#2``, ``#3`` so runs never merge."""
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.run_id] = seen.get(run.run_id, 0) + 1
        if seen[run.run_id] > 1:
            run.run_id = f"{run.run_id}#{seen[run.run_id]}"


def _step_of(row: Mapping[str, Any], step_key: str | None, index: int) -> tuple[float, str | None]:
    """The row's step and the key it came from (the study's key, else "step", else index)."""
    for key in (step_key, "step"):
        if key is not None and key in row and (value := as_float(row[key])) is not None:
            return value, key
    return float(index), None


@dataclass
class Results:
    """The tidy ``table`` (per step), the ``runs`` table, each study's setting columns, the
    ``summaries`` table (summary.json's scalars, long form, no step), and each study's step
    key."""

    table: pd.DataFrame
    runs: pd.DataFrame
    settings: dict[str, list[str]]
    summaries: pd.DataFrame = field(default_factory=lambda: _long_table({}, [], []))
    #: each study's step key (``task``, ``epoch``; None when its folders name none)
    step_keys: dict[str, str | None] = field(default_factory=dict)

    def experiments(self) -> list[str]:
        return list(dict.fromkeys(self.runs["experiment"]))

    def study(self, experiment: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(table, runs)`` of one study, keeping only its own setting columns."""
        others = [c for k, v in self.settings.items() if k != experiment for c in v]
        drop = [c for c in dict.fromkeys(others) if c not in self.settings.get(experiment, [])]
        table = self.table[self.table["experiment"] == experiment].drop(columns=drop)
        runs = self.runs[self.runs["experiment"] == experiment].drop(columns=drop)
        return table.reset_index(drop=True), runs.reset_index(drop=True)

    def study_summaries(self, experiment: str) -> pd.DataFrame:
        """The ``summaries`` of one study, with only its own setting columns."""
        own = self.settings.get(experiment, [])
        drop = [c for c in self.summaries.columns if c in self._all_settings() and c not in own]
        rows = self.summaries[self.summaries["experiment"] == experiment]
        return rows.drop(columns=drop).reset_index(drop=True)

    def _all_settings(self) -> set[str]:
        return {c for columns in self.settings.values() for c in columns}


def load(paths: Paths) -> Results:
    """Read every run folder under ``paths`` (see the module doc)."""
    loaded = [_read_run(p) for p in find_runs(paths)]
    _unique_run_ids(loaded)
    experiments = list(dict.fromkeys(r.experiment for r in loaded))
    keys = {}
    for e in experiments:
        recorded = folder_keys([r.record for r in loaded if r.experiment == e])
        keys[e] = recorded if recorded is not None else study_keys(e)  # older folders
    applicable = {id(r): applicable_fields(r.record) for r in loaded}
    settings = {}
    for e in experiments:
        own = [r for r in loaded if r.experiment == e]
        settings[e] = setting_keys_for(
            [r.config for r in own], keys[e][1], [applicable[id(r)] for r in own]
        )
    all_settings = list(dict.fromkeys(k for e in experiments for k in settings[e]))

    run_rows = []
    steps: dict[str, list[Any]] = {c: [] for c in ("run_id", "step", "metric", "value")}
    summaries: dict[str, list[Any]] = {c: [] for c in ("run_id", "metric", "value")}
    for run in loaded:
        step_key = keys[run.experiment][0]
        last_step = math.nan
        for i, row in enumerate(run.rows):
            step, used = _step_of(row, step_key, i)
            last_step = step if math.isnan(last_step) else max(last_step, step)
            for metric, raw in row.items():
                if metric != used and (value := as_float(raw)) is not None:
                    _append(steps, run.run_id, metric, value, step=step)
        for metric, raw in (run.summary or {}).items():
            if (value := as_float(raw)) is not None:
                _append(summaries, run.run_id, metric, value)
        run_rows.append(
            _run_row(run, settings[run.experiment], all_settings, last_step, applicable[id(run)])
        )

    runs = _run_table(run_rows, all_settings)
    return Results(
        _long_table(steps, runs, all_settings),
        runs,
        settings,
        _long_table(summaries, runs, all_settings),
        {e: keys[e][0] for e in experiments},
    )


def _append(columns: dict[str, list], run_id: str, metric: str, value: float, **more) -> None:
    for key, item in {"run_id": run_id, **more, "metric": metric, "value": value}.items():
        columns[key].append(item)


def _long_table(
    columns: Mapping[str, list], runs: pd.DataFrame | list, all_settings: list[str]
) -> pd.DataFrame:
    """``run_id, experiment, <settings>, seed, [step,] metric, value`` from the columns read,
    each run's identity joined from the run table; runs in its order, rows in file order."""
    has_step = "step" in columns
    frame = pd.DataFrame(
        {
            "run_id": pd.Series(columns.get("run_id", []), dtype=object),
            **({"step": pd.Series(columns["step"], dtype="float64")} if has_step else {}),
            "metric": pd.Series(columns.get("metric", []), dtype=object),
            "value": pd.Series(columns.get("value", []), dtype="float64"),
        }
    )
    head = ["run_id", "experiment", *all_settings, "seed"]
    if not isinstance(runs, pd.DataFrame):  # an empty Results: no runs, no columns to join
        return pd.DataFrame(columns=[*head, "metric", "value"])
    ident = runs[head]
    frame = frame.merge(ident, on="run_id", how="left", sort=False, validate="many_to_one")
    frame = frame[[*head, *(["step"] if has_step else []), "metric", "value"]]
    order = {rid: i for i, rid in enumerate(runs["run_id"])}
    frame = frame.sort_values("run_id", key=lambda s: s.map(order), kind="stable")
    return frame.reset_index(drop=True)


def _run_row(
    run: _Run,
    own: list[str],
    all_settings: list[str],
    last_step: float,
    applicable: set[str] | None,
) -> dict[str, Any]:
    settings = {k: run.setting(k, applicable) for k in own}
    summary = run.summary or {}
    row = {
        "run_id": run.run_id,
        "folder": str(run.path),
        "experiment": run.experiment,
        "label": setting_label(settings),
        **{k: settings.get(k) for k in all_settings},
        "seed": run.config.get("seed"),
        "status": summary.get("status", "complete") if run.summary is not None else "partial",
        "complete": run.summary is not None,
        "n_rows": len(run.rows),
        "last_step": last_step,
        "config": run.config,
    }
    for key, value in summary.items():
        if isinstance(value, (bool, int, float, str)) and key != "status":
            row[key if key not in row else f"summary_{key}"] = value
    return row


def _run_table(rows: list[dict[str, Any]], all_settings: list[str]) -> pd.DataFrame:
    head = [*RUN_COLUMNS[:4], *all_settings, *RUN_COLUMNS[4:]]
    runs = pd.DataFrame(rows, columns=list(dict.fromkeys([*head, *(k for r in rows for k in r)])))
    for column in (*all_settings, "seed"):
        values = [r.get(column) for r in rows]
        plain_ints = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
        # Object columns keep 1 as 1 (not 1.0) beside None, and "a" beside 3.
        runs[column] = pd.Series(values, dtype="int64" if plain_ints and values else object)
    if len(runs):
        order = sorted(
            range(len(rows)),
            key=lambda i: (
                rows[i]["experiment"],
                [sort_key(rows[i].get(k)) for k in all_settings],
                sort_key(rows[i]["seed"]),
                rows[i]["run_id"],
            ),
        )
        runs = runs.iloc[order].reset_index(drop=True)
    return runs


def load_results(paths: Paths) -> pd.DataFrame:
    """The tidy long table of every run folder under ``paths``: one row per run, step and
    metric (see the module doc); the summary.json scalars are :func:`load_summaries`."""
    return load(paths).table


def load_summaries(paths: Paths) -> pd.DataFrame:
    """The summary.json scalars of every complete run under ``paths``, one row per run and
    metric: ``run_id, experiment, <settings>, seed, metric, value`` (see the module doc)."""
    return load(paths).summaries


def load_runs(paths: Paths) -> pd.DataFrame:
    """One row per run folder under ``paths`` (see the module doc)."""
    return load(paths).runs


# =========================================================================== reshaping, writing


def wide(
    table: pd.DataFrame, index: Sequence[str] | None = None, metrics: Sequence[str] | None = None
) -> pd.DataFrame:
    """A long table (the tidy table, or the summaries) with one column per metric (a
    repeated index and metric: last row wins).

    ``index`` names the columns that identify a wide row (default: every column but
    ``metric`` and ``value``: run, study, settings, seed and, in the tidy table, step);
    ``metrics`` keeps those metrics, as columns in that order. Example::

        frame = wide(load_results("runs/permuted_digits"), metrics=["accuracy", "nc1"])
    """
    if metrics is not None:
        table = table[table["metric"].isin(list(metrics))]
    index = (
        list(index)
        if index is not None
        else [c for c in table.columns if c not in ("metric", "value")]
    )
    last = table.drop_duplicates([*index, "metric"], keep="last")
    out = last.pivot(index=index, columns="metric", values="value")
    if metrics is not None:
        out = out.reindex(columns=[m for m in metrics if m in out.columns])
    out.columns.name = None
    return out.reset_index()


def write_results(
    table: pd.DataFrame, folder: str | Path, summaries: pd.DataFrame | None = None
) -> list[Path]:
    """results.csv (the tidy table: NaN as empty cells, whole steps as integers) and, given
    ``summaries``, summaries.csv, into ``folder``; each with its .parquet when pyarrow is
    installed. Returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = _write_table(table, folder, "results")
    if summaries is not None:
        written += _write_table(summaries, folder, "summaries")
    return written


def _write_table(table: pd.DataFrame, folder: Path, stem: str) -> list[Path]:
    out = table.copy()
    if "step" in out:
        steps = out["step"].dropna()
        if (steps == steps.round()).all():
            out["step"] = out["step"].astype("Int64")
    written = [folder / f"{stem}.csv"]
    out.to_csv(written[0], index=False)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return written
    for column in out.columns:
        if not pd.api.types.is_object_dtype(out[column]):
            continue
        kinds = {type(v) for v in out[column] if v is not None}
        if len(kinds) > 1:  # mixed types in one setting column: store the printed form
            out[column] = [None if v is None else str(v) for v in out[column]]
    written.append(folder / f"{stem}.parquet")
    out.to_parquet(written[-1], index=False)
    return written
