"""Run folders -> one tidy table -> the paper's correlations.

Reading
-------
:func:`find_runs` finds run folders (a directory holding ``config.json`` and
``metrics.jsonl``) under any number of paths; :func:`load_runs` reads them into one tidy
long :class:`Table` with the columns::

    run_id, experiment, <setting keys>, seed, step, metric, value

* ``step`` is the task index for ``permuted`` runs (``task`` in metrics.jsonl) and the
  warm-up epoch of the checkpoint for ``warmstart`` runs (``epoch``). The scalars of
  ``summary.json`` (present only for completed runs) are rows with ``step = NaN``.
* The *setting keys* of an experiment are the config fields whose values differ between
  its runs (``seed`` and execution fields such as ``device`` or ``out`` excluded; lists
  joined as ``"100,100,100"``), plus always ``first_task_epochs`` (permuted) and
  ``scheme`` (warmstart), so a figure can be grouped by them even when only one value
  was run.
* ``value`` is a float; JSON ``null`` becomes NaN, booleans become 0/1, and non-numeric
  values (strings, lists) are left out of the table (they stay in :class:`RunInfo`).

Correlations
------------
:func:`correlate` gives Pearson r and Spearman rho with their p-values, exactly as
``scipy.stats.pearsonr`` / ``spearmanr`` compute them on the finite pairs.
:func:`bootstrap_over_seeds` puts a percentile interval on a correlation statistic by
resampling *runs* (seeds) with replacement. :func:`permuted_correlations`,
:func:`warmstart_seed_correlations` and :func:`sliding_window_correlations` compute the
paper's three analyses.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from plasticollapse.runs.config import EXECUTION_FIELDS
from plasticollapse.runs.folder import CONFIG, METRICS, SUMMARY, read_jsonl

#: The metrics.jsonl key that is the step, per experiment.
STEP_KEY = {"permuted": "task", "warmstart": "epoch"}
#: Setting keys shown even when only one value was run: the paper's figures group by them.
ALWAYS_SETTING = {"permuted": ("first_task_epochs",), "warmstart": ("scheme",)}
#: Never setting keys: the seed is its own column.
NOT_SETTINGS = EXECUTION_FIELDS | {"seed", "run_id"}

FIXED_COLUMNS_HEAD = ("run_id", "experiment")
FIXED_COLUMNS_TAIL = ("seed", "step", "metric", "value")


# =========================================================================== reading


def find_runs(paths: str | Path | Iterable[str | Path]) -> list[Path]:
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
        candidates = [p] if p.is_dir() else []
        if p.is_dir():
            candidates += [c.parent for c in p.rglob(CONFIG)]
        for c in candidates:
            if (c / CONFIG).is_file() and (c / METRICS).is_file():
                found.setdefault(c.resolve(), None)
    return sorted(found)


@dataclass
class RunInfo:
    """What one run folder says about itself (everything but the metric rows)."""

    run_id: str
    path: Path
    experiment: str
    config: dict[str, Any]
    seed: Any
    complete: bool
    n_rows: int
    summary: dict[str, Any] | None
    meta: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    last_step: float = math.nan


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
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _read_run(path: Path) -> tuple[RunInfo, list[dict[str, Any]]]:
    record = json.loads((path / CONFIG).read_text())
    config = record.get("config", {}) or {}
    summary = None
    if (path / SUMMARY).is_file():
        try:
            summary = json.loads((path / SUMMARY).read_text())
        except json.JSONDecodeError:
            summary = None  # a half-written summary: treat the run as partial
    rows = read_jsonl(path / METRICS)
    meta = {k: v for k, v in record.items() if k not in ("config",)}
    info = RunInfo(
        run_id=str(record.get("run_id") or path.name),
        path=path,
        experiment=str(record.get("experiment", "unknown")),
        config=config,
        seed=config.get("seed"),
        complete=summary is not None,
        n_rows=len(rows),
        summary=summary,
        meta=meta,
    )
    return info, rows


def setting_keys_for(experiment: str, configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Config fields whose (normalised) value differs between runs, plus the always-shown ones.

    A field missing from some configs counts as ``None`` there, so it differs too.
    """
    keys = sorted({k for c in configs for k in c} - NOT_SETTINGS)
    varying = [k for k in keys if len({repr(normalise_setting(c.get(k))) for c in configs}) > 1]
    always = [k for k in ALWAYS_SETTING.get(experiment, ()) if k not in varying]
    return always + varying


