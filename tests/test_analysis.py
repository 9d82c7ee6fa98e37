"""analysis: tidy table from run folders, correlations, bootstrap, sliding window."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from plasticollapse import analysis

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
def table(runs):
    return analysis.load_runs([runs])


def test_find_runs_accepts_parents_and_run_folders(runs):
    found = analysis.find_runs([runs])
    assert len(found) == 6 + 1 + 4
    one = analysis.find_runs(runs / "permuted" / "perm-e1-s0")
    assert [p.name for p in one] == ["perm-e1-s0"]
    # Overlapping paths list each folder once.
    assert len(analysis.find_runs([runs, runs / "warm"])) == 11


def test_tidy_table_columns_and_setting_keys(table):
    assert table.column_names == [
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
    assert table.setting_keys == {"permuted": ["first_task_epochs"], "warmstart": ["scheme"]}
    assert [s["first_task_epochs"] for s in table.settings("permuted")] == [1, 5]
    assert [s["scheme"] for s in table.settings("warmstart")] == ["plain", "shrink_perturb"]


def test_setting_keys_join_lists_and_include_always_keys():
    configs = [{"hidden": [100, 100], "lr": 0.1, "seed": 0}, {"hidden": [50], "lr": 0.1, "seed": 1}]
    assert analysis.setting_keys_for("permuted", configs) == ["first_task_epochs", "hidden"]
    assert analysis.normalise_setting([100, 100]) == "100,100"


def test_steps_and_summary_rows(table):
    perm = table.select(experiment="permuted", metric="nc1", where={"first_task_epochs": 5})
    assert sorted(set(perm.column("step"))) == list(range(12))
    assert len(perm) == 3 * 12
    # "epoch" stays a metric for permuted, it is the step for warmstart.
    assert "epoch" in table.metrics("permuted")
    assert "epoch" not in table.metrics("warmstart")
    ws = table.select(experiment="warmstart", metric="full_test_acc")
    assert sorted(set(ws.column("step"))) == list(range(5, 61, 5))
    summary = table.select(metric="fresh_full_test_acc")
    assert len(summary) == 4 and np.isnan(summary.column("step")).all()
    assert "fresh_full_test_acc" in table.metrics("warmstart", per_step=False)
    # Nulls are NaN; booleans are 0/1; strings (status) are left out.
    assert np.isnan(table.select(metric="nc3_zhu", experiment="permuted").column("value")).all()
    assert set(table.select(metric="diverged").column("value")) == {0.0}
    assert "status" not in set(table.column("metric"))


def test_partial_run_truncated_line_skipped(table):
    info = table.runs["perm-partial"]
    assert not info.complete and info.n_rows == 4 and info.last_step == 3
    rows = table.select(run_ids=["perm-partial"])
    assert set(rows.column("step")) == {0, 1, 2, 3}
    assert table.runs["perm-e1-s0"].complete


def test_curves_pivot_aligns_steps(table):
    c = table.curves("accuracy", "permuted", {"first_task_epochs": 1})
    assert c.values.shape == (4, 12)  # 3 complete seeds + the partial run
    assert c.seeds == [0, 1, 2, 9]
    assert np.isnan(c.values[3, 4:]).all() and np.isfinite(c.values[:3]).all()
    assert np.allclose(c.mean()[4:], c.values[:3, 4:].mean(axis=0))


def test_mixed_experiments_in_one_folder_and_csv_parquet(runs, table, tmp_path):
    path = table.to_csv(tmp_path / "results.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(table)
    summary_row = next(r for r in rows if r["metric"] == "fresh_full_test_acc")
    assert summary_row["step"] == "" and summary_row["first_task_epochs"] == ""
    assert next(r for r in rows if r["metric"] == "nc1")["step"] == "0"
    pq = pytest.importorskip("pyarrow.parquet")
    written = table.to_parquet(tmp_path / "results.parquet")
    assert pq.read_table(written).num_rows == len(table)


def test_empty_and_missing_paths(tmp_path):
    assert len(analysis.load_runs([tmp_path])) == 0
    with pytest.raises(FileNotFoundError):
        analysis.find_runs([tmp_path / "nope"])


def test_correlate_matches_scipy():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(30)
    y = 0.5 * x + rng.standard_normal(30)
    y[3] = y[5]  # a tie for Spearman
    got = analysis.correlate(x, y)
    p = stats.pearsonr(x, y)
    s = stats.spearmanr(x, y)
    assert got["pearson_r"] == pytest.approx(p[0], abs=1e-12)
    assert got["pearson_p"] == pytest.approx(p[1], rel=1e-9)
    assert got["spearman_rho"] == pytest.approx(s[0], abs=1e-12)
    assert got["spearman_p"] == pytest.approx(s[1], rel=1e-9)
    assert got["n"] == 30
    # Non-finite pairs dropped; too few or constant series give NaN.
    x2, y2 = np.append(x, np.nan), np.append(y, 1.0)
    assert analysis.correlate(x2, y2)["pearson_r"] == pytest.approx(p[0])
    assert math.isnan(analysis.correlate([1, 2], [3, 4])["pearson_r"])
    assert math.isnan(analysis.correlate([1, 1, 1], [3, 4, 5])["spearman_rho"])


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


def test_sliding_window_correlations_per_seed(table):
    results = analysis.sliding_window_correlations(table, window=20, stride=5)
    assert [w.setting["scheme"] for w in results] == ["plain", "shrink_perturb"]
    w = results[0]
    assert w.ends[0] == 20 and w.ends[-1] == 60 and w.r.shape == (2, w.ends.size)
    c = table.curves("nc1", "warmstart", {"scheme": "plain"})
    y = table.curves("full_test_acc", "warmstart", {"scheme": "plain"})
    inside = (c.steps > 20) & (c.steps <= 40)
    expect = stats.pearsonr(c.values[1, inside], y.values[1, inside])[0]
    assert w.at(40)[1] == pytest.approx(expect)


def test_bootstrap_contains_estimate_and_is_deterministic(table):
    cx, cy = table.paired_curves("nc1", "accuracy", "permuted", {"first_task_epochs": 5})
    a = analysis.bootstrap_over_seeds(cx.values, cy.values, "mean_curve", n_boot=200, seed=3)
    b = analysis.bootstrap_over_seeds(cx.values, cy.values, "mean_curve", n_boot=200, seed=3)
    assert a == b
    assert a["low"] <= a["estimate"] <= a["high"]
    assert a["estimate"] == pytest.approx(analysis.correlate(cx.mean(), cy.mean())["pearson_r"])
    for stat in ("mean_of_runs", "pooled"):
        c = analysis.bootstrap_over_seeds(cx.values, cy.values, stat, n_boot=100, seed=0)
        assert c["low"] <= c["estimate"] <= c["high"]
    one = analysis.bootstrap_over_seeds(cx.values[:1], cy.values[:1], n_boot=50)
    assert math.isnan(one["low"]) and math.isfinite(one["estimate"])


def test_paper_analyses_on_synthetic_runs(table):
    perm = analysis.permuted_correlations(table, max_tasks=10, n_boot=50)
    assert [r["setting"]["first_task_epochs"] for r in perm] == [1, 5]
    assert all(r["pearson_r"] < -0.8 and r["n"] == 10 for r in perm)
    assert len(perm[1]["per_seed_r"]) == 3
    ws = analysis.warmstart_seed_correlations(table, split=30, n_boot=50)
    assert {r["range"] for r in ws} == {"all checkpoints", "epochs <= 30", "epochs > 30"}
    first = next(r for r in ws if r["range"] == "epochs <= 30" and r["label"] == "scheme=plain")
    assert first["n"] == 6 and first["n_seeds"] == 2 and first["pearson_r"] > 0.5
    assert len(analysis.pretraining_nc1_vs_pl(table, upto=(5,))) == 1


def test_fast_coefficients_match_correlate():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((3, 15)), rng.standard_normal((3, 15))
    x[0, 2] = np.nan
    for method, key in (("pearson", "pearson_r"), ("spearman", "spearman_rho")):
        want = [analysis.correlate(a, b)[key] for a, b in zip(x, y, strict=True)]
        assert analysis.per_run_r(x, y, method) == pytest.approx(want, abs=1e-12)
