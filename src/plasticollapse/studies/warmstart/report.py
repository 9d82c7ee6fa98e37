"""The warm-start study's report: per-seed and sliding-window correlations, the paper's
numbers, the checkpoint table and the figures (:mod:`.figures`).

:func:`report` builds the study's :class:`~plasticollapse.studies.base.ReportSection`:

* what was run per scheme (data, model, warm-up reached, checkpoint spacing, seeds);
* the paper's numbers (:data:`PAPER_NUMBERS`) beside ours, for the matching scheme;
* correlations (``correlations.csv``): each seed's r(NC1, full-data test accuracy) across
  its warm-up checkpoints, averaged over seeds, over all checkpoints and before / after
  epoch 100 (:func:`seed_correlations`); the sliding-window r at the paper's window ends;
* the sliding-window r per seed and window end (``sliding_window.csv``,
  :func:`sliding_windows`);
* NC1 and accuracies at the paper's checkpoints (:func:`checkpoint_table`).

The window width and stride come from ``results.options`` (``window``, ``stride``; the
report's ``--window`` / ``--stride``), in warm-up epochs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plasticollapse import analysis
from plasticollapse.report.format import (
    PaperNumber,
    Reproduced,
    bootstrap_text,
    correlation_tables,
    fmt,
    mean_std,
    paper_tables,
    percent_scale,
    reached,
    seeds_text,
    to_percent,
)
from plasticollapse.report.predictors import predictor_board, ranking_caption, ranking_view
from plasticollapse.studies.base import ReportSection, StudyResults
from plasticollapse.studies.common import PAPER
from plasticollapse.studies.warmstart.windows import (
    WindowResult,
    sliding_windows,
    window_correlations,
    windows_frame,
)

PAPER_PROTOCOL = "CIFAR-10, ResNet-18, warm-up 350 epochs on 25k, ckpt every 5, seeds 7-11"
#: The config values a like-for-like run has (docs/paper.md, Setup B); schemes add theirs.
PAPER_CONFIG: dict[str, Any] = {
    "dataset": "cifar10",
    "model": "resnet18",
    "width": 64,
    "maxpool": True,
    "warmup_fraction": 0.5,
    "checkpoint_every": 5,
    "lr": 0.001,
    "momentum": 0.0,
    "batch_size": 128,
    "augment": False,
    "finetune_target_acc": 0.99,
    "finetune_max_epochs": 100,
    "train_samples": 0,
    "amp": False,
}
SCHEME_CONFIG: dict[str, dict[str, Any]] = {
    "plain": {},
    "shrink_perturb": {"shrink": 0.6, "perturb": 0.01},
    "nc1_reg": {"nc1_lambda": 0.05, "nc1_clip": 200.0},
}
#: Metrics shown per scheme in the ranking table (all are in metric_ranking.csv).
RANKING_SHOWN = 8
#: Warm-up epochs <= SPLIT are the paper's "first 100 epochs".
SPLIT = 100.0
#: The paper's checkpoints shown in the checkpoint table (and each scheme's last one) ...
PAPER_EPOCHS = (5, 50, 100, 350)
#: ... unless a scheme has at most this many checkpoints: then all of them.
ALL_CHECKPOINTS_UP_TO = 10
#: NC1 as the authors measured the plain (and S&P) networks: their torch.linalg.pinv
#: convention, BatchNorm in train mode; then the nearest that the runs hold.
AUTHORS_NC1 = ("nc1_pinv_bn_batch", "nc1_pinv", "nc1")
#: Keys that are not metrics of the warm-up network (the probe's outcome, bookkeeping).
NOT_RANKED = (
    "epoch",
    "seconds",
    "finetune_epochs",
    "finetune_train_acc",
    "warmup_loss",
    "closest_pair_a",
    "closest_pair_b",
    "closest_pair_a_bn_batch",
    "closest_pair_b_bn_batch",
    "num_classes_present",
    "num_classes_absent",
    "num_classes_present_bn_batch",
    "num_classes_absent_bn_batch",
    "diverged",
)


def _number(quantity, value, unit, kind, params, scheme="plain") -> PaperNumber:
    protocol = {**PAPER_CONFIG, **SCHEME_CONFIG[scheme]}
    return PaperNumber(
        quantity, value, unit, kind, params, require={"scheme": scheme}, protocol=protocol
    )


#: Source: the authors' stored result files, mean over seeds 7-11 unless said (see
#: docs/paper.md); full-data accuracies in percent; NC1 in the authors' convention
#: (torch.linalg.pinv, BatchNorm in train mode for plain networks: nc1_pinv_bn_batch).
# fmt: off
PAPER_NUMBERS: tuple[PaperNumber, ...] = (
    *(
        _number(f"NC1 (authors' convention) at warm-up epoch {e} (plain)", v, "", "value",
                {"metric": "nc1_pinv_bn_batch", "epoch": e})
        for e, v in ((5, 15.5), (50, 1.34), (100, 0.61), (350, 0.41))
    ),
    *(
        _number(f"full-data test acc at epoch {e} ({name})", v, "%", "value",
                {"metric": "full_test_acc", "epoch": e}, scheme)
        for scheme, name, values in (
            ("plain", "plain", ((5, 61.0), (50, 58.8), (100, 58.3), (350, (57.3, 59.8)))),
            ("shrink_perturb", "S&P", ((5, 66.4), (50, 62.0), (100, 60.8))),
            ("nc1_reg", "NC1-reg", ((5, 60.7), (50, 59.5), (100, 59.4))),
        )
        for e, v in values
    ),
    _number("per-seed r(NC1, full test acc), all checkpoints", (0.85, 0.89), "r", "seed_r",
            {"range": "all checkpoints", "last": 350}),
    _number("per-seed r(NC1, full test acc), epochs <= 100", (0.88, 0.92), "r", "seed_r",
            {"range": "epochs <= 100", "last": 100}),
    *(
        _number(f"sliding-window r, window ending at epoch {e}, seeds 7-10 (as plotted)", v,
                "r", "window_r", {"ends": (e,), "seeds": (7, 8, 9, 10)})
        for e, v in ((100, 0.90), (150, 0.58), (200, 0.14))
    ),
    _number("sliding-window r, window ending at epoch 200, seeds 7-11", 0.11, "r", "window_r",
            {"ends": (200,), "seeds": (7, 8, 9, 10, 11)}),
    _number("sliding-window r, windows ending at 225-350 (mean), seeds 7-11", -0.03, "r",
            "window_r", {"ends": tuple(range(225, 351, 5)), "seeds": (7, 8, 9, 10, 11)}),
)
# fmt: on


def paper_nc1(results: StudyResults) -> str:
    """The NC1 key the paper comparisons use: the first of :data:`AUTHORS_NC1` the runs hold."""
    available = set(analysis.metrics(results.table))
    return next((m for m in AUTHORS_NC1 if m in available), "nc1")


def is_authors_convention(results: StudyResults, key: str) -> bool:
    """Whether ``key`` is NC1 as the authors measured it: ``nc1_pinv_bn_batch``, or
    ``nc1_pinv`` when no run has BatchNorm (an MLP: the mode does not matter)."""
    has_bn = any(c.get("model", "resnet18") == "resnet18" for c in results.runs["config"])
    return key == AUTHORS_NC1[0] or (key == "nc1_pinv" and not has_bn)


def protocol_line(setting: dict[str, Any], runs: pd.DataFrame) -> str:
    """One line saying what was run for a setting: data, model, warm-up reached, seeds."""
    c = runs["config"].iloc[0]
    return (
        f"{c.get('dataset', '?')} {c.get('model', '')}, {analysis.setting_label(setting)}, "
        f"warm-up {fmt(reached(runs), 'int')}/{c.get('warmup_epochs', '?')} epochs, ckpt every "
        f"{c.get('checkpoint_every', '?')}, {seeds_text(runs)}"
    )


# =========================================================================== analyses


def ranges(split: float = SPLIT) -> tuple[tuple[str, float, float], ...]:
    """The three ranges of warm-up epochs e: all, ``e <= split``, ``e > split``."""
    return (
        ("all checkpoints", -math.inf, math.inf),
        (f"epochs <= {split:g}", -math.inf, split),
        (f"epochs > {split:g}", split, math.inf),
    )


def seed_correlations(
    results: StudyResults, x: str = "nc1", y: str = "full_test_acc", split: float = SPLIT
) -> list[dict[str, Any]]:
    """Per-seed corr(x, y) across warm-up checkpoints, per scheme/setting, three ranges.

    Within each range of :func:`ranges` every seed gives one r over its checkpoints; the
    row reports the mean of those r's (Pearson; Spearman likewise), each seed's r, and a
    95 % bootstrap interval of the mean per-seed Pearson r, resampling seeds
    (``"mean_of_runs"``). ``n`` is the number of checkpoints per seed (the most).
    """
    rows = []
    for setting, runs in analysis.setting_groups(results.runs, results.settings):
        cx, cy = analysis.paired_curves(results.table, x, y, list(runs["run_id"]))
        for name, lo, hi in ranges(split):
            px, py = analysis.between(cx, lo, hi), analysis.between(cy, lo, hi)
            if px.shape[1] == 0:
                continue
            per = [analysis.correlation(a, b) for a, b in zip(px.values, py.values, strict=True)]
            r = np.array([p["pearson_r"] for p in per])
            ci = analysis.bootstrap_over_seeds(
                px.values, py.values, "mean_of_runs", "pearson", results.bootstrap, results.seed
            )
            steps = px.columns.to_numpy(dtype=float)
            rows.append(
                {
                    "analysis": f"mean per-seed r: {x} vs {y}, {name}",
                    "range": name,
                    "x": x,
                    "setting": setting,
                    "label": analysis.setting_label(setting),
                    "steps": f"epochs {steps.min():g}-{steps.max():g}",
                    "pearson_r": analysis.nanmean(r),
                    "spearman_rho": analysis.nanmean([p["spearman_rho"] for p in per]),
                    "n": max((p["n"] for p in per), default=0),
                    "ci_low": ci["low"],
                    "ci_high": ci["high"],
                    "n_seeds": len(px),
                    "per_seed_r": [float(v) for v in r],
                }
            )
    return rows


#: The checkpoint table's columns: (metric, header); NC1 in both BatchNorm modes.
CHECKPOINT_METRICS = (
    ("nc1", "NC1 (eval)"),
    ("nc1_bn_batch", "NC1 (batch stats)"),
    ("nc1_pinv_bn_batch", "NC1 authors' (pinv, batch stats)"),
    ("warmup_test_acc", "warm-up test acc"),
    ("full_test_acc", "full-data test acc"),
    ("gap", "gap to fresh (pts)"),
    ("finetune_epochs", "fine-tune epochs"),
)


def gap_curves(results: StudyResults, ids: list[str]) -> pd.DataFrame:
    """full_test_acc minus the run's own fresh network's (summary ``fresh_full_test_acc``),
    in percentage points, per run and checkpoint (NaN for runs without a fresh probe)."""
    full = analysis.curves(results.table, "full_test_acc", ids)
    fresh = analysis.summary_values(results.summaries, "fresh_full_test_acc", ids)
    gap = full.sub(fresh.reindex(full.index).to_numpy(dtype=float), axis=0)
    return gap * percent_scale(full.to_numpy())


def checkpoint_table(results: StudyResults) -> pd.DataFrame:
    """NC1 (both BatchNorm modes when recorded), accuracies and the gap to a fresh network
    at the paper's epochs and each setting's last checkpoint (every checkpoint of a short
    run), mean ± std over seeds (std with ddof 0; accuracies in percent)."""
    available = set(analysis.metrics(results.table))
    shown = [(m, h) for m, h in CHECKPOINT_METRICS if m in available or m == "gap"]
    rows = []
    for setting, runs in analysis.setting_groups(results.runs, results.settings):
        ids = list(runs["run_id"])
        frames = {
            m: gap_curves(results, ids) if m == "gap" else analysis.curves(results.table, m, ids)
            for m, _ in shown
        }
        steps = frames["nc1"].columns.to_numpy(dtype=float) if "nc1" in frames else np.empty(0)
        if steps.size == 0:
            continue
        if steps.size <= ALL_CHECKPOINTS_UP_TO:  # a short run: every checkpoint
            epochs = sorted(steps)
        else:
            epochs = sorted({e for e in PAPER_EPOCHS if (steps == e).any()} | {steps.max()})
        for e in epochs:
            row = {"setting": analysis.setting_label(setting), "epoch": fmt(e, "int")}
            for metric, frame in frames.items():
                values = analysis.at(frame, e)
                if metric.endswith("acc"):
                    row[metric] = mean_std(to_percent(values), "%")
                else:
                    row[metric] = mean_std(values)
            rows.append(row)
    frame = pd.DataFrame(rows, columns=["setting", "epoch", *(m for m, _ in shown)])
    return frame.set_axis(["setting", "epoch", *(h for _, h in shown)], axis=1)


# =========================================================================== the paper's numbers


def reproduce(
    results: StudyResults,
    seed_corr: list[dict[str, Any]],
    windows: list[WindowResult],
    ref: PaperNumber,
    setting: dict[str, Any],
    runs: pd.DataFrame,
) -> Reproduced:
    """Our number for a paper number, from the runs of one scheme (mean over seeds).

    NC1 is taken in the authors' convention (:data:`AUTHORS_NC1`); a run set without it is
    reported with the nearest key it has and called not comparable. A number at an epoch
    the runs did not reach is NaN.
    """
    p = ref.params
    nc1 = paper_nc1(results)
    authors = is_authors_convention(results, nc1)
    convention = "" if authors else f"{nc1}, not {AUTHORS_NC1[0]}"
    if ref.kind == "value":
        metric = nc1 if p["metric"] == AUTHORS_NC1[0] else p["metric"]
        frame = analysis.curves(results.table, metric, list(runs["run_id"]))
        values = analysis.at(frame, float(p["epoch"]))
        if not np.isfinite(values).any():
            return Reproduced(math.nan, f"epoch {p['epoch']} not reached", False)
        value = analysis.nanmean(to_percent(values) if ref.unit == "%" else values)
        if metric != p["metric"] and not authors:
            return Reproduced(value, convention, False)
        return Reproduced(value)
    reached_to = reached(runs)
    short = reached_to < p.get("last", p.get("ends", (0,))[-1])
    span = f"warm-up reached epoch {reached_to:g} only" if short else ""
    note = "; ".join(filter(None, (convention, span)))
    if ref.kind == "seed_r":
        for row in seed_corr:
            if row["range"] == p["range"] and row["setting"] == setting and row["x"] == nc1:
                r = np.array(row["per_seed_r"])
                r = r[np.isfinite(r)]
                bounds = (float(r.min()), float(r.max())) if r.size else math.nan
                return Reproduced(bounds, note, not note)
        return Reproduced(math.nan, note, False)
    if ref.kind == "window_r":
        window = results.options.get("window", 100)
        if window != 100:
            note = "; ".join(filter(None, (note, f"window {window:g} epochs")))
        seeds = {str(v) for v in p.get("seeds", ())}
        for w in windows:
            if w.setting == setting:
                keep = [str(s) in seeds for s in w.seeds] if seeds else [True] * len(w.seeds)
                if not any(keep):
                    return Reproduced(math.nan, f"none of seeds {sorted(seeds)} run", False)
                if seeds and {str(s) for s in w.seeds} & seeds != seeds:
                    note = "; ".join(filter(None, (note, "not all of the paper's seeds")))
                means = [analysis.nanmean(w.at(e)[np.asarray(keep)]) for e in p["ends"]]
                return Reproduced(analysis.nanmean(means), note, not note)
        return Reproduced(math.nan, note, False)
    raise ValueError(f"unknown reproduction kind {ref.kind!r}")


# =========================================================================== the section


def nc1_note(results: StudyResults, nc1: str) -> str:
    """Which NC1 the section sets beside the paper's, and why (docs/metrics.md)."""
    if nc1 == AUTHORS_NC1[0]:
        why = (
            " (the authors' convention: torch.linalg.pinv, BatchNorm with batch statistics, "
            "as they measured plain and Shrink & Perturb networks)."
        )
    elif is_authors_convention(results, nc1):
        why = " (the authors' torch.linalg.pinv convention; no BatchNorm in these networks)."
    else:
        why = (
            "; these runs lack the authors' convention (nc1_pinv with batch statistics), so "
            "NC1 numbers are not compared like for like."
        )
    return (
        f"NC1 beside the paper's: {nc1}{why} nc1 is the exact convention, in eval mode "
        "(docs/metrics.md)."
    )


