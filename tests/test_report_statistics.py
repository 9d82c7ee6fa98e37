"""The study reports' statistics on dependent data (issue 20): the ranking is detrended
with seed intervals and aliases once, the threshold variant's across-run r separates acc_0
from later accuracy and resamples seeds, and no report prints a p-value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_report import PAPER_LIKE, study_results, write_permuted

from plasticollapse.studies import report_command
from plasticollapse.studies.permuted import report as permuted_report
from plasticollapse.studies.permuted import threshold

TASKS = 60


def trend_runs(root):
    """Three seeds of one setting: accuracy = a falling trend + wiggles e. ``weight_magnitude``
    shares only the trend (its r of levels is the largest); ``effective_rank`` shares e
    with a weak trend; ``dead_fraction_layer3`` is an exact copy of ``dead_fraction``."""
    rng = np.random.default_rng(3)
    t = np.arange(TASKS) / TASKS
    for seed in range(3):
        e = rng.normal(0, 0.02, TASKS)
        accuracy = 0.9 - 0.2 * t + e
        trend = 0.2 + 0.5 * t + rng.normal(0, 0.005, TASKS)
        tracks = 40 - 2 * t + 100 * e + rng.normal(0, 0.5, TASKS)
        dead = 0.1 + 0.3 * t + rng.normal(0, 0.05, TASKS)
        series = [
            {
                "task": i,
                "accuracy": accuracy[i],
                "pl": accuracy[0] - accuracy[i],
                "weight_magnitude": trend[i],
                "effective_rank": tracks[i],
                "dead_fraction": dead[i],
                "dead_fraction_layer3": dead[i],
            }
            for i in range(TASKS)
        ]
        config = {**PAPER_LIKE, "tasks": TASKS, "seed": seed}
        write_permuted(root / f"s{seed}", config, series)
    return root


def test_the_ranking_does_not_put_a_trend_only_metric_first(tmp_path):
    runs = trend_runs(tmp_path / "runs")
    ranking = permuted_report.metric_ranking(study_results(runs, "permuted", tmp_path))
    head = ranking[ranking["statistic"] == "detrended_r_diff"].set_index("metric")
    assert head.loc["effective_rank", "rank"] == 1
    assert head.loc["effective_rank", "ci_low"] > 0  # its changes go with accuracy's
    trend = head.loc["weight_magnitude"]
    assert trend["ci_low"] <= 0 <= trend["ci_high"]  # a shared trend alone: about 0
    assert (head["n_seeds"] == 3).all() and (head["n_steps"] == TASKS - 1).all()
    # The paper's convention, kept by name, is the one a trend wins: r of levels.
    paper = ranking[ranking["statistic"] == "paper_mean_curve_r"].set_index("metric")
    assert abs(paper.loc["weight_magnitude", "estimate"]) > abs(
        paper.loc["effective_rank", "estimate"]
    )
    # One metric under two names is ranked once, its alias listed.
    assert "dead_fraction_layer3" not in set(ranking["metric"])
    assert "dead_fraction_layer3 (identical)" in head.loc["dead_fraction", "aliases"]
    # The report's table shows the headline with its interval and n, and no p-value.
    folder = report_command.main_report([runs], tmp_path / "r", bootstrap=200)
    text = (folder / "report.md").read_text()
    rows = [line.strip("|").split(" | ") for line in text.splitlines() if line.startswith("| ")]
    shown = next(r for r in rows if len(r) > 4 and r[2].strip() == "effective_rank")
    assert shown[1].strip() == "1" and "[" in shown[3] and shown[4].strip() == "3 / 3 / 59"
    assert "p-value" not in text.replace("No p-value", "").replace("no p-value", "")
    assert "| p |" not in text


def run_frame(n_seeds=5, thresholds=(0.6, 0.55, 0.5), acc0_drives_pl=True, seed=0):
    """A run table of the variant: per seed a shared first-task trajectory (a lower
    threshold trains it longer: more epochs, higher acc_0, lower NC1). Later accuracy is
    seed noise only, so PL = acc_0 - acc_i is acc_0 with noise."""
    rng = np.random.default_rng(seed)
    rows, accuracy = [], []
    for s in range(1, n_seeds + 1):
        base = rng.normal(0, 0.01)
        later = 0.7 + rng.normal(0, 0.002)
        for k, th in enumerate(thresholds):
            epochs = 1 + k + (s % 2)
            acc0 = 0.80 + 0.02 * epochs + base
            nc1 = th - 0.02 * rng.random()
            curve = [acc0] + list(later + rng.normal(0, 0.003, 99))
            rows.append((s, th, epochs, nc1, True))
            accuracy.append(curve)
    acc = pd.DataFrame(accuracy, index=[f"r{i}" for i in range(len(rows))])
    acc.columns = acc.columns.astype(float)
    seeds, ths, epochs, nc1, reached = zip(*rows, strict=True)
    return threshold.run_table(seeds, ths, epochs, nc1, reached, acc)


def test_threshold_statistics_separate_acc0_and_resample_seeds():
    frame = run_frame()
    est = threshold.block_estimates(frame, n_boot=400).set_index(["block", "statistic"])
    runs = threshold.distinct_runs(frame)
    # PL over tasks 1-40 is acc_0 minus noise: r(acc_0, PL) is about 1, later accuracy alone
    # is unrelated to NC1, and the table says both.
    acc0_pl = est.loc[("1-40", "r(acc_0, mean PL_i)")]
    assert acc0_pl["estimate"] == pytest.approx(np.corrcoef(runs["acc0"], runs["pl_1-40"])[0, 1])
    assert acc0_pl["estimate"] > 0.95
    nc1_pl = est.loc[("1-40", "r(NC1 after task 0, mean PL_i)")]
    assert nc1_pl["estimate"] == pytest.approx(np.corrcoef(runs["nc1_0"], runs["pl_1-40"])[0, 1])
    nc1_acc = est.loc[("1-40", "r(NC1 after task 0, mean acc_i)")]
    assert nc1_acc["estimate"] == pytest.approx(np.corrcoef(runs["nc1_0"], runs["acc_1-40"])[0, 1])
    # 15 runs, but 5 seeds: the interval resamples seeds, and says so.
    assert (est["n_runs"] == 15).all() and (est["n_seeds"] == 5).all()
    assert set(est["interval"]) == {"seed bootstrap"}
    assert (est["ci_low"] <= est["estimate"] + 1e-12).all()
    assert (est["estimate"] <= est["ci_high"] + 1e-12).all()
    assert "15 distinct runs from 5 seeds (3-3 per seed" in threshold.nesting_text(frame)


def test_threshold_runs_count_once_and_capped_runs_are_left_out():
    frame = run_frame(n_seeds=3)
    twice = frame.iloc[[0]].assign(run_id="again", nc1_threshold=0.45)
    both = pd.concat([frame.drop(columns="duplicate_of"), twice.drop(columns="duplicate_of")])
    acc = pd.DataFrame(
        np.tile(np.linspace(0.8, 0.7, 100), (len(both) + 1, 1)),
        index=[*both["run_id"], "capped"],
    )
    acc.columns = acc.columns.astype(float)
    table = threshold.run_table(
        [*both["seed"], 9],
        [*both["nc1_threshold"], 0.3],
        [*both["epochs"], 30],
        [*both["nc1_0"], 0.9],
        [*both["reached"], False],
        acc,
    )
    assert table.set_index("run_id").loc["again", "duplicate_of"] == "r0"
    assert set(threshold.distinct_runs(table)["run_id"]) == set(frame["run_id"])
    assert "1 the same run as another, 1 stopped at the epoch cap" in threshold.nesting_text(table)
    # two seeds' worth of runs: no interval, and the reason
    few = threshold.block_estimates(run_frame(n_seeds=2), n_boot=100)
    assert few["ci_low"].isna().all()
    assert set(few["interval"]) == {"none: 2 seeds (a bootstrap needs 3)"}
