"""Run folders: durable rows, atomic checkpoints, resume truncation, identity checks."""

import json

import pytest
import torch

from plasticollapse.runs.folder import (
    DivergenceError,
    RunFolder,
    check_finite,
    jsonable,
)


def open_folder(path, config=None):
    return RunFolder.open(path, "toy", config or {"lr": 0.1, "out": str(path)}, "cpu", "run")


def test_config_json_records_environment(tmp_path):
    folder = open_folder(tmp_path / "r")
    record = json.loads(folder.config_path.read_text())
    assert record["experiment"] == "toy"
    assert record["config"]["lr"] == 0.1
    for key in ("plasticollapse_version", "git_commit", "torch_version", "device", "created"):
        assert key in record


def test_reopening_with_another_config_is_refused(tmp_path):
    open_folder(tmp_path / "r")
    open_folder(tmp_path / "r", {"lr": 0.1, "out": "moved"})  # execution fields may change
    with pytest.raises(ValueError, match="different run"):
        open_folder(tmp_path / "r", {"lr": 0.2, "out": str(tmp_path)})


def test_rows_round_trip_and_nan_becomes_null(tmp_path):
    folder = open_folder(tmp_path / "r")
    folder.append_metrics({"task": 0, "nc1": float("nan"), "acc": torch.tensor(0.5)})
    folder.append_metrics({"task": 1, "nc1": 0.25, "acc": 0.75})
    assert folder.read_metrics() == [
        {"task": 0, "nc1": None, "acc": 0.5},
        {"task": 1, "nc1": 0.25, "acc": 0.75},
    ]


def test_a_line_cut_by_a_kill_is_ignored(tmp_path):
    folder = open_folder(tmp_path / "r")
    folder.append_metrics({"task": 0})
    with folder.metrics_path.open("a") as f:
        f.write('{"task": 1, "nc')
    assert folder.read_metrics() == [{"task": 0}]


def test_resume_drops_rows_written_after_the_last_checkpoint(tmp_path):
    folder = open_folder(tmp_path / "r")
    folder.append_metrics({"task": 0})
    folder.save_checkpoint({"task": 0, "weights": torch.ones(3)})
    folder.append_metrics({"task": 1})  # killed before the next checkpoint
    state = RunFolder(tmp_path / "r").load_checkpoint()
    assert state["task"] == 0 and torch.equal(state["weights"], torch.ones(3))
    assert folder.read_metrics() == [{"task": 0}]


def test_no_checkpoint_means_a_fresh_start(tmp_path):
    folder = open_folder(tmp_path / "r")
    folder.append_metrics({"task": 0})
    assert folder.load_checkpoint() is None
    assert folder.read_metrics() == []


def test_summary_marks_complete_and_clears_an_old_error(tmp_path):
    folder = open_folder(tmp_path / "r")
    try:
        raise RuntimeError("boom")
    except RuntimeError as e:
        folder.write_error(e)
    assert "boom" in folder.error_path.read_text()
    assert not folder.is_complete
    folder.write_summary({"r": float("inf")})
    assert folder.is_complete and not folder.error_path.exists()
    assert folder.read_summary() == {"r": None}


def test_check_finite_names_step_and_metric():
    check_finite(3, loss=1.0, nc1=2.0)
    with pytest.raises(DivergenceError, match="step 3: nc1 = nan"):
        check_finite(3, loss=1.0, nc1=float("nan"))
    with pytest.raises(DivergenceError, match="loss"):
        check_finite(4, limit=10.0, loss=11.0)


def test_jsonable_handles_nested_numpy_and_tensors():
    import numpy as np

    assert jsonable({"a": [np.float32(1.5), torch.tensor([1, 2])], "b": np.int64(3)}) == {
        "a": [1.5, [1, 2]],
        "b": 3,
    }
