"""analysis: the tidy table (pandas) from run folders, the one correlation, bootstrap over
seeds, sliding windows. The studies' own analyses are tested in test_report.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from plasticollapse import analysis, load_results
from plasticollapse.studies.common import pearson

NC_KEYS = ("nc1", "nc2_etf_error_weights", "nc3_zhu", "nc4_agreement")


def _write_run(folder: Path, experiment: str, config: dict, rows: list[dict], summary, tail=""):
    folder.mkdir(parents=True)
    record = {
        "experiment": experiment,
        "run_id": folder.name,
        "config": config,
        "plasticollapse_version": "0.1.0",
        "git_commit": None,
        "torch_version": "2.x",
        "device": "cpu",
        "created": "2024-01-01T00:00:00+00:00",
    }
    (folder / "config.json").write_text(json.dumps(record))
    lines = "".join(json.dumps(r) + "\n" for r in rows) + tail
    (folder / "metrics.jsonl").write_text(lines)
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))


def make_runs(root: Path, tasks: int = 12, epochs: int = 60, every: int = 5) -> Path:
    """Synthetic run folders in the experiments' format, under ``root``.

    permuted: first_task_epochs 1 and 5, seeds 0-2, ``tasks`` tasks; NC1 rises and accuracy
    falls with the task (r strongly negative). Plus one partial run (no summary.json, a
    truncated last line). warmstart: schemes plain and shrink_perturb, seeds 7-8, a checkpoint
    every ``every`` epochs up to ``epochs``; NC1 decays and full-data accuracy tracks it.
    """
    rng = np.random.default_rng(0)
    for fte in (1, 5):
        for seed in range(3):
            config = {
                "dataset": "mnist",
                "lr": 0.01,
                "hidden": [100, 100, 100],
                "batch_size": 1,
                "tasks": tasks,
                "first_task_epochs": fte,
                "epochs_per_task": 1,
                "seed": seed,
                "nc1_threshold": None,
                "device": f"cpu{seed}",  # an execution field: never a setting key
            }
            rows = []
            for t in range(tasks):
                acc = 0.93 - 0.01 * t + 0.002 * rng.standard_normal()
                rows.append(
                    {
                        "task": t,
                        "epoch": fte + t,
                        "accuracy": acc,
                        "loss": 1 - acc,
                        "pl": 0.93 - acc,
                        "nc1": 0.23 + 0.01 * t + 0.002 * rng.standard_normal() + 0.01 * (fte == 5),
                        "nc3_zhu": None,
                        "dormant_fraction": 0.0,
                        "seconds": 1.0,
                    }
                )
            summary = {"r_nc1_accuracy": -0.9, "final_accuracy": rows[-1]["accuracy"]}
            _write_run(
                root / "permuted" / f"perm-e{fte}-s{seed}", "permuted", config, rows, summary
            )
    # A killed run: no summary, half a line at the end.
    config = {**config, "seed": 9, "first_task_epochs": 1}
    _write_run(
        root / "permuted" / "perm-partial",
        "permuted",
        config,
        rows[:4],
        None,
        tail='{"task": 4, "acc',
    )
    for scheme in ("plain", "shrink_perturb"):
        for seed in (7, 8):
            config = {
                "dataset": "cifar10",
                "model": "resnet18",
                "scheme": scheme,
                "weight_decay": 0.0,
                "warmup_epochs": epochs,
                "checkpoint_every": every,
                "lr": 0.001,
                "seed": seed,
            }
            rows = []
            for e in range(every, epochs + 1, every):
                nc1 = 15.0 * math.exp(-e / 15) + 0.4 + 0.05 * rng.standard_normal()
                row = {
                    "epoch": e,
                    "warmup_train_acc": min(1.0, e / epochs),
                    "warmup_test_acc": 0.5 + 0.001 * e,
                    "full_test_acc": 0.58 + 0.002 * nc1 + 0.002 * rng.standard_normal(),
                    "finetune_epochs": 10,
                    "diverged": False,
                }
                row.update({k: nc1 * (i + 1) for i, k in enumerate(NC_KEYS)})
                rows.append(row)
            summary = {"fresh_full_test_acc": 0.6, "fresh_finetune_epochs": 20, "status": "ok"}
            _write_run(root / "warm" / f"ws-{scheme}-s{seed}", "warmstart", config, rows, summary)
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return make_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def results(runs) -> analysis.Results:
    return analysis.load([runs])


@pytest.fixture(scope="module")
def table(results) -> pd.DataFrame:
    return results.table


def rows_of(table: pd.DataFrame, **where) -> pd.DataFrame:
    mask = np.ones(len(table), dtype=bool)
    for column, value in where.items():
        mask &= (table[column] == value).to_numpy()
    return table[mask]


def test_find_runs_accepts_parents_and_run_folders(runs):
    found = analysis.find_runs([runs])
    assert len(found) == 6 + 1 + 4
    one = analysis.find_runs(runs / "permuted" / "perm-e1-s0")
    assert [p.name for p in one] == ["perm-e1-s0"]
    # Overlapping paths list each folder once.
    assert len(analysis.find_runs([runs, runs / "warm"])) == 11


def test_tidy_table_columns_and_setting_keys(runs, results, table):
    assert list(table.columns) == [
        "run_id",
        "experiment",
        "first_task_epochs",
        "scheme",
        "seed",
        "step",
        "metric",
        "value",
    ]
    # Only the varying field (first_task_epochs / scheme); device and seed are not settings.
    assert results.settings == {"permuted": ["first_task_epochs"], "warmstart": ["scheme"]}
    perm, perm_runs = results.study("permuted")
    assert "scheme" not in perm.columns and "scheme" not in perm_runs.columns
    groups = analysis.setting_groups(perm_runs, ["first_task_epochs"])
    assert [s["first_task_epochs"] for s, _ in groups] == [1, 5]
    assert [list(r["seed"]) for _, r in groups] == [[0, 1, 2, 9], [0, 1, 2]]
    # load_results is the same table, exported at the package's top level.
    pd.testing.assert_frame_equal(load_results([runs]), table)


def test_setting_keys_join_lists_and_put_the_studys_keys_first():
    configs = [{"hidden": [100, 100], "lr": 0.1, "seed": 0}, {"hidden": [50], "lr": 0.1, "seed": 1}]
    assert analysis.setting_keys_for(configs, ("first_task_epochs",)) == [
        "first_task_epochs",
        "hidden",
    ]
    assert analysis.normalise_setting([100, 100]) == "100,100"


def test_steps_values_and_summary_rows(runs, table):
    perm = rows_of(table, experiment="permuted", metric="nc1", first_task_epochs=5)
    assert sorted(set(perm["step"])) == list(range(12))
    assert len(perm) == 3 * 12
    # The registry's step key: "task" for permuted (so "epoch" stays a metric there),
    # "epoch" for warmstart (so it is the step, not a metric).
    assert "epoch" in set(rows_of(table, experiment="permuted")["metric"])
    assert "epoch" not in set(rows_of(table, experiment="warmstart")["metric"])
    ws = rows_of(table, experiment="warmstart", metric="full_test_acc")
    assert sorted(set(ws["step"])) == list(range(5, 61, 5))
    # Each value is the number in metrics.jsonl at that run and step.
    row = rows_of(table, run_id="ws-plain-s8", metric="nc1", step=25.0)
    lines = (runs / "warm" / "ws-plain-s8" / "metrics.jsonl").read_text().splitlines()
    written = next(r for r in map(json.loads, lines) if r["epoch"] == 25)
    assert row["value"].item() == written["nc1"]
    # Nulls are NaN; booleans are 0/1; strings (status) are left out.
    assert rows_of(table, metric="nc3_zhu", experiment="permuted")["value"].isna().all()
    assert set(rows_of(table, metric="diverged")["value"]) == {0.0}
    assert "status" not in set(table["metric"])


def test_summary_values_have_their_own_table(runs, results, table):
    # Every row of the tidy table is a step's: a groupby or pivot takes it as it is.
    assert table["step"].notna().all()
    summary_metrics = {"r_nc1_accuracy", "final_accuracy", "fresh_full_test_acc"}
    summary_metrics |= {"fresh_finetune_epochs"}
    assert not summary_metrics & set(table["metric"])
    summaries = results.summaries
    assert list(summaries.columns) == [
        *("run_id", "experiment", "first_task_epochs", "scheme", "seed", "metric", "value")
    ]
    assert set(summaries["metric"]) == summary_metrics  # the status string is left out
    fresh = rows_of(summaries, metric="fresh_full_test_acc")
    assert sorted(fresh["run_id"]) == [
        f"ws-{s}-s{k}" for s in ("plain", "shrink_perturb") for k in (7, 8)
    ]
    assert fresh["value"].eq(0.6).all() and fresh["scheme"].notna().all()
    # The partial run has no summary; the complete ones each have theirs.
    assert "perm-partial" not in set(summaries["run_id"])
    assert len(rows_of(summaries, metric="r_nc1_accuracy")) == 6
    pd.testing.assert_frame_equal(analysis.load_summaries([runs]), summaries)
    # One study's summaries keep its own setting columns, as study() does for the table.
    perm = results.study_summaries("permuted")
    assert "scheme" not in perm.columns and set(perm["experiment"]) == {"permuted"}
    ids = list(results.runs["run_id"])
    values = analysis.summary_values(summaries, "fresh_full_test_acc", ids)
    assert values.to_dict() == {rid: 0.6 for rid in fresh["run_id"]}


def _plain_runs(root: Path, remedies_of_each: list[list[str]]) -> Path:
    for i, remedies in enumerate(remedies_of_each):
        config = {"lr": 0.1, "remedies": remedies, "seed": 0, "out": str(root)}
        rows = [{"task": 0, "accuracy": 0.5 + i}]
        _write_run(root / f"run{i}", "permuted", config, rows, {"final_accuracy": 0.5})
    return root


def test_a_plain_run_has_one_remedies_value_whichever_command_made_it(tmp_path):
    # [] from a study command, ["plain"] from a matrix cell: the same run, the same value.
    results = analysis.load(
        _plain_runs(tmp_path / "a", [[], ["plain"], ["l2_init"], ["plain", "redo"]])
    )
    runs = results.runs.set_index("run_id")
    assert runs["remedies"].to_dict() == {
        "run0": "plain",
        "run1": "plain",
        "run2": "l2_init",
        "run3": "redo",
    }
    assert set(rows_of(results.table, remedies="plain")["run_id"]) == {"run0", "run1"}
    assert set(rows_of(results.summaries, remedies="plain")["run_id"]) == {"run0", "run1"}
    # Runs that differ only in spelling plain do not make remedies a setting column.
    same = analysis.load(_plain_runs(tmp_path / "b", [[], ["plain"]]))
    assert "remedies" not in same.settings["permuted"] and "remedies" not in same.table


def test_run_table(results):
    runs = results.runs.set_index("run_id")
    partial = runs.loc["perm-partial"]
    assert not partial["complete"] and partial["status"] == "partial"
    assert partial["n_rows"] == 4 and partial["last_step"] == 3
    done = runs.loc["ws-plain-s7"]
    assert done["complete"] and done["status"] == "ok" and done["label"] == "scheme=plain"
    assert done["fresh_full_test_acc"] == 0.6 and done["config"]["lr"] == 0.001
    assert done["last_step"] == 60 and done["n_rows"] == 12
    # The partial run's rows stop at its truncated line.
    steps = rows_of(results.table, run_id="perm-partial")["step"]
    assert set(steps) == {0, 1, 2, 3}


def test_curves_pivot_aligns_steps(results, table):
    _, perm_runs = results.study("permuted")
    ids = list(perm_runs.loc[perm_runs["first_task_epochs"] == 1, "run_id"])
    c = analysis.curves(table, "accuracy", ids)
    assert c.shape == (4, 12)  # 3 complete seeds + the partial run
    assert list(c.index) == ["perm-e1-s0", "perm-e1-s1", "perm-e1-s2", "perm-partial"]
    assert c.iloc[3, 4:].isna().all() and c.iloc[:3].notna().all().all()
    steps, mean, std = analysis.band(c)
    assert np.allclose(mean[4:], c.iloc[:3, 4:].mean(axis=0))
    assert np.allclose(std[:4], c.iloc[:, :4].std(axis=0, ddof=0))
    x, y = analysis.paired_curves(table, "nc1", "accuracy", ids)
    assert list(x.columns) == list(y.columns) == list(range(12))
    assert (
        analysis.at(x, 3.0)[1]
        == rows_of(table, run_id=ids[1], metric="nc1", step=3.0)["value"].item()
    )


def test_wide_pivots_metrics_into_columns(runs, table):
    perm = rows_of(table, experiment="permuted")
    w = analysis.wide(perm, index=["run_id", "step"], metrics=["nc1", "accuracy"])
    assert list(w.columns) == ["run_id", "step", "nc1", "accuracy"]
    assert len(w) == 6 * 12 + 4
    one = w[(w["run_id"] == "perm-e5-s2") & (w["step"] == 7)]
    tidy = rows_of(perm, run_id="perm-e5-s2", step=7.0)
    assert one["nc1"].item() == rows_of(tidy, metric="nc1")["value"].item()
    assert one["accuracy"].item() == rows_of(tidy, metric="accuracy")["value"].item()
    # By default every identifying column is kept; every row is a step's.
    full = analysis.wide(perm)
    assert full["step"].notna().all() and len(full) == 6 * 12 + 4
    # The summaries pivot the same way: one row per run.
    summary = analysis.wide(rows_of(analysis.load(runs).summaries, experiment="permuted"))
    assert len(summary) == 6 and summary["r_nc1_accuracy"].eq(-0.9).all()
    assert "step" not in summary.columns


def test_wide_and_the_loaders_are_exported_at_the_top_level():
    import plasticollapse

    assert plasticollapse.wide is analysis.wide
    assert plasticollapse.load_summaries is analysis.load_summaries
    assert plasticollapse.load_runs is analysis.load_runs
    assert {"wide", "load_results", "load_summaries", "load_runs"} <= set(plasticollapse.__all__)


def test_results_csv_and_parquet(results, table, tmp_path):
    written = analysis.write_results(table, tmp_path, results.summaries)
    back = pd.read_csv(written[0])
    assert written[0].name == "results.csv" and len(back) == len(table)
    with written[0].open() as f:
        next(f)
        assert next(f).split(",")[5] == "0"  # whole steps print as integers
    assert np.array_equal(back["value"].to_numpy(), table["value"].to_numpy(), equal_nan=True)
    summaries = pd.read_csv(tmp_path / "summaries.csv")
    assert len(summaries) == len(results.summaries) and "step" not in summaries.columns
    summary_row = summaries[summaries["metric"] == "fresh_full_test_acc"].iloc[0]
    assert summary_row["value"] == 0.6 and math.isnan(summary_row["first_task_epochs"])
    pytest.importorskip("pyarrow")
    assert pd.read_parquet(tmp_path / "results.parquet").shape == table.shape
    assert pd.read_parquet(tmp_path / "summaries.parquet").shape == results.summaries.shape


def test_an_unregistered_study_still_loads(tmp_path):
    rows = [{"step": 10 * i, "loss": 1.0 / (i + 1)} for i in range(3)]
    _write_run(tmp_path / "a", "mystery", {"seed": 0, "width": 4}, rows, {"final": 1})
    _write_run(tmp_path / "b", "mystery", {"seed": 1, "width": 8}, [{"loss": 2.0}] * 2, None)
    results = analysis.load([tmp_path])
    assert results.settings == {"mystery": ["width"]}  # no registry: the varying fields
    a = rows_of(results.table, run_id="a", metric="loss")
    assert list(a["step"]) == [0, 10, 20]  # a "step" key is the step
    assert list(rows_of(results.table, run_id="b")["step"]) == [0, 1]  # else the row index


def test_empty_and_missing_paths(tmp_path):
    assert len(analysis.load_results([tmp_path])) == 0
    with pytest.raises(FileNotFoundError):
        analysis.find_runs([tmp_path / "nope"])


def test_correlation_matches_scipy():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(30)
    y = 0.5 * x + rng.standard_normal(30)
    y[3] = y[5]  # a tie for Spearman
    got = analysis.correlation(x, y)
    p = stats.pearsonr(x, y)
    s = stats.spearmanr(x, y)
    assert got["pearson_r"] == pytest.approx(p[0], abs=1e-12)
    assert got["pearson_p"] == pytest.approx(p[1], rel=1e-9)
    assert got["spearman_rho"] == pytest.approx(s[0], abs=1e-12)
    assert got["spearman_p"] == pytest.approx(s[1], rel=1e-9)
    assert got["n"] == 30
    assert analysis.correlate(x, y, "spearman") == got["spearman_rho"]
    # Non-finite and None pairs dropped; too few or constant series give NaN.
    x2, y2 = [*x, np.nan, 4.0, None], [*y, 1.0, np.inf, 2.0]
    assert analysis.correlate(x2, y2) == pytest.approx(p[0], abs=1e-12)
    assert math.isnan(analysis.correlate([1, 2], [3, 4]))
    assert math.isnan(analysis.correlation([1, 1, 1], [3, 4, 5])["spearman_rho"])


def test_one_pearson_everywhere():
    # r of (1,2,3,4) and (1,3,2,4): deviations (-1.5,-.5,.5,1.5) and (-1.5,.5,-.5,1.5) give
    # sum of products 4, sums of squares 5 and 5: r = 0.8.
    assert analysis.correlate([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8, abs=1e-15)
    # The summaries' pearson is the same function (None is missing, as in metrics rows).
    assert pearson([1, 2, 3, 4, None], [1, 3, 2, 4, 7]) == pytest.approx(0.8, abs=1e-15)
    assert analysis.per_run_r(np.array([[1, 2, 3, 4.0]]), np.array([[1, 3, 2, 4.0]]))[
        0
    ] == pytest.approx(0.8)


def test_sliding_window_by_hand():
    steps = np.arange(5, 51, 5, dtype=float)  # 5, 10, ..., 50
    x = np.array([1, 3, 2, 5, 4, 6, 8, 7, 9, 10], dtype=float)
    y = np.array([2, 1, 4, 3, 6, 5, 7, 9, 8, 12], dtype=float)
    ends, r, n = analysis.sliding_window_r(steps, x, y, window=20, stride=10)
    assert ends.tolist() == [20, 30, 40, 50]
    # Window ending at e holds steps in (e - 20, e]: 4 checkpoints each.
    assert n.tolist() == [4, 4, 4, 4]
    for e, got in zip(ends, r, strict=True):
        inside = (steps > e - 20) & (steps <= e)
        assert got == pytest.approx(stats.pearsonr(x[inside], y[inside])[0])
    # Window ending at 30 is steps 15, 20, 25, 30 -> x = 2, 5, 4, 6 and y = 4, 3, 6, 5.
    assert r[1] == pytest.approx(np.corrcoef([2, 5, 4, 6], [4, 3, 6, 5])[0, 1])
    # windowed_r: the same per run, on one grid of ends; a run with a gap has fewer points.
    x2, y2 = np.vstack([x, x]), np.vstack([y, y])
    x2[1, 1] = np.nan
    ends2, r2, n2 = analysis.windowed_r(steps, x2, y2, window=20, stride=10)
    assert ends2.tolist() == ends.tolist() and np.allclose(r2[0], r)
    assert n2[1].tolist() == [3, 4, 4, 4]  # step 10 lies only in the window (0, 20]


def test_bootstrap_contains_estimate_is_deterministic_and_uses_scipy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 20))
    y = x + rng.standard_normal((5, 20))
    a = analysis.bootstrap_over_seeds(x, y, "mean_curve", n_boot=200, seed=3)
    assert a == analysis.bootstrap_over_seeds(x, y, "mean_curve", n_boot=200, seed=3)
    assert a["low"] <= a["estimate"] <= a["high"]
    assert a["estimate"] == pytest.approx(analysis.correlate(x.mean(axis=0), y.mean(axis=0)))
    # The interval is scipy's percentile bootstrap over run indices.
    want = stats.bootstrap(
        (np.arange(5),),
        lambda i: analysis.mean_curve_r(x[i], y[i]),
        n_resamples=200,
        vectorized=False,
        method="percentile",
        rng=np.random.default_rng(3),
    ).confidence_interval
    assert (a["low"], a["high"]) == (want.low, want.high)
    for stat in ("mean_of_runs", "pooled"):
        c = analysis.bootstrap_over_seeds(x, y, stat, n_boot=100, seed=0)
        assert c["low"] <= c["estimate"] <= c["high"]
    one = analysis.bootstrap_over_seeds(x[:1], y[:1], n_boot=50)
    assert math.isnan(one["low"]) and math.isfinite(one["estimate"])


def test_bootstrap_narrows_with_more_seeds():
    rng = np.random.default_rng(5)
    per_seed = 0.5 + 0.2 * rng.standard_normal(40)
    few = analysis.bootstrap_mean(per_seed[:4], n_boot=500)
    many = analysis.bootstrap_mean(per_seed, n_boot=500)
    assert many["high"] - many["low"] < 0.6 * (few["high"] - few["low"])
    for ci, values in ((few, per_seed[:4]), (many, per_seed)):
        assert ci["estimate"] == pytest.approx(values.mean())
        assert ci["low"] <= ci["estimate"] <= ci["high"]


def test_bootstrap_leaves_undefined_draws_out():
    # Two runs with a constant x curve: a draw of only those gives NaN, and is left out.
    x = np.array([[1.0, 2, 3, 4], [1, 1, 1, 1], [1, 1, 1, 1], [2, 3, 5, 4]])
    y = np.array([[1.0, 2, 4, 3], [1, 2, 3, 4], [4, 3, 2, 1], [1, 3, 5, 4]])
    ci = analysis.bootstrap_over_seeds(x, y, "mean_of_runs", n_boot=300, seed=1)
    assert 0 < ci["n_valid"] < 300
    assert math.isfinite(ci["low"]) and ci["low"] <= ci["high"]


def test_across_runs_r_by_hand_and_gaussian_smoothing_as_scipy():
    from scipy.ndimage import gaussian_filter1d

    x = np.array([0.2, 0.3, 0.4, 0.5])  # one number per run
    y = np.array([[1.0, 4, 2], [2, 3, 2], [3, 2, 1], [4, 1, np.nan]])  # runs x steps
    r = analysis.across_runs_r(x, y)
    assert r[0] == pytest.approx(1.0) and r[1] == pytest.approx(-1.0)
    # step 2: the last run has no value, so r is over the first three runs only
    assert r[2] == pytest.approx(np.corrcoef(x[:3], y[:3, 2])[0, 1])
    with pytest.raises(ValueError, match="runs"):
        analysis.across_runs_r(x[:3], y)
    series = np.sin(np.arange(30) / 3.0)
    assert np.allclose(analysis.gaussian_smooth(series, 4), gaussian_filter1d(series, 4))
    holed = series.copy()
    holed[[0, 10]] = np.nan  # NaN stays NaN; the rest is smoothed as one sequence
    got = analysis.gaussian_smooth(holed, 4)
    assert np.isnan(got[[0, 10]]).all()
    assert np.allclose(np.delete(got, [0, 10]), gaussian_filter1d(np.delete(series, [0, 10]), 4))


def test_partial_r_is_the_r_of_residuals_after_a_line_on_z():
    """partial_r(x, y | z) equals the Pearson r of the residuals of x and y after a
    least-squares line on z (float64 brute force); a relation that runs only through z
    (x = z + e1, y = z + e2) vanishes given z while the raw r is large."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal(12)
    x = 0.8 * z + rng.standard_normal(12)
    y = -0.5 * z + 0.6 * x + rng.standard_normal(12)

    def residual(v):
        slope, intercept = np.polyfit(z, v, 1)
        return v - (slope * z + intercept)

    want = np.corrcoef(residual(x), residual(y))[0, 1]
    assert analysis.partial_r(x, y, z) == pytest.approx(want, abs=1e-12)

    z = rng.standard_normal(4000)
    x, y = z + 0.3 * rng.standard_normal(4000), z + 0.3 * rng.standard_normal(4000)
    assert analysis.correlate(x, y) > 0.8
    assert abs(analysis.partial_r(x, y, z)) < 0.05
    # per step over runs, runs missing a value left out; NaN below 4 runs or for constant z
    ys = np.column_stack([y[:6], np.r_[y[:3], np.nan, np.nan, np.nan]])
    got = analysis.across_runs_partial_r(x[:6], ys, z[:6])
    assert got[0] == pytest.approx(analysis.partial_r(x[:6], y[:6], z[:6]))
    assert np.isnan(got[1])
    assert np.isnan(analysis.partial_r(x[:6], y[:6], np.ones(6)))


