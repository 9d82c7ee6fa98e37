"""The scripts in examples/ run as a user would run them, on small data."""

import csv
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_own_loop_example_logs_a_row_per_epoch(tmp_path, monkeypatch, capsys):
    rows_file = tmp_path / "rows.csv"
    argv = ["own_loop.py", "--epochs", "2", "--csv", str(rows_file)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLES / "own_loop.py"), run_name="__main__")
    with rows_file.open() as f:
        rows = list(csv.DictReader(f))
    assert [row["step"] for row in rows] == ["1", "2"]
    for key in ("train_nc1", "test_accuracy", "train_dormant_fraction_2", "drift"):
        assert all(row[key] for row in rows), key
    printed = capsys.readouterr().out
    assert "epoch 2: train_accuracy" in printed and "plasticity score after training" in printed


def test_remedies_cnn_example_runs_redo_and_cbp_in_a_plain_loop(monkeypatch, capsys):
    argv = ["remedies_cnn.py", "--tasks", "2", "--epochs", "1", "--samples", "300"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLES / "remedies_cnn.py"), run_name="__main__")
    printed = capsys.readouterr().out
    for remedy in ("plain", "redo", "cbp"):
        assert f"{remedy} task 1: train accuracy" in printed, remedy
    assert "redo task 1: recycled [" in printed and "cbp replaced [" in printed
    assert printed.count("dormant [") == 6


def test_lightning_example_logs_the_callbacks_metrics_each_epoch(tmp_path, monkeypatch, capsys):
    pytest.importorskip(
        "lightning.pytorch",
        reason="PyTorch Lightning is not installed: pip install 'plasticollapse[lightning]'",
    )
    argv = ["lightning_monitor.py", "--epochs", "2", "--logs", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLES / "lightning_monitor.py"), run_name="__main__")
    (metrics_csv,) = tmp_path.glob("digits/version_*/metrics.csv")
    with metrics_csv.open() as f:
        rows = list(csv.DictReader(f))
    for key in ("train/nc1", "val/accuracy", "train/dormant_fraction_net.2", "train/drift"):
        assert [row["epoch"] for row in rows if row.get(key)] == ["0", "1"], key
    printed = capsys.readouterr().out
    assert "epoch 1: train/accuracy" in printed and "columns in" in printed
