"""The predictor leaderboard (plasticollapse.analysis.leaderboard, aliases, forest) and the
``predictors`` command: known answers on synthetic tidy tables, each beside the naive
ranking (analysis.rank_metrics) it replaces, then real run folders end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_analysis import make_runs

from plasticollapse import analysis, cli
from plasticollapse.analysis import leaderboard

STEPS = 60


def tidy(curves: dict[str, np.ndarray], seeds, settings=None, study="toy") -> pd.DataFrame:
    """The tidy long table of (runs x steps) curves, one per metric name."""
    rows = []
    for metric, values in curves.items():
        for i, run in enumerate(np.atleast_2d(values)):
            for step, value in enumerate(run):
                row = {"run_id": f"r{i}", "experiment": study, "seed": seeds[i]}
                row.update({k: v[i] for k, v in (settings or {}).items()})
                rows.append({**row, "step": float(step), "metric": metric, "value": value})
    return pd.DataFrame(rows)


def rows(board, metric, statistic, outcome="accuracy"):
    picked = board[
        (board["metric"] == metric)
        & (board["statistic"] == statistic)
        & (board["outcome"] == outcome)
    ]
    assert len(picked) == 1, (metric, statistic, outcome)
    return picked.iloc[0]


@pytest.fixture(scope="module")
def trend_table() -> pd.DataFrame:
    """Accuracy falls with a trend plus detrended wiggles e. ``trend_only`` shares the
    trend, not e; ``tracks`` shares e with a weaker trend; ``tracks_copy`` is an
    exact copy of it and ``tracks_negated`` is 1 - it."""
    rng = np.random.default_rng(0)
    t = np.arange(STEPS) / STEPS
    e = rng.normal(0, 0.02, (5, STEPS))
    accuracy = 0.9 - 0.2 * t + e
    trend_only = 0.2 + 0.5 * t + rng.normal(0, 0.01, (5, STEPS))
    tracks = -0.1 * t - e + rng.normal(0, 0.01, (5, STEPS))
    curves = {
        "accuracy": accuracy,
        "pl": accuracy[:, :1] - accuracy,
        "trend_only": trend_only,
        "tracks": tracks,
        "tracks_copy": tracks.copy(),
        "tracks_negated": 1 - tracks,
        "seconds": 1 + rng.random((5, STEPS)),
    }
    return tidy(curves, seeds=list(range(5)))


@pytest.fixture(scope="module")
def board(trend_table) -> pd.DataFrame:
    return analysis.predictors(trend_table, n_boot=300)


def test_a_shared_trend_ranks_below_a_metric_of_the_detrended_changes(trend_table, board):
    for statistic in ("detrended_r_diff", "detrended_r_trend"):
        trend = rows(board, "trend_only", statistic)
        tracks = rows(board, "tracks", statistic)
        assert tracks["rank"] == 1 and trend["rank"] == 2
        assert trend["ci_low"] <= 0 <= trend["ci_high"]
        assert tracks["ci_high"] < 0
    # The naive ranking (r of levels) puts the trend first.
    naive = analysis.rank_metrics(trend_table, [f"r{i}" for i in range(5)], ["accuracy"])
    naive = naive[naive["metric"].isin(["trend_only", "tracks"])]
    assert naive["metric"].iloc[0] == "trend_only"


def test_every_number_carries_its_interval_and_n(board):
    assert list(board.columns) == leaderboard.COLUMNS
    assert set(board["statistic"]) == set(leaderboard.STATISTICS)
    within = board[board["statistic"] == "detrended_r_diff"]
    assert within[["ci_low", "ci_high"]].notna().all().all()
    assert (within["n_runs"] == 5).all() and (within["n_seeds"] == 5).all()
    assert (within["n_steps"] == STEPS - 1).all()
    assert set(within["interval"]) == {"seed bootstrap"}
    # One setting: no variable defines the runs, so no partial r (and it says why).
    partial = board[board["statistic"] == "across_runs_partial_r"]
    assert partial["estimate"].isna().all()
    assert set(partial["interval"]) == {"none: the runs differ in no setting"}


def test_a_metric_identical_to_another_is_listed_as_its_alias(trend_table, board):
    assert set(board["metric"]) == {"trend_only", "tracks"}
    listed = rows(board, "tracks", "lead_lag")["aliases"]
    assert "tracks_copy (identical)" in listed
    assert "tracks_negated (negated (= 1 - x))" in listed
    found = analysis.find_aliases(trend_table)
    assert dict(zip(found["alias"], found["canonical"], strict=True)) == {
        "tracks_copy": "tracks",
        "tracks_negated": "tracks",
    }  # pl = acc0 - accuracy is not one: acc0 differs by run
    # The naive ranking counts the one metric three times.
    naive = analysis.rank_metrics(trend_table, [f"r{i}" for i in range(5)], ["accuracy"])
    assert {"tracks", "tracks_copy", "tracks_negated"} <= set(naive["metric"])


def test_bookkeeping_and_outcomes_are_not_ranked(board):
    assert not {"seconds", "accuracy", "pl"} & set(board["metric"])
    assert list(dict.fromkeys(board["outcome"])) == ["accuracy", "pl"]
    for name in ("epoch", "loss", "eval_accuracy", "full_test_acc", "closest_pair_a", "pl"):
        assert not leaderboard.is_predictor(name)
    for name in ("nc1", "dead_fraction_layer2", "test_nc1", "weight_magnitude"):
        assert leaderboard.is_predictor(name)


def test_the_outcome_is_named_and_selectable(trend_table):
    only = analysis.predictors(trend_table, outcomes=["pl"], n_boot=50)
    assert set(only["outcome"]) == {"pl"}
    with pytest.raises(ValueError, match="no study records the outcome.*recorded outcomes"):
        analysis.predictors(trend_table, outcomes=["retrained_gap"])
    with pytest.raises(ValueError, match="none of the metrics nc9 is recorded.*trend_only"):
        analysis.predictors(trend_table, metrics=["nc9"])
    with pytest.raises(ValueError, match="horizon must be >= 1, got 0"):
        analysis.predictors(trend_table, horizon=0)
    with pytest.raises(ValueError, match="lacks the column.*load_results"):
        analysis.predictors(trend_table.drop(columns="seed"))
    picked = analysis.predictors(trend_table, metrics=["trend_only"], n_boot=50)
    assert set(picked["metric"]) == {"trend_only"}


def lag_table(shift: int) -> pd.DataFrame:
    """Accuracy with autocorrelated changes; ``metric`` = accuracy shifted by ``shift``
    steps (1: it follows accuracy one step late; -1: it moves one step ahead)."""
    rng = np.random.default_rng(1)
    acc, metric = np.zeros((6, STEPS)), np.zeros((6, STEPS))
    for i in range(6):
        change = np.zeros(STEPS + 2)
        for k in range(1, STEPS + 2):
            change[k] = 0.8 * change[k - 1] + 0.01 * rng.normal()
        level = 0.8 + np.cumsum(change)
        acc[i] = level[1:-1]
        metric[i] = level[1 - shift : STEPS + 1 - shift] + rng.normal(0, 0.002, STEPS)
    return tidy({"accuracy": acc, "metric": metric}, seeds=list(range(6)))


def test_a_metric_that_lags_performance_is_not_reported_as_leading():
    follows = lag_table(shift=1)
    board = analysis.predictors(follows, outcomes=["accuracy"], n_boot=300)
    lead = rows(board, "metric", "lead_lag")
    assert lead["ci_low"] <= 0 <= lead["ci_high"]
    assert rows(board, "metric", "follows")["ci_low"] > 0.3
    # Without performance's own past (the naive lead-lag), the echo reads as a lead.
    naive = analysis.predictors(follows, outcomes=["accuracy"], own_lags=0, n_boot=300)
    assert rows(naive, "metric", "lead_lag")["ci_low"] > 0
    ahead = analysis.predictors(lag_table(shift=-1), outcomes=["accuracy"], n_boot=300)
    assert rows(ahead, "metric", "lead_lag")["ci_low"] > 0.3


def nested_table() -> pd.DataFrame:
    """8 seeds x first-task epochs {1, 20}. A longer first task raises task 0's accuracy
    (so PL), not the late accuracy; ``early_setting`` at step 0 follows the setting,
    ``early_seed`` a per-seed effect on late accuracy."""
    rng = np.random.default_rng(4)
    fte = np.tile([1, 20], 8)
    seeds = np.repeat(np.arange(8), 2)
    u = rng.normal(size=8)[seeds]
    acc = 0.8 + 0.01 * u[:, None] + 0.002 * rng.normal(size=(16, 20))
    acc[:, 0] = np.where(fte == 20, 0.97, 0.8)  # the first task's accuracy
    setting = np.where(fte == 20, 1.0, 0.0)[:, None] + 0.1 * rng.normal(size=(16, 20))
    seed_metric = u[:, None] + 0.2 * rng.normal(size=(16, 20))
    curves = {
        "accuracy": acc,
        "pl": acc[:, :1] - acc,
        "early_setting": setting,
        "early_seed": seed_metric,
    }
    return tidy(curves, seeds=list(seeds), settings={"first_task_epochs": fte}, study="nest")


def test_across_runs_pl_and_accuracy_part_where_the_first_task_differs():
    board = analysis.predictors(nested_table(), n_boot=500)
    # PL = acc0 - acc_i carries the setting's first-task accuracy: the setting-following
    # metric "predicts" late PL across runs, but not late accuracy ...
    assert rows(board, "early_setting", "across_runs_r", "pl")["estimate"] > 0.8
    assert abs(rows(board, "early_setting", "across_runs_r", "accuracy")["estimate"]) < 0.4
    # ... and given the setting, nothing is left for it, for either outcome.
    for outcome in ("pl", "accuracy"):
        partial = rows(board, "early_setting", "across_runs_partial_r", outcome)
        assert partial["ci_low"] <= 0 <= partial["ci_high"]
        seed = rows(board, "early_seed", "across_runs_partial_r", outcome)
        assert abs(seed["estimate"]) > 0.6 and seed["n_seeds"] == 8 and seed["n_runs"] == 16
    # Within runs PL is accuracy turned over: the same r, the other sign.
    for statistic in ("detrended_r_diff", "lead_lag"):
        acc = rows(board, "early_seed", statistic, "accuracy")["estimate"]
        assert rows(board, "early_seed", statistic, "pl")["estimate"] == pytest.approx(-acc)


def test_by_setting_makes_a_group_per_setting_in_numeric_order():
    table = nested_table()
    table["first_task_epochs"] = table["first_task_epochs"].map({1: 10, 20: 2})
    board = analysis.predictors(table, outcomes=["accuracy"], by_setting=True, n_boot=50)
    assert list(dict.fromkeys(board["group"])) == ["first_task_epochs=2", "first_task_epochs=10"]
    assert (board.loc[board["statistic"] == "detrended_r_diff", "n_runs"] == 8).all()


def test_rank_across_studies_averages_rank_fractions(trend_table):
    two = pd.concat([trend_table, trend_table.assign(experiment="other")], ignore_index=True)
    board = analysis.predictors(two, n_boot=100)  # outcomes accuracy and pl in each
    overall = analysis.rank_across_studies(board)
    diff = overall[overall["statistic"] == "detrended_r_diff"].set_index("metric")
    assert diff.loc["tracks", "overall_rank"] == 1
    assert diff.loc["tracks", "n_rankings"] == 2  # each study once, with its accuracy
    assert diff.loc["tracks", "outcomes"] == "toy: accuracy; other: accuracy"
    assert diff.loc["trend_only", "mean_rank_fraction"] == 1.0
    by_pl = analysis.rank_across_studies(board, outcome="pl")
    assert set(by_pl["outcomes"]) == {"toy: pl; other: pl"}


# =========================================================================== end to end


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """Three real Permuted runs: digits, 5 tasks, seeds 0-2."""
    root = tmp_path_factory.mktemp("predictor_runs")
    argv = ["permuted", "--config", "quick/permuted_digits", "--tasks", "5", "--seeds", "0-2"]
    argv += ["--first_task_epochs", "1", "--out", str(root), "--backend", "serial"]
    assert cli.main(argv) == 0
    return root


def test_the_predictors_command_on_real_runs(real_runs, tmp_path, capsys):
    out = tmp_path / "pred"
    assert cli.main(["predictors", str(real_runs), "--out", str(out), "--bootstrap", "50"]) == 0
    board = pd.read_csv(out / "predictors.csv")
    assert list(board.columns) == leaderboard.COLUMNS
    assert set(board["study"]) == {"permuted"} and set(board["outcome"]) == {"accuracy", "pl"}
    nc1 = rows(board, "nc1", "detrended_r_diff")
    assert (nc1["n_runs"], nc1["n_seeds"], nc1["n_steps"]) == (3, 3, 4)
    assert nc1["interval"] == "seed bootstrap (only 3 seeds: rough)"
    assert np.isfinite([nc1["estimate"], nc1["ci_low"], nc1["ci_high"]]).all()
    aliases = pd.read_csv(out / "aliases.csv")
    assert {"nc4_mismatch", "dead_fraction_layer2"} <= set(aliases["alias"])
    assert not {"nc4_mismatch", "dead_fraction_layer2"} & set(board["metric"])
    assert (out / "predictors_rank.csv").is_file()
    assert sorted(p.name for p in out.glob("forest_*.png")) == [
        "forest_permuted_accuracy.png",
        "forest_permuted_pl.png",
    ]
    assert str(out / "predictors.csv") in capsys.readouterr().out


def test_the_predictors_command_covers_every_study(tmp_path):
    runs = make_runs(tmp_path / "runs", tasks=8, epochs=40)
    assert cli.main(["predictors", str(runs), "--bootstrap", "50"]) == 0
    board = pd.read_csv(runs / "predictors" / "predictors.csv")  # the default --out
    assert set(board["study"]) == {"permuted", "warmstart"}
    assert set(board.loc[board["study"] == "warmstart", "outcome"]) == {"full_test_acc"}
    assert (runs / "predictors" / "forest_warmstart_full_test_acc.png").stat().st_size > 10_000


def test_the_predictors_command_refuses_bad_input(tmp_path, capsys):
    assert cli.main(["predictors", str(tmp_path / "missing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert cli.main(["predictors", str(tmp_path)]) == 2
    assert "no run folders" in capsys.readouterr().err