def test_rank_metrics_orders_by_correlation_with_each_definition(tmp_path):
    rows = []
    rng = np.random.default_rng(2)
    for run in range(3):
        for step in range(10):
            acc = 0.9 - 0.02 * step + 0.01 * rng.standard_normal()
            rows.append(
                {
                    "run_id": f"r{run}",
                    "step": float(step),
                    "accuracy": acc,
                    "pl": 0.9 - acc,
                    "twin": 2 * acc + 1,  # an exact affine copy: r = +1
                    "noisy": rng.standard_normal(),
                    "constant": 1.0,
                    "skipped": acc,
                }
            )
    wide = pd.DataFrame(rows)
    table = wide.melt(["run_id", "step"], var_name="metric", value_name="value")
    ids = ["r0", "r1", "r2"]
    ranked = analysis.rank_metrics(table, ids, ("accuracy", "pl"), exclude=("skipped",))
    assert list(ranked["metric"]) == ["twin", "noisy"]  # constant: r undefined; skipped out
    top = ranked.iloc[0]
    assert top["pearson_r_accuracy"] == pytest.approx(1.0)
    assert top["pearson_r_pl"] == pytest.approx(-1.0) and top["n"] == 10
    noisy = wide.pivot(index="run_id", columns="step", values="noisy").to_numpy()
    acc = wide.pivot(index="run_id", columns="step", values="accuracy").to_numpy()
    assert ranked.iloc[1]["pearson_r_accuracy"] == pytest.approx(
        np.corrcoef(noisy.mean(0), acc.mean(0))[0, 1]
    )
    per_run = analysis.rank_metrics(table, ids, ("accuracy",), definition="mean_of_runs")
    want = np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(noisy, acc, strict=True)])
    got = per_run.set_index("metric").loc["noisy", "pearson_r_accuracy"]
    assert got == pytest.approx(want)
    with pytest.raises(ValueError, match="definition"):
        analysis.rank_metrics(table, ids, ("accuracy",), definition="pooled")


