"""``plasticollapse report``: run folders -> results table, figures, report.md and report.html.

:func:`main_report` reads every run folder under the given paths and writes into ``out``::

    results.csv           the tidy long table (run_id, experiment, settings, seed, step,
                          metric, value); results.parquet beside it when pyarrow is installed
    correlations.csv      every correlation in the report, one row each
    sliding_window.csv    the sliding-window r per seed and window end
    figures/*.png|pdf     the paper's figures that the data allows
    report.md             protocol run, paper-vs-reproduction table, correlations, figures
    report.html           the same, self-contained (figures as base64 PNG; no network)

The paper's reference numbers live in one place, :data:`PAPER_NUMBERS`.
"""

from __future__ import annotations

import base64
import csv
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from plasticollapse import analysis
from plasticollapse.analysis import Table, setting_label
from plasticollapse.report import plots

DASH = "—"

# =========================================================================== the paper's numbers


@dataclass(frozen=True)
class PaperNumber:
    """One number the paper reports, and how to compute its counterpart from our runs.

    ``value`` is a float, or a (low, high) range. ``kind`` picks the computation (see
    :func:`reproduce`); ``require`` are setting values a run must have to count (a
    different scheme is a different experiment), ``prefer`` are the paper's values of the
    other settings, used to pick the closest setting that was run.
    """

    experiment: str
    quantity: str
    value: float | tuple[float, float]
    unit: str  # "r", "frac" (0-1), "%" (percent), "nc1"
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    require: dict[str, Any] = field(default_factory=dict)
    prefer: dict[str, Any] = field(default_factory=dict)


#: Source: Bonifazi, Chalas, Hess, Łucki, "Can We Understand Plasticity Through Neural
#: Collapse?" (arXiv 2404.02719, 2024), as summarised in PAPER.md: the permuted headline
#: from the paper's text; the warm-start values recomputed from the authors' stored result
#: files (mean over seeds 7-11). Full-data accuracies in percent.
PAPER_SOURCE = (
    "Bonifazi et al. 2024, arXiv 2404.02719 (text and the authors' stored results, "
    "mean over 5 seeds)"
)
_PERM = {"first_task_epochs": 1, "lr": 0.01}
_PERM_PROTOCOL = "MNIST, MLP 784-100x3-10, SGD lr 0.01, batch 1, 1 epoch/task, 200 tasks, 5 seeds"
_WS_PROTOCOL = "CIFAR-10, ResNet-18, warm-up 350 epochs on 25k, ckpt every 5, seeds 7-11"
# fmt: off
PAPER_NUMBERS: tuple[PaperNumber, ...] = (
    PaperNumber("permuted", "r(mean NC1, mean accuracy), first 140 tasks", -0.94, "r",
                "permuted_r", {"max_tasks": 140}, prefer=_PERM),
    PaperNumber("permuted", "accuracy, first task (index 0)", 0.925, "frac", "permuted_value",
                {"metric": "accuracy", "at": "first"}, prefer=_PERM),
    PaperNumber("permuted", "accuracy at task 140 (index 139)", 0.81, "frac", "permuted_value",
                {"metric": "accuracy", "at": 139}, prefer=_PERM),
    PaperNumber("permuted", "NC1, first task (index 0)", 0.235, "nc1", "permuted_value",
                {"metric": "nc1", "at": "first"}, prefer=_PERM),
    PaperNumber("permuted", "NC1 at task 140 (index 139)", 0.35, "nc1", "permuted_value",
                {"metric": "nc1", "at": 139}, prefer=_PERM),
    *(
        PaperNumber("warmstart", f"NC1 at warm-up epoch {e} (plain)", v, "nc1", "warm_value",
                    {"metric": "nc1", "epoch": e}, require={"scheme": "plain"})
        for e, v in ((5, 15.5), (50, 1.34), (100, 0.61), (350, 0.41))
    ),
    *(
        PaperNumber("warmstart", f"full-data test acc at epoch {e} ({name})", v, "%",
                    "warm_value", {"metric": "full_test_acc", "epoch": e},
                    require={"scheme": scheme})
        for scheme, name, values in (
            ("plain", "plain", ((5, 61.0), (50, 58.8), (100, 58.3), (350, (57.3, 59.8)))),
            ("shrink_perturb", "S&P", ((5, 66.4), (50, 62.0), (100, 60.8))),
            ("nc1_reg", "NC1-reg", ((5, 60.7), (50, 59.5), (100, 59.4))),
        )
        for e, v in values
    ),
    PaperNumber("warmstart", "per-seed r(NC1, full test acc), all checkpoints", (0.85, 0.89),
                "r", "warm_seed_r", {"range": "all checkpoints"}, require={"scheme": "plain"}),
    PaperNumber("warmstart", "per-seed r(NC1, full test acc), epochs <= 100", (0.88, 0.92),
                "r", "warm_seed_r", {"range": "epochs <= 100"}, require={"scheme": "plain"}),
    *(
        PaperNumber("warmstart", f"sliding-window r, window ending at epoch {e}", v, "r",
                    "window_r", {"ends": (e,)}, require={"scheme": "plain"})
        for e, v in ((100, 0.90), (150, 0.58), (200, 0.14))
    ),
    PaperNumber("warmstart", "sliding-window r, windows ending at 225-350 (mean)", 0.0, "r",
                "window_r", {"ends": tuple(range(225, 351, 5))}, require={"scheme": "plain"}),
)
# fmt: on
PAPER_PROTOCOL = {"permuted": _PERM_PROTOCOL, "warmstart": _WS_PROTOCOL}