def _step_of(experiment: str, row: Mapping[str, Any], index: int) -> float:
    for key in (STEP_KEY.get(experiment), "step", "task", "epoch"):
        if key is not None and key in row:
            value = as_float(row[key])
            if value is not None:
                return value
    return float(index)


def load_runs(paths: str | Path | Iterable[str | Path]) -> Table:
    """Read every run folder under ``paths`` into one tidy :class:`Table` (see module doc)."""
    folders = find_runs(paths)
    loaded = [_read_run(p) for p in folders]

    # Same folder name in two sweeps: keep run ids unique so runs never merge.
    seen: dict[str, int] = {}
    for info, _ in loaded:
        if info.run_id in seen:
            seen[info.run_id] += 1
            info.run_id = f"{info.run_id}#{seen[info.run_id]}"
        else:
            seen[info.run_id] = 1

    experiments = sorted({info.experiment for info, _ in loaded})
    setting_keys = {
        e: setting_keys_for(e, [i.config for i, _ in loaded if i.experiment == e])
        for e in experiments
    }
    all_keys: list[str] = []
    for e in experiments:
        all_keys += [k for k in setting_keys[e] if k not in all_keys]

    cols: dict[str, list[Any]] = {
        c: [] for c in (*FIXED_COLUMNS_HEAD, *all_keys, *FIXED_COLUMNS_TAIL)
    }
    runs: dict[str, RunInfo] = {}
    for info, rows in loaded:
        info.settings = {
            k: normalise_setting(info.config.get(k)) for k in setting_keys[info.experiment]
        }
        runs[info.run_id] = info
        ident = {k: info.settings.get(k) for k in all_keys}
        step_key = STEP_KEY.get(info.experiment)

        def add(step: float, metric: str, value: float, info=info, ident=ident) -> None:
            cols["run_id"].append(info.run_id)
            cols["experiment"].append(info.experiment)
            for k in all_keys:
                cols[k].append(ident[k])
            cols["seed"].append(info.seed)
            cols["step"].append(step)
            cols["metric"].append(metric)
            cols["value"].append(value)

        for i, row in enumerate(rows):
            step = _step_of(info.experiment, row, i)
            info.last_step = step if math.isnan(info.last_step) else max(info.last_step, step)
            for metric, raw in row.items():
                if metric in (step_key, "step"):
                    continue
                value = as_float(raw)
                if value is not None:
                    add(step, metric, value)
        for metric, raw in (info.summary or {}).items():
            value = as_float(raw)
            if value is not None:
                add(math.nan, metric, value)

    columns = {k: _to_array(k, v) for k, v in cols.items()}
    return Table(columns=columns, setting_keys=setting_keys, runs=runs)


def _to_array(name: str, values: list[Any]) -> np.ndarray:
    if name in ("step", "value"):
        return np.asarray(values, dtype=np.float64)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _same(a: Any, b: Any) -> bool:
    """Setting equality that treats None/NaN alike and 1 == 1.0, and compares lists as joined."""
    a, b = normalise_setting(a), normalise_setting(b)
    a_missing = a is None or (isinstance(a, float) and math.isnan(a))
    b_missing = b is None or (isinstance(b, float) and math.isnan(b))
    if a_missing or b_missing:
        return a_missing and b_missing
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def setting_label(settings: Mapping[str, Any]) -> str:
    """``first_task_epochs=1, lr=0.01``; '(all runs)' when there are no setting keys."""
    return ", ".join(f"{k}={v}" for k, v in settings.items()) or "(all runs)"


# =========================================================================== the table


