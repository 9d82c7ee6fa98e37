"""Run folders: provenance, durable rows, atomic checkpoints, resume truncation, identity."""

import json
import subprocess
from pathlib import Path

import numba
import pytest
import torch

import plasticollapse
from plasticollapse.runs.folder import (
    DivergenceError,
    RunFolder,
    check_finite,
    jsonable,
)
from plasticollapse.runs.provenance import git_info


def open_folder(path, config=None):
    return RunFolder.open(path, "toy", config or {"lr": 0.1, "out": str(path)}, "cpu", "run")


def test_config_json_records_environment(tmp_path):
    folder = open_folder(tmp_path / "r")
    record = json.loads(folder.config_path.read_text())
    assert record["experiment"] == "toy"
    assert record["config"]["lr"] == 0.1
    assert record["plasticollapse_version"] == plasticollapse.__version__
    assert record["torch_version"] == torch.__version__ and record["device"] == "cpu"
    assert record["numba_cpu"] and record["numba_version"] == numba.__version__
    # The tests run from a git checkout: the record names its commit.
    head = git(Path(plasticollapse.__file__).parent, "rev-parse", "HEAD").strip()
    assert record["git"]["commit"] == head and isinstance(record["git"]["dirty"], bool)


def git(where, *args):
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=where,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.fixture
def repo(tmp_path):
    """A git repository with one committed file, ``code.py``."""
    git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git(tmp_path, "add", "code.py")
    git(tmp_path, "commit", "-q", "-m", "first")
    return tmp_path


def test_git_info_of_a_clean_checkout(repo):
    info = git_info(repo / "code.py")
    assert info == {
        "commit": git(repo, "rev-parse", "HEAD").strip(),
        "dirty": False,
        "diff_sha256": None,
    }


def test_git_info_marks_a_dirty_tree_and_hashes_the_diff(repo):
    (repo / "code.py").write_text("x = 2\n")
    first = git_info(repo / "code.py")
    assert first["dirty"] is True and len(first["diff_sha256"]) == 16
    assert first["commit"] == git(repo, "rev-parse", "HEAD").strip()  # the commit it changed
    assert git_info(repo / "code.py") == first  # same changes, same hash
    (repo / "code.py").write_text("x = 3\n")
    second = git_info(repo / "code.py")
    assert second["dirty"] and second["diff_sha256"] != first["diff_sha256"]
    (repo / "code.py").write_text("x = 1\n")  # back to the commit ...
    (repo / "new.py").write_text("y = 1\n")  # ... but with an untracked file
    untracked = git_info(repo / "code.py")
    assert untracked["dirty"] and untracked["diff_sha256"] not in (
        first["diff_sha256"],
        second["diff_sha256"],
    )


def test_git_info_is_none_outside_git_and_for_untracked_code(tmp_path_factory, repo):
    outside = tmp_path_factory.mktemp("wheel")  # an installed wheel: no checkout around it
    (outside / "code.py").write_text("x = 1\n")
    assert git_info(outside / "code.py") is None
    # Inside a checkout but not part of it (a wheel installed into the checkout's .venv).
    (repo / ".gitignore").write_text(".venv/\n")
    (repo / ".venv").mkdir()
    (repo / ".venv" / "code.py").write_text("x = 1\n")
    assert git_info(repo / ".venv" / "code.py") is None


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