# =========================================================================== formatting


def fmt(value: Any, unit: str = "", digits: int = 3) -> str:
    """A table cell: NaN/None -> "—"; ranges "a..b"; r signed; % with one decimal."""
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


def _mid(value: float | tuple[float, float]) -> float:
    return 0.5 * (value[0] + value[1]) if isinstance(value, tuple) else float(value)


def _to_percent(values: np.ndarray) -> np.ndarray:
    """Accuracies as percent whether the runs wrote fractions (<= 1.5) or percent."""
    finite = values[np.isfinite(values)]
    return values * 100.0 if finite.size and finite.max() <= 1.5 else values


def _to_fraction(values: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    return values / 100.0 if finite.size and finite.max() > 1.5 else values


# =========================================================================== reproduction


@dataclass
class Context:
    """What the report computed once and every section reuses."""

    table: Table
    window: float
    stride: float
    n_boot: int
    seed: int
    windows: list[analysis.WindowResult]
    seed_corr: list[dict[str, Any]]


def pick_setting(
    table: Table, experiment: str, require: dict[str, Any], prefer: dict[str, Any]
) -> dict[str, Any] | None:
    """The run setting that has every ``require`` value and most ``prefer`` values."""
    best, best_score = None, -1
    for setting in table.settings(experiment):
        runs = table.run_ids(experiment, setting)
        config = table.runs[runs[0]].config if runs else {}
        value = {**config, **setting}
        if any(not analysis._same(value.get(k), v) for k, v in require.items()):
            continue
        score = sum(analysis._same(value.get(k), v) for k, v in prefer.items())
        if score > best_score:
            best, best_score = setting, score
    return best


def protocol_of(table: Table, experiment: str, setting: dict[str, Any]) -> str:
    """One line saying what was actually run for a setting: data, length, seeds."""
    runs = [table.runs[r] for r in table.run_ids(experiment, setting)]
    if not runs:
        return DASH
    c = runs[0].config
    seeds = sorted({str(r.seed) for r in runs})
    done = sum(r.complete for r in runs)
    reached = max((r.last_step for r in runs if math.isfinite(r.last_step)), default=math.nan)
    diverged = sum((r.summary or {}).get("status") == "diverged" for r in runs)
    seed_text = f"{len(seeds)} seeds ({', '.join(seeds)}; {done} complete"
    seed_text += f", {diverged} diverged)" if diverged else ")"
    if experiment == "permuted":
        tasks = fmt(reached + 1, "int") if math.isfinite(reached) else DASH
        return (
            f"{c.get('dataset', '?')}, lr {c.get('lr', '?')}, E={c.get('first_task_epochs', '?')}"
            f", {tasks}/{c.get('tasks', '?')} tasks, {seed_text}"
        )
    if experiment != "warmstart":
        return f"{setting_label(setting)}, last step {fmt(reached, 'int')}, {seed_text}"
    return (
        f"{c.get('dataset', '?')} {c.get('model', '')}, {setting_label(setting)}, warm-up "
        f"{fmt(reached, 'int')}/{c.get('warmup_epochs', '?')} epochs, ckpt every "
        f"{c.get('checkpoint_every', '?')}, {seed_text}"
    )


def reproduce(ctx: Context, ref: PaperNumber) -> tuple[float | tuple[float, float], str]:
    """Our number for ``ref`` (NaN when the runs cannot give it) and the protocol behind it."""
    table = ctx.table
    setting = pick_setting(table, ref.experiment, ref.require, ref.prefer)
    if setting is None:
        wanted = setting_label(ref.require) if ref.require else ref.experiment
        return math.nan, f"not run ({wanted})"
    protocol = protocol_of(table, ref.experiment, setting)
    p = ref.params
    if ref.kind == "permuted_r":
        cx, cy = table.paired_curves("nc1", "accuracy", "permuted", setting)
        cut = p["max_tasks"] - 1
        return analysis.correlate(
            cx.between(-math.inf, cut).mean(), cy.between(-math.inf, cut).mean()
        )["pearson_r"], protocol
    if ref.kind == "permuted_value":
        c = table.curves(p["metric"], "permuted", setting)
        mean = c.mean()
        ok = np.flatnonzero(np.isfinite(mean))
        if ok.size == 0:
            return math.nan, protocol
        if p["at"] == "first":
            i = ok[0]
        else:  # the paper's task, or the last task reached when the runs are shorter
            before = ok[c.steps[ok] <= p["at"]]
            i = before[-1]
            if c.steps[i] != p["at"]:
                protocol += f"; value at task {int(c.steps[i])}"
        value = mean[i]
        return (
            float(_to_fraction(np.array([value]))[0]) if ref.unit == "frac" else value
        ), protocol
    if ref.kind == "warm_value":
        c = table.curves(p["metric"], "warmstart", setting)
        v = c.at(float(p["epoch"]))
        if ref.unit == "%":
            v = _to_percent(v)
        v = v[np.isfinite(v)]
        return (float(v.mean()) if v.size else math.nan), protocol
    if ref.kind == "warm_seed_r":
        want = p["range"]
        for row in ctx.seed_corr:
            if row["range"] == want and row["setting"] == setting and row["x"] == "nc1":
                r = np.array(row["per_seed_r"])
                r = r[np.isfinite(r)]
                if r.size:
                    return (float(r.min()), float(r.max())), protocol
        return math.nan, protocol
    if ref.kind == "window_r":
        for w in ctx.windows:
            if w.setting == setting:
                means = [
                    np.nanmean(w.at(e)) if np.isfinite(w.at(e)).any() else math.nan
                    for e in p["ends"]
                ]
                means = [m for m in means if math.isfinite(m)]
                note = "" if ctx.window == 100 else f"; window {ctx.window:g} epochs"
                return (float(np.mean(means)) if means else math.nan), protocol + note
        return math.nan, protocol
    raise ValueError(f"unknown reproduction kind {ref.kind!r}")


def comparison_rows(ctx: Context) -> list[list[str]]:
    """quantity | paper | reproduced | difference | protocol run | paper's protocol."""
    rows = []
    for ref in PAPER_NUMBERS:
        if ref.experiment not in ctx.table.experiments():
            ours, protocol = math.nan, f"no {ref.experiment} runs"
        else:
            ours, protocol = reproduce(ctx, ref)
        diff = _mid(ours) - _mid(ref.value) if not _is_nan(ours) else math.nan
        diff_text = fmt(diff, "r" if ref.unit == "r" else "")
        if ref.unit == "%" and math.isfinite(diff):
            diff_text = f"{diff:+.1f} pts"
        elif ref.unit in ("frac", "nc1") and math.isfinite(diff):
            diff_text = f"{diff:+.3g}"
        if isinstance(ref.value, tuple) or isinstance(ours, tuple):
            diff_text += " (midpoints)" if math.isfinite(diff) else ""
        rows.append(
            [
                ref.experiment,
                ref.quantity,
                fmt(ref.value, ref.unit),
                fmt(ours, ref.unit),
                diff_text,
                protocol,
                PAPER_PROTOCOL[ref.experiment],
            ]
        )
    return rows


def _is_nan(v: Any) -> bool:
    return not isinstance(v, tuple) and not math.isfinite(float(v))


# =========================================================================== sections

CORR_HEADERS = [
    "experiment",
    "analysis",
    "setting",
    "steps",
    "n",
    "Pearson r",
    "p",
    "Spearman rho",
    "p",
    "95% CI (seeds)",
    "seeds",
    "per-seed r",
]


def correlation_rows(table: Table, ctx: Context) -> list[dict[str, Any]]:
    """Every correlation in the report, as dicts (also written to correlations.csv)."""
    rows: list[dict[str, Any]] = []
    if "permuted" in table.experiments():
        rows += analysis.permuted_correlations(table, "nc1", "accuracy", 140, ctx.n_boot, ctx.seed)
        if any(r.config.get("nc1_threshold") is not None for r in table.runs.values()):
            rows += analysis.pretraining_nc1_vs_pl(table)
    rows += ctx.seed_corr
    for w in ctx.windows:
        for end in _window_report_ends(w):
            ci = analysis.bootstrap_mean(w.at(end), ctx.n_boot, ctx.seed)
            r = w.at(end)
            rows.append(
                {
                    "experiment": "warmstart",
                    "analysis": f"sliding-window r(nc1, full_test_acc), {ctx.window:g} epochs",
                    "setting": w.setting,
                    "label": w.label,
                    "steps": f"epochs ({end - ctx.window:g}, {end:g}]",
                    "pearson_r": ci["estimate"],
                    "pearson_p": math.nan,
                    "spearman_rho": math.nan,
                    "spearman_p": math.nan,
                    "n": int(np.max(w.n[:, np.isclose(w.ends, end)], initial=0)),
                    "ci_low": ci["low"],
                    "ci_high": ci["high"],
                    "n_seeds": int(np.isfinite(r).sum()),
                    "per_seed_r": [float(v) for v in r],
                }
            )
    return rows


def _window_report_ends(w: analysis.WindowResult) -> list[float]:
    """The paper's ends (100, 150, ..., 350) that exist, else first/middle/last end."""
    wanted = [e for e in (100, 150, 200, 250, 300, 350) if np.isclose(w.ends, e).any()]
    if wanted:
        return wanted
    idx = sorted({0, len(w.ends) // 2, len(w.ends) - 1})
    return [float(w.ends[i]) for i in idx]


def _corr_cells(row: dict[str, Any]) -> list[str]:
    per = [v for v in row.get("per_seed_r", []) if math.isfinite(v)]
    ci = (
        f"[{fmt(row['ci_low'], 'r')}, {fmt(row['ci_high'], 'r')}]"
        if math.isfinite(row.get("ci_low", math.nan))
        else DASH
    )
    return [
        row["experiment"],
        row["analysis"],
        row.get("label", DASH),
        row.get("steps", DASH),
        fmt(row.get("n"), "int"),
        fmt(row["pearson_r"], "r"),
        fmt(row["pearson_p"], "p"),
        fmt(row["spearman_rho"], "r"),
        fmt(row["spearman_p"], "p"),
        ci,
        fmt(row.get("n_seeds"), "int"),
        ", ".join(fmt(v, "r") for v in per) or DASH,
    ]


def protocol_rows(table: Table) -> list[list[str]]:
    """experiment | setting | protocol run | runs | complete | partial."""
    rows = []
    for e in table.experiments():
        for setting in table.settings(e):
            ids = table.run_ids(e, setting)
            done = sum(table.runs[r].complete for r in ids)
            rows.append(
                [
                    e,
                    setting_label(setting),
                    protocol_of(table, e, setting),
                    str(len(ids)),
                    str(done),
                    str(len(ids) - done),
                ]
            )
    return rows


def common_config_text(table: Table, experiment: str) -> str:
    """The config fields every run of ``experiment`` shares (the fixed part of the protocol)."""
    configs = [i.config for i in table.runs.values() if i.experiment == experiment]
    keys = set(table.setting_keys.get(experiment, [])) | analysis.NOT_SETTINGS
    shared = {
        k: analysis.normalise_setting(v)
        for k, v in sorted(configs[0].items())
        if k not in keys and all(repr(c.get(k)) == repr(v) for c in configs)
    }
    return ", ".join(f"{k}={v}" for k, v in shared.items())


def checkpoint_rows(table: Table) -> list[list[str]]:
    """Warm start at the paper's epochs: NC1 and accuracies, mean ± std over seeds."""
    rows = []
    for setting in table.settings("warmstart"):
        curves = {
            m: table.curves(m, "warmstart", setting)
            for m in ("nc1", "warmup_test_acc", "full_test_acc", "finetune_epochs")
        }
        steps = curves["nc1"].steps
        epochs = [e for e in (5, 50, 100, 350) if (steps == e).any()]
        if steps.size:
            epochs = sorted(set(epochs) | {float(steps.max())})
        for e in epochs:
            cells = [setting_label(setting), fmt(e, "int")]
            for m, c in curves.items():
                v = c.at(float(e))
                if m.endswith("acc"):
                    v = _to_percent(v)
                v = v[np.isfinite(v)]
                unit = "%" if m.endswith("acc") else ""
                cells.append(f"{fmt(v.mean(), unit)} ± {fmt(v.std(), unit)}" if v.size else DASH)
            rows.append(cells)
    return rows


# =========================================================================== rendering


@dataclass
class Doc:
    """A report as blocks, rendered to both Markdown and HTML from the same content."""

    blocks: list[tuple] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        if rows:
            self.blocks.append(("table", list(headers), [list(r) for r in rows]))
        else:
            self.p("(nothing to show: the runs hold no data for this table)")

    def img(self, path: Path, caption: str) -> None:
        self.blocks.append(("img", path, caption))

    def markdown(self, root: Path) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "table":
                cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
                out.append("| " + " | ".join(map(cell, b[1])) + " |")
                out[-1] += "\n|" + "---|" * len(b[1])
                out[-1] += "".join("\n| " + " | ".join(map(cell, r)) + " |" for r in b[2])
            elif b[0] == "img":
                out.append(f"![{b[2]}]({b[1].relative_to(root).as_posix()})\n\n*{b[2]}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        body = []
        for b in self.blocks:
            if b[0] == "h":
                body.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                body.append(f"<p>{html.escape(b[1])}</p>")
            elif b[0] == "table":
                head = "".join(f"<th>{html.escape(h)}</th>" for h in b[1])
                rows = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                    for r in b[2]
                )
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif b[0] == "img":
                data = base64.b64encode(b[1].read_bytes()).decode("ascii")
                body.append(
                    f'<figure><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(b[2])}</figcaption></figure>"
                )
        return HTML_PAGE.format(title=html.escape(title), body="\n".join(body))


HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }}
th {{ background: #f2f2f2; }}
tr:nth-child(even) td {{ background: #fafafa; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; }}
figcaption {{ font-size: 0.85em; color: #555; }}
</style></head><body>
{body}
</body></html>
"""

FIGURE_CAPTIONS = {
    "permuted_nc1_pl": "Permuted: NC1 and plasticity loss per task (paper Fig. 2)",
    "permuted_nc1_vs_accuracy": "Permuted: per-task mean NC1 vs mean accuracy, first 140 tasks",
    "warmstart_nc1": "Warm start: NC1 on the warm-up set per checkpoint",
    "warmstart_nc_vs_acc_all": "Warm start: NC1-NC4 vs full-data test acc, all epochs (Fig. 5)",
    "warmstart_nc_vs_acc_first100": "Warm start: NC metrics vs full-data acc, epochs <= 100",
    "warmstart_nc_vs_acc_after100": "Warm start: NC metrics vs full-data acc, epochs > 100",
    "warmstart_sliding_window": "Warm start: sliding-window r(NC1, full-data acc) (Fig. 3)",
    "warmstart_accuracy": "Warm start: warm-up and full-data test accuracy per scheme (Fig. 4)",
}


# =========================================================================== main


def main_report(
    run_dirs: Sequence[str | Path],
    out: Path,
    window: int = 100,
    stride: int = 5,
    bootstrap: int = 1000,
    seed: int = 0,
) -> Path:
    """Write the results table, figures, report.md and report.html into ``out``; return it.

    Options (mirror them as ``report`` flags):

    * ``run_dirs``: run folders or folders containing them (searched recursively).
    * ``out``: the report folder (created; files in it are overwritten).
    * ``window``: sliding-window width in warm-up EPOCHS (default 100): the window ending at
      epoch e holds the checkpoints with ``e - window < epoch <= e``.
    * ``stride``: epochs between consecutive window ends (default 5); ends run
      ``window, window + stride, ...`` up to the last checkpoint.
    * ``bootstrap``: bootstrap resamples of the seeds for the 95 % intervals (0: none).
    * ``seed``: seed of the bootstrap's random generator (the report is deterministic).

    Raises ValueError when no run folder is found.
    """
    out = Path(out)
    table = analysis.load_runs(run_dirs)
    if not table.runs:
        raise ValueError(
            f"no run folders (config.json + metrics.jsonl) under {', '.join(map(str, run_dirs))}"
        )
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = [table.to_csv(out / "results.csv")]
    parquet = table.to_parquet(out / "results.parquet")
    if parquet is not None:
        written.append(parquet)

    windows = analysis.sliding_window_correlations(table, window=window, stride=stride)
    seed_corr = []
    if "warmstart" in table.experiments():
        seed_corr = analysis.warmstart_seed_correlations(
            table, "nc1", "full_test_acc", 100, bootstrap, seed
        )
    ctx = Context(table, window, stride, bootstrap, seed, windows, seed_corr)
    correlations = correlation_rows(table, ctx)
    written.append(write_correlations_csv(correlations, out / "correlations.csv"))
    if windows:
        written.append(write_windows_csv(windows, out / "sliding_window.csv"))

    print(f"report: {len(table.runs)} runs, {len(table)} rows; drawing figures")
    figures = plots.paper_figures(table, out / "figures", windows=windows, window=window)
    written += figures

    doc = build_doc(table, ctx, correlations, figures, run_dirs)
    (out / "report.md").write_text(doc.markdown(out))
    (out / "report.html").write_text(doc.html("plasticollapse report"))
    written += [out / "report.md", out / "report.html"]
    print(f"report written to {out}/:")
    for path in written:
        print(f"  {path.relative_to(out).as_posix()}")
    return out


def build_doc(
    table: Table,
    ctx: Context,
    correlations: list[dict[str, Any]],
    figures: list[Path],
    run_dirs: Sequence[str | Path],
) -> Doc:
    doc = Doc()
    runs = list(table.runs.values())
    done = sum(r.complete for r in runs)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    doc.h(1, "plasticollapse report")
    doc.p(
        f"Generated {now} from {', '.join(map(str, run_dirs))}: {len(runs)} runs "
        f"({done} complete, {len(runs) - done} partial), {len(table)} table rows. "
        "Reproduces Bonifazi et al., 'Can We Understand Plasticity Through Neural Collapse?' "
        "(arXiv 2404.02719)."
    )

    doc.h(2, "Protocol actually run")
    doc.table(
        ["experiment", "setting", "protocol", "runs", "complete", "partial"], protocol_rows(table)
    )
    for e in table.experiments():
        doc.p(f"{e}, shared by every run: {common_config_text(table, e) or DASH}")

    doc.h(2, "Reproduced numbers beside the paper's")
    doc.p(
        f"Paper values: {PAPER_SOURCE}. Reproduced values are means over seeds of the closest "
        "setting that was run (the protocol column says which); a range is min..max over "
        f"seeds; '{DASH}' means the runs cannot give the number (not run, or not reached)."
    )
    doc.table(
        [
            "experiment",
            "quantity",
            "paper",
            "reproduced",
            "difference",
            "protocol run",
            "paper's protocol",
        ],
        comparison_rows(ctx),
    )

    doc.h(2, "Correlations")
    doc.p(
        "Pearson r and Spearman rho with scipy's two-sided p-values. Permuted: across tasks "
        "between the per-task means over seeds (tasks 0-139 or fewer). Warm start: each seed's "
        "r across its checkpoints, averaged over seeds (p-values per seed are not pooled). "
        "Sliding window: mean over seeds of the r inside the window. 95% CI: percentile "
        f"bootstrap resampling seeds with replacement ({ctx.n_boot} resamples, seed "
        f"{ctx.seed}); {DASH} with fewer than 2 seeds."
    )
    doc.table(CORR_HEADERS, [_corr_cells(r) for r in correlations])

    if "warmstart" in table.experiments():
        doc.h(2, "Warm start at the paper's checkpoints")
        doc.p(
            "Mean ± std over seeds (std with ddof 0); the last row per scheme is its last "
            "checkpoint."
        )
        doc.table(
            [
                "setting",
                "epoch",
                "NC1",
                "warm-up test acc",
                "full-data test acc",
                "fine-tune epochs",
            ],
            checkpoint_rows(table),
        )

    doc.h(2, "Figures")
    if not figures:
        doc.p("No figure could be drawn from these runs.")
    for png in figures:
        doc.img(png, FIGURE_CAPTIONS.get(png.stem, png.stem))
    doc.p(
        "Files: results.csv (tidy table), correlations.csv, sliding_window.csv, figures/*.png "
        "and *.pdf."
    )
    return doc


def write_correlations_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    headers = [
        "experiment",
        "analysis",
        "setting",
        "steps",
        "n",
        "pearson_r",
        "pearson_p",
        "spearman_rho",
        "spearman_p",
        "ci_low",
        "ci_high",
        "n_seeds",
        "per_seed_r",
    ]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(headers)
        for r in rows:
            writer.writerow(
                [
                    r["experiment"],
                    r["analysis"],
                    r.get("label", ""),
                    r.get("steps", ""),
                    r.get("n", ""),
                    *(_num(r.get(k)) for k in headers[5:11]),
                    r.get("n_seeds", ""),
                    " ".join(_num(v) for v in r.get("per_seed_r", [])),
                ]
            )
    return path


def write_windows_csv(windows: list[analysis.WindowResult], path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["setting", "run_id", "seed", "window_end", "r", "n_points"])
        for w in windows:
            for i, rid in enumerate(w.run_ids):
                for j, end in enumerate(w.ends):
                    writer.writerow(
                        [w.label, rid, w.seeds[i], _num(end), _num(w.r[i, j]), int(w.n[i, j])]
                    )
    return path


def _num(v: Any) -> str:
    if v is None:
        return ""
    v = float(v)
    return "" if not math.isfinite(v) else repr(v)