@dataclass
class Curves:
    """One metric, step-aligned per run: ``values[r, s]`` is run r at ``steps[s]`` (NaN: none)."""

    metric: str
    steps: np.ndarray
    values: np.ndarray
    run_ids: list[str]
    seeds: list[Any]

    @property
    def n_runs(self) -> int:
        return len(self.run_ids)

    def mean(self) -> np.ndarray:
        """Per-step mean over the runs that have a value at that step."""
        return _nan_reduce(np.nanmean, self.values)

    def std(self) -> np.ndarray:
        """Per-step population std (ddof = 0) over the runs that have a value there."""
        return _nan_reduce(np.nanstd, self.values)

    def count(self) -> np.ndarray:
        return np.isfinite(self.values).sum(axis=0)

    def between(self, lo: float = -math.inf, hi: float = math.inf) -> Curves:
        """The steps s with ``lo < s <= hi`` (the window rule used throughout)."""
        keep = (self.steps > lo) & (self.steps <= hi)
        return Curves(self.metric, self.steps[keep], self.values[:, keep], self.run_ids, self.seeds)

    def at(self, step: float) -> np.ndarray:
        """Per-run values at exactly ``step`` (NaN for every run when the step is absent)."""
        hit = np.flatnonzero(self.steps == step)
        if hit.size == 0:
            return np.full(self.n_runs, np.nan)
        return self.values[:, hit[0]]