# --------------------------------------------------------------------------- recorded keys
# make_runs writes folders as they were before config.json recorded the study's keys: the
# tests above read them with the registry's (test_steps_values_and_summary_rows: "task" for
# permuted, "epoch" for warmstart). The tests below read folders that record them.


def _permuted_record(tmp_path: Path, name: str, seed: int, recorded: bool, **fields) -> None:
    """A permuted run folder of the real Config (``fields`` set), recording its keys or not."""
    from plasticollapse.runs.config import from_dict, to_dict
    from plasticollapse.runs.execute import reading_keys
    from plasticollapse.studies import get_study

    study = get_study("permuted")
    config = from_dict(study.Config, {"seed": seed, **fields})
    rows = [{"task": t, "accuracy": 0.9 - 0.01 * t} for t in range(3)]
    _write_run(tmp_path / name, "permuted", to_dict(config), rows, {"final_accuracy": 0.88})
    if recorded:
        path = tmp_path / name / "config.json"
        record = json.loads(path.read_text())
        record.update(reading_keys(study, config))
        path.write_text(json.dumps(record))


def test_a_folder_that_records_its_keys_is_read_without_the_registry(tmp_path):
    # "mystery" is registered nowhere: only the folder can say that "epoch" orders its
    # rows and that "width" labels its setting although every run has width 4.
    record_keys = {"step_key": "epoch", "setting_keys": ["width"], "setting_fields": ["width"]}
    for seed in (0, 1):
        rows = [{"epoch": 5 * i, "step": i, "loss": 1.0 / (i + 1)} for i in range(3)]
        _write_run(tmp_path / f"r{seed}", "mystery", {"seed": seed, "width": 4}, rows, None)
        path = tmp_path / f"r{seed}" / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **record_keys}))
    results = analysis.load([tmp_path])
    assert results.step_keys == {"mystery": "epoch"}
    assert results.settings == {"mystery": ["width"]}
    assert sorted(set(results.table["step"])) == [0, 5, 10]
    assert "step" in set(results.table["metric"])  # not the step: the folder says "epoch"


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "older folders"])
def test_a_plain_run_is_not_labelled_with_a_remedys_parameters(tmp_path, recorded):
    _permuted_record(tmp_path, "plain", 0, recorded)
    _permuted_record(tmp_path, "cbp", 0, recorded, remedies=["cbp"])
    _permuted_record(tmp_path, "sp", 0, recorded, remedies=["shrink_perturb"], shrink=0.5)
    results = analysis.load([tmp_path])
    # shrink differs between the runs' configs (0.5 here, the default in the others), but
    # only one run applies Shrink & Perturb: the remedies column tells them apart
    assert "shrink" not in results.settings["permuted"]
    assert not [k for k in results.settings["permuted"] if k.startswith("cbp_")]
    labels = dict(zip(results.runs["run_id"], results.runs["label"], strict=True))
    assert labels["plain"] == "first_task_epochs=1, remedies=plain"
    assert labels["cbp"] == "first_task_epochs=1, remedies=cbp"


def test_a_remedys_parameter_that_varies_labels_only_its_own_runs(tmp_path):
    _permuted_record(tmp_path, "plain", 0, True)
    _permuted_record(tmp_path, "cbp10", 0, True, remedies=["cbp"], cbp_maturity=10)
    _permuted_record(tmp_path, "cbp100", 0, True, remedies=["cbp"], cbp_maturity=100)
    results = analysis.load([tmp_path])
    assert "cbp_maturity" in results.settings["permuted"]
    runs = results.runs.set_index("run_id")
    assert runs.loc["plain", "cbp_maturity"] == analysis.NOT_APPLIED
    assert runs.loc["cbp10", "cbp_maturity"] == 10
    assert "cbp_maturity" not in runs.loc["plain", "label"]
    assert "cbp_maturity=10" in runs.loc["cbp10", "label"]