def metric_ranking(results: StudyResults) -> pd.DataFrame:
    """Every recorded metric of the warm-up network per scheme, scored against full-data
    test accuracy across checkpoints by the predictor leaderboard
    (:func:`~plasticollapse.report.predictors.predictor_board`: ``detrended_r_diff`` first,
    the paper's per-seed r of levels, ``paper_per_seed_r``, by name; seed-bootstrap
    intervals, Newey-West for a single seed; aliases once)."""
    return predictor_board(
        results.table, "full_test_acc", NOT_RANKED, results.bootstrap, results.seed
    )


def ranking_shown(ranking: pd.DataFrame, top: int = RANKING_SHOWN) -> pd.DataFrame:
    """The report's view of :func:`metric_ranking`: the top metrics per scheme, and every
    NC1 key wherever it ranks, with the paper's per-seed r beside them."""
    return ranking_view(ranking, "paper_per_seed_r", top, lambda m: m.startswith("nc1"))


def report(results: StudyResults) -> ReportSection:
    """The warm-start study's section of the report (see the module doc)."""
    from plasticollapse.studies.warmstart import figures

    folder = Path(results.out)
    nc1 = paper_nc1(results)
    xs = ["nc1", *([nc1] if nc1 != "nc1" else [])]
    seed_corr = [row for x in xs for row in seed_correlations(results, x)]
    windows = sliding_windows(results, nc1)
    shown, raw = correlation_tables(seed_corr + window_correlations(results, windows, nc1))
    ranking = metric_ranking(results)
    files = [folder / "correlations.csv", folder / "metric_ranking.csv"]
    raw.to_csv(files[0], index=False)
    ranking.to_csv(files[1], index=False)
    if windows:
        files.append(folder / "sliding_window.csv")
        windows_frame(windows).to_csv(files[-1], index=False)

    def reproduce_one(ref: PaperNumber, setting: dict, runs: pd.DataFrame) -> Reproduced:
        return reproduce(results, seed_corr, windows, ref, setting, runs)

    window = results.options.get("window", 100)
    return ReportSection(
        title="Warm start: warm-starting CIFAR-10 with ResNet-18 (the paper's Setup B)",
        protocol=f"Paper: {PAPER}; its protocol: {PAPER_PROTOCOL}.",
        notes=[nc1_note(results, nc1)],
        tables=[
            *paper_tables(
                results,
                PAPER_NUMBERS,
                reproduce_one,
                protocol_line,
                "Paper values: the authors' stored results, mean over seeds 7-11 unless the "
                "quantity says otherwise (docs/paper.md). Reproduced values are means over "
                "seeds of the matching scheme; a range is min..max over seeds.",
            ),
            (
                "Correlations\nmean per-seed r (the paper's convention, the headline): each "
                "seed's Pearson r / Spearman rho across ALL its checkpoints (and the paper's "
                "own split at epoch 100), averaged over seeds; no p-value, as checkpoints "
                "are autocorrelated; "
                f"sliding window ({window:g} epochs): mean over seeds of the r inside the "
                "window. " + bootstrap_text(results),
                shown,
            ),
            (
                "At the paper's checkpoints\nMean ± std over seeds (std with ddof 0); the last "
                "row per scheme is its last checkpoint (a scheme with at most "
                f"{ALL_CHECKPOINTS_UP_TO} checkpoints shows them all). Gap to fresh: full-data "
                "test accuracy minus that of a fresh network probed the same way (percentage "
                "points).",
                checkpoint_table(results),
            ),
            (
                "Which recorded metric tracks full-data test accuracy\n"
                + ranking_caption(
                    "full-data test accuracy", "paper_per_seed_r", RANKING_SHOWN, ranking
                ),
                ranking_shown(ranking),
            ),
        ],
        figures=figures.draw_all(results, folder / "figures", windows, window, x=nc1),
        files=files,
    )