def _nan_reduce(fn: Callable, values: np.ndarray) -> np.ndarray:
    if values.size == 0:
        return np.full(values.shape[1] if values.ndim == 2 else 0, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, quietly
        return fn(values, axis=0)


@dataclass
class Table:
    """A tidy long table held as equal-length column arrays, plus what each run said.

    ``columns`` maps each column name to a numpy array (``step``/``value`` float64, the rest
    object). ``setting_keys`` maps each experiment to its setting keys; ``runs`` maps run id
    to :class:`RunInfo`.
    """

    columns: dict[str, np.ndarray]
    setting_keys: dict[str, list[str]]
    runs: dict[str, RunInfo]

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.columns["value"])

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)

    def column(self, name: str) -> np.ndarray:
        return self.columns[name]

    def rows(self) -> list[dict[str, Any]]:
        """The table as a list of dicts (one per row); handy for small tables and tests."""
        names = self.column_names
        return [
            dict(zip(names, vals, strict=True)) for vals in zip(*self.columns.values(), strict=True)
        ]

    def experiments(self) -> list[str]:
        return sorted({r.experiment for r in self.runs.values()})

    def metrics(self, experiment: str | None = None, per_step: bool = True) -> list[str]:
        """Metric names (``per_step``: only those with a finite step; else only summary ones)."""
        mask = self._mask(experiment=experiment)
        has_step = np.isfinite(self.columns["step"])
        mask &= has_step if per_step else ~has_step
        return sorted(set(self.columns["metric"][mask]))

    # ------------------------------------------------------------------ selection
    def _mask(
        self,
        experiment: str | None = None,
        metric: str | None = None,
        where: Mapping[str, Any] | None = None,
        run_ids: Iterable[str] | None = None,
    ) -> np.ndarray:
        mask = np.ones(len(self), dtype=bool)
        if experiment is not None:
            mask &= self.columns["experiment"] == experiment
        if metric is not None:
            mask &= self.columns["metric"] == metric
        if run_ids is not None:
            mask &= np.isin(self.columns["run_id"], list(run_ids))
        for key, want in (where or {}).items():
            if key not in self.columns:
                raise KeyError(f"no column {key!r}; columns: {', '.join(self.column_names)}")
            col = self.columns[key]
            mask &= np.fromiter((_same(v, want) for v in col), dtype=bool, count=len(col))
        return mask

    def select(
        self,
        experiment: str | None = None,
        metric: str | None = None,
        where: Mapping[str, Any] | None = None,
        run_ids: Iterable[str] | None = None,
    ) -> Table:
        """Rows matching all given filters (``where``: column -> value, e.g. settings)."""
        mask = self._mask(experiment, metric, where, run_ids)
        kept = set(self.columns["run_id"][mask])
        return Table(
            columns={k: v[mask] for k, v in self.columns.items()},
            setting_keys=self.setting_keys,
            runs={k: v for k, v in self.runs.items() if k in kept},
        )

    def run_ids(
        self, experiment: str | None = None, where: Mapping[str, Any] | None = None
    ) -> list[str]:
        """Runs of ``experiment`` whose settings match ``where``, ordered by (settings, seed)."""
        out = []
        for rid, info in self.runs.items():
            if experiment is not None and info.experiment != experiment:
                continue
            if any(
                not _same(info.settings.get(k, info.config.get(k)), v)
                for k, v in (where or {}).items()
            ):
                continue
            out.append(rid)
        return sorted(
            out,
            key=lambda r: (repr(list(self.runs[r].settings.values())), repr(self.runs[r].seed), r),
        )

    def settings(self, experiment: str) -> list[dict[str, Any]]:
        """The distinct setting dicts of an experiment, in a stable (sorted) order."""
        distinct: dict[str, dict[str, Any]] = {}
        for info in self.runs.values():
            if info.experiment == experiment:
                distinct.setdefault(repr(list(info.settings.items())), dict(info.settings))
        return sorted(distinct.values(), key=setting_sort_key)

    # ------------------------------------------------------------------ pivots
    def curves(
        self,
        metric: str,
        experiment: str | None = None,
        where: Mapping[str, Any] | None = None,
        run_ids: Sequence[str] | None = None,
        steps: np.ndarray | None = None,
    ) -> Curves:
        """Pivot one per-step metric to a (runs x steps) array, NaN where a run has no value.

        ``run_ids`` fixes the row order (default: :meth:`run_ids` of the filters); ``steps``
        fixes the columns (default: the sorted union of the runs' steps for this metric).
        """
        if run_ids is None:
            run_ids = self.run_ids(experiment, where)
        run_ids = list(run_ids)
        mask = self._mask(metric=metric, run_ids=run_ids) & np.isfinite(self.columns["step"])
        row_steps = self.columns["step"][mask]
        grid = np.unique(row_steps) if steps is None else np.asarray(steps, dtype=np.float64)
        values = np.full((len(run_ids), grid.size), np.nan)
        index = {r: i for i, r in enumerate(run_ids)}
        col = np.searchsorted(grid, row_steps)
        for r, c, s, v in zip(
            self.columns["run_id"][mask], col, row_steps, self.columns["value"][mask], strict=True
        ):
            if c < grid.size and grid[c] == s:
                values[index[r], c] = v  # a repeated step: the last row wins
        seeds = [self.runs[r].seed for r in run_ids]
        return Curves(metric, grid, values, run_ids, seeds)

    def paired_curves(
        self, x: str, y: str, experiment: str | None = None, where: Mapping[str, Any] | None = None
    ) -> tuple[Curves, Curves]:
        """Two metrics on the same runs and the same step grid (the union of both)."""
        run_ids = self.run_ids(experiment, where)
        cx = self.curves(x, run_ids=run_ids)
        cy = self.curves(y, run_ids=run_ids)
        grid = np.union1d(cx.steps, cy.steps)
        return self.curves(x, run_ids=run_ids, steps=grid), self.curves(
            y, run_ids=run_ids, steps=grid
        )

    def summary_values(
        self, metric: str, experiment: str | None = None, where: Mapping[str, Any] | None = None
    ) -> dict[str, float]:
        """run id -> the summary.json scalar ``metric`` (completed runs that report it)."""
        run_ids = self.run_ids(experiment, where)
        mask = self._mask(metric=metric, run_ids=run_ids) & ~np.isfinite(self.columns["step"])
        return dict(zip(self.columns["run_id"][mask], self.columns["value"][mask], strict=True))

    # ------------------------------------------------------------------ writing
    def to_csv(self, path: str | Path) -> Path:
        """Write the table as CSV; NaN and None become empty cells, integral steps print as ints."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(self.column_names)
            for row in zip(*self.columns.values(), strict=True):
                writer.writerow([_csv_cell(v) for v in row])
        return path

    def to_parquet(self, path: str | Path) -> Path | None:
        """Write the table as Parquet when pyarrow is importable; return None otherwise."""
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            return None
        arrays = {}
        for name, col in self.columns.items():
            if name in ("step", "value"):
                arrays[name] = pa.array(col, type=pa.float64())
                continue
            try:
                arrays[name] = pa.array(list(col))
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
                # Mixed types in one setting column: store its printed form.
                arrays[name] = pa.array([None if v is None else str(v) for v in col])
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(arrays), path)
        return path


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return repr(v)
    return v


def setting_sort_key(settings: Mapping[str, Any]) -> tuple:
    # Numbers sort numerically, None first, everything else by its printed form.
    key = []
    for v in settings.values():
        if v is None:
            key.append((0, 0.0, ""))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            key.append((1, float(v), ""))
        else:
            key.append((2, 0.0, str(v)))
    return tuple(key)


# =========================================================================== correlations


def correlate(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlation of the finite pairs (x_i, y_i).

    r = sum (x_i - x̄)(y_i - ȳ) / sqrt(sum (x_i - x̄)^2 sum (y_i - ȳ)^2) (``scipy.stats.pearsonr``),
    rho = Pearson r of the ranks, ties averaged (``scipy.stats.spearmanr``); p-values are
    scipy's two-sided ones. Pairs where either value is NaN/inf are dropped first. With fewer
    than 3 pairs, or a constant series, every statistic is NaN (n is still reported).

    Returns ``{"pearson_r", "pearson_p", "spearman_rho", "spearman_p", "n"}``.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length: {x.size} vs {y.size}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    out = {
        "pearson_r": math.nan,
        "pearson_p": math.nan,
        "spearman_rho": math.nan,
        "spearman_p": math.nan,
        "n": int(x.size),
    }
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = stats.pearsonr(x, y)
        s = stats.spearmanr(x, y)
    out["pearson_r"], out["pearson_p"] = float(p[0]), float(p[1])
    out["spearman_rho"], out["spearman_p"] = float(s[0]), float(s[1])
    return out


def _r(x: np.ndarray, y: np.ndarray, method: str) -> float:
    """Just the coefficient (``method`` "pearson" or "spearman"), NaN when undefined.

    The same numbers as :func:`correlate` (to rounding) without the p-values, computed with
    numpy because the bootstrap calls this thousands of times.
    """
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', not {method!r}")
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    if method == "spearman":
        x, y = stats.rankdata(x), stats.rankdata(y)
    x, y = x - x.mean(), y - y.mean()
    return float(np.clip(x @ y / math.sqrt((x @ x) * (y @ y)), -1.0, 1.0))


def mean_curve_r(x: np.ndarray, y: np.ndarray, method: str = "pearson") -> float:
    """corr over steps of the per-step means over runs: corr_s(mean_r x[r, s], mean_r y[r, s])."""
    return _r(_nan_reduce(np.nanmean, x), _nan_reduce(np.nanmean, y), method)


def per_run_r(x: np.ndarray, y: np.ndarray, method: str = "pearson") -> np.ndarray:
    """One correlation per run (row): r_r = corr_s(x[r, s], y[r, s])."""
    return np.array([_r(xr, yr, method) for xr, yr in zip(x, y, strict=True)])


def pooled_r(x: np.ndarray, y: np.ndarray, method: str = "pearson") -> float:
    """corr of all (x[r, s], y[r, s]) points of all runs pooled together."""
    return _r(x.ravel(), y.ravel(), method)


#: The statistics :func:`bootstrap_over_seeds` can resample.
STATISTICS: dict[str, Callable[[np.ndarray, np.ndarray, str], float]] = {
    "mean_curve": mean_curve_r,
    "mean_of_runs": lambda x, y, m: _nanmean(per_run_r(x, y, m)),
    "pooled": pooled_r,
}


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    n_runs: int,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """Percentile bootstrap over runs for any ``statistic(indices) -> float``.

    Draws ``n_boot`` index vectors of length ``n_runs`` uniformly with replacement
    (``numpy.random.default_rng(seed)``), evaluates ``statistic`` on each and returns the
    (1 - level)/2 and (1 + level)/2 percentiles of the finite values. The interval is NaN
    when there are fewer than 2 runs (resampling one run says nothing about seed spread)
    or ``n_boot`` is 0.
    """
    estimate = statistic(np.arange(n_runs)) if n_runs else math.nan
    out = {"estimate": float(estimate), "low": math.nan, "high": math.nan}
    out.update({"n_boot": int(n_boot), "n_runs": int(n_runs), "level": level, "n_valid": 0})
    if n_runs < 2 or n_boot <= 0:
        return out
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(rng.integers(0, n_runs, n_runs)) for _ in range(n_boot)])
    draws = draws[np.isfinite(draws)]
    out["n_valid"] = int(draws.size)
    if draws.size:
        tail = 100 * (1 - level) / 2
        out["low"], out["high"] = (float(v) for v in np.percentile(draws, [tail, 100 - tail]))
    return out


def bootstrap_over_seeds(
    x: np.ndarray,
    y: np.ndarray,
    statistic: str = "mean_curve",
    method: str = "pearson",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """A 95 % (``level``) percentile interval for a correlation, resampling SEEDS (runs).

    ``x`` and ``y`` are (runs x steps) arrays on the same runs and step grid (e.g. the
    ``values`` of :meth:`Table.paired_curves`). Each bootstrap replicate draws ``R`` rows
    (runs) with replacement, keeps each drawn run's whole curve (steps are never resampled,
    since consecutive steps of one run are not independent), and recomputes ``statistic``:

    * ``"mean_curve"``: Pearson/Spearman r over steps between the per-step means over the
      drawn runs (the paper's Permuted MNIST headline: mean NC1 vs mean accuracy per task);
    * ``"mean_of_runs"``: the mean over the drawn runs of each run's own r over steps (the
      warm-start per-seed correlations);
    * ``"pooled"``: r over all (x, y) points of the drawn runs pooled.

    Returns ``{"estimate", "low", "high", "n_boot", "n_runs", "level", "n_valid"}``;
    ``estimate`` is the statistic on the original runs. Deterministic for a given ``seed``.
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same (runs, steps) shape: {x.shape} vs {y.shape}")
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {sorted(STATISTICS)}, not {statistic!r}")
    fn = STATISTICS[statistic]
    return bootstrap_ci(lambda idx: fn(x[idx], y[idx], method), x.shape[0], n_boot, seed, level)


def bootstrap_mean(
    values: Sequence[float] | np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """Percentile interval of the mean of per-seed numbers (NaNs ignored), resampling seeds."""
    v = np.asarray(values, dtype=np.float64)

    def mean(idx: np.ndarray) -> float:
        s = v[idx]
        s = s[np.isfinite(s)]
        return float(s.mean()) if s.size else math.nan

    return bootstrap_ci(mean, v.size, n_boot, seed, level)


# =========================================================================== sliding window


def window_ends(
    steps: np.ndarray, window: float, stride: float, first_end: float | None = None
) -> np.ndarray:
    """Last steps of the windows: ``first_end, first_end + stride, ...`` up to the last step.

    ``first_end`` defaults to ``window``: warm-up epochs count from 1, so the first window
    (0, window] holds exactly the first ``window`` epochs of warm-up.
    """
    steps = np.asarray(steps, dtype=np.float64)
    steps = steps[np.isfinite(steps)]
    if steps.size == 0 or stride <= 0:
        return np.empty(0)
    start = float(window if first_end is None else first_end)
    last = float(steps.max())
    if start > last:
        return np.empty(0)
    return np.arange(start, last + stride * 1e-9, stride)


def sliding_window_r(
    steps: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    window: float = 100,
    stride: float = 5,
    first_end: float | None = None,
    method: str = "pearson",
    min_points: int = 3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correlation of x vs y inside sliding windows of ``window`` steps (not checkpoints).

    The window ending at step e holds the points whose step s satisfies
    ``e - window < s <= e``; ends are :func:`window_ends`. With warm-up checkpoints every 5
    epochs and window 100, the window ending at epoch 100 holds epochs 5, 10, ..., 100
    (20 checkpoints). r is NaN when a window holds fewer than ``min_points`` finite pairs.

    Returns ``(ends, r, n)`` with n the number of finite pairs in each window.
    """
    steps = np.asarray(steps, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ends = window_ends(steps, window, stride, first_end)
    rs, ns = np.full(ends.size, np.nan), np.zeros(ends.size, dtype=int)
    for i, e in enumerate(ends):
        inside = (steps > e - window) & (steps <= e) & np.isfinite(x) & np.isfinite(y)
        ns[i] = int(inside.sum())
        if ns[i] >= min_points:
            rs[i] = _r(x[inside], y[inside], method)
    return ends, rs, ns


# =========================================================================== the paper's analyses


def permuted_correlations(
    table: Table,
    x: str = "nc1",
    y: str = "accuracy",
    max_tasks: int = 140,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The Permuted MNIST headline, per setting (e.g. per ``first_task_epochs``).

    For each setting: the per-task mean over seeds of ``x`` and of ``y`` (each task averaged
    over the seeds that reached it), over tasks ``0 <= task < max_tasks`` (the paper: the
    first 140 tasks; fewer when the runs hold fewer), then Pearson r / Spearman rho across
    tasks of the two mean curves; a 95 % bootstrap interval by resampling seeds
    (``"mean_curve"`` statistic); and each seed's own r over the same tasks.
    """
    rows = []
    for setting in table.settings("permuted"):
        cx, cy = table.paired_curves(x, y, "permuted", setting)
        cx, cy = cx.between(-math.inf, max_tasks - 1), cy.between(-math.inf, max_tasks - 1)
        if cx.n_runs == 0 or cx.steps.size == 0:
            continue
        corr = correlate(cx.mean(), cy.mean())
        ci = bootstrap_over_seeds(cx.values, cy.values, "mean_curve", "pearson", n_boot, seed)
        seeds_r = per_run_r(cx.values, cy.values)
        rows.append(
            {
                "experiment": "permuted",
                "analysis": f"corr(mean {x}, mean {y}) over tasks",
                "x": x,
                "y": y,
                "setting": setting,
                "label": setting_label(setting),
                "steps": f"tasks {int(cx.steps.min())}-{int(cx.steps.max())}",
                **corr,
                "ci_low": ci["low"],
                "ci_high": ci["high"],
                "n_seeds": cx.n_runs,
                "per_seed_r": [float(v) for v in seeds_r],
            }
        )
    return rows


def warmstart_seed_correlations(
    table: Table,
    x: str = "nc1",
    y: str = "full_test_acc",
    split: float = 100,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Per-seed corr(x, y) across warm-up checkpoints, per scheme/setting, three ranges.

    Ranges of warm-up epoch e: all checkpoints; ``e <= split`` (the paper: first 100
    epochs); ``e > split``. Within each range every seed gives one r over its checkpoints;
    the row reports the mean of those r's (Pearson; Spearman likewise), their min and max,
    and a 95 % bootstrap interval of the mean per-seed Pearson r, resampling seeds
    (``"mean_of_runs"`` statistic). ``n`` is the number of checkpoints per seed (the most).
    """
    rows = []
    for setting in table.settings("warmstart"):
        cx, cy = table.paired_curves(x, y, "warmstart", setting)
        if cx.n_runs == 0 or cx.steps.size == 0:
            continue
        for name, lo, hi in (
            ("all checkpoints", -math.inf, math.inf),
            (f"epochs <= {split:g}", -math.inf, split),
            (f"epochs > {split:g}", split, math.inf),
        ):
            px, py = cx.between(lo, hi), cy.between(lo, hi)
            if px.steps.size == 0:
                continue
            per = [correlate(a, b) for a, b in zip(px.values, py.values, strict=True)]
            r = np.array([p["pearson_r"] for p in per])
            rho = np.array([p["spearman_rho"] for p in per])
            ci = bootstrap_over_seeds(px.values, py.values, "mean_of_runs", "pearson", n_boot, seed)
            rows.append(
                {
                    "experiment": "warmstart",
                    "analysis": f"per-seed corr({x}, {y}), {name}",
                    "range": name,
                    "x": x,
                    "y": y,
                    "setting": setting,
                    "label": setting_label(setting),
                    "steps": f"epochs {px.steps.min():g}-{px.steps.max():g}",
                    "pearson_r": _nanmean(r),
                    "pearson_p": math.nan,
                    "spearman_rho": _nanmean(rho),
                    "spearman_p": math.nan,
                    "n": max((p["n"] for p in per), default=0),
                    "ci_low": ci["low"],
                    "ci_high": ci["high"],
                    "n_seeds": px.n_runs,
                    "per_seed_r": [float(v) for v in r],
                    "r_min": _nanmin(r),
                    "r_max": _nanmax(r),
                }
            )
    return rows


@dataclass
class WindowResult:
    """Sliding-window r per seed (rows) and window end (columns) for one setting."""

    setting: dict[str, Any]
    ends: np.ndarray
    r: np.ndarray  # (seeds, ends)
    n: np.ndarray  # (seeds, ends): points in each window
    run_ids: list[str]
    seeds: list[Any]

    @property
    def label(self) -> str:
        return setting_label(self.setting)

    def mean(self) -> np.ndarray:
        return _nan_reduce(np.nanmean, self.r)

    def std(self) -> np.ndarray:
        """Population std over seeds (ddof = 0), as for the curves' bands."""
        return _nan_reduce(np.nanstd, self.r)

    def at(self, end: float) -> np.ndarray:
        hit = np.flatnonzero(np.isclose(self.ends, end))
        return self.r[:, hit[0]] if hit.size else np.full(len(self.run_ids), np.nan)


def sliding_window_correlations(
    table: Table,
    x: str = "nc1",
    y: str = "full_test_acc",
    window: float = 100,
    stride: float = 5,
    first_end: float | None = None,
    method: str = "pearson",
) -> list[WindowResult]:
    """:func:`sliding_window_r` per seed for every warm-start setting, on one grid of ends.

    All seeds of a setting share the ends computed from the union of their checkpoints, so
    the mean +- std over seeds is taken per window end.
    """
    results = []
    for setting in table.settings("warmstart"):
        cx, cy = table.paired_curves(x, y, "warmstart", setting)
        ends = window_ends(cx.steps, window, stride, first_end)
        if cx.n_runs == 0 or ends.size == 0:
            continue
        r = np.full((cx.n_runs, ends.size), np.nan)
        n = np.zeros((cx.n_runs, ends.size), dtype=int)
        for i in range(cx.n_runs):
            e, r_i, n_i = sliding_window_r(
                cx.steps, cx.values[i], cy.values[i], window, stride, ends[0], method
            )
            r[i, : e.size], n[i, : e.size] = r_i, n_i
        results.append(WindowResult(setting, ends, r, n, cx.run_ids, cx.seeds))
    return results


def pretraining_nc1_vs_pl(
    table: Table, upto: Sequence[int] = (40, 100), x: str = "nc1", y: str = "pl"
) -> list[dict[str, Any]]:
    """Across runs: corr(x after the first task, mean of y over tasks 1..K), for each K.

    Our reading of the paper's threshold variant (train task 0 until NC1 < threshold, then
    measure PL): each permuted run contributes one point, its ``x`` at task 0 and its mean
    ``y`` over tasks ``1 <= task <= K``. Needs at least 3 runs.
    """
    run_ids = table.run_ids("permuted")
    if len(run_ids) < 3:
        return []
    cx = table.curves(x, run_ids=run_ids)
    cy = table.curves(y, run_ids=run_ids)
    first = cx.at(0.0)
    rows = []
    for k in upto:
        pl = _nan_reduce(np.nanmean, cy.between(0, k).values.T)
        rows.append(
            {
                "experiment": "permuted",
                "analysis": f"corr({x} after task 0, mean {y} over tasks 1-{k}) across runs",
                "x": x,
                "y": y,
                "setting": {},
                "label": "all permuted runs",
                "steps": f"tasks 1-{k}",
                **correlate(first, pl),
                "ci_low": math.nan,
                "ci_high": math.nan,
                "n_seeds": len(run_ids),
                "per_seed_r": [],
            }
        )
    return rows


def _nanmean(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def _nanmin(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(v.min()) if v.size else math.nan


def _nanmax(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(v.max()) if v.size else math.nan
