"""Loggers: every row reaches every logger of a run, with its step; missing extras are
reported before a run starts. Needs neither tensorboard nor wandb (their own tests skip)."""

import importlib.util
import json

import pytest

from plasticollapse import studies
from plasticollapse.runs import loggers as loggers_module
from plasticollapse.runs.config import ConfigError
from plasticollapse.runs.folder import RunFolder, read_jsonl
from plasticollapse.runs.loggers import JsonlLogger, LoggerKind, check_loggers
from plasticollapse.studies.base import RunSpec, execute, plan_from_file


class FakeLogger:
    """Records what it is given; every instance is kept in ``made``."""

    made: list["FakeLogger"] = []

    def __init__(self, folder, run_id, config):
        self.folder, self.run_id, self.config = folder, run_id, config
        self.rows: list[tuple[dict, int]] = []
        self.closed = False
        FakeLogger.made.append(self)

    def log(self, row, step):
        assert not self.closed
        self.rows.append((dict(row), step))

    def close(self):
        self.closed = True


@pytest.fixture
def fake(monkeypatch):
    """A logger named ``fake`` (its 'extra' is the json module, always importable)."""
    FakeLogger.made = []
    monkeypatch.setitem(loggers_module.LOGGERS, "fake", LoggerKind(FakeLogger, "json", "fake"))
    return FakeLogger


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(studies.REGISTRY, "toy", "toy_experiment:STUDY")


def test_jsonl_logger_appends_plain_json_rows(tmp_path):
    logger = JsonlLogger(tmp_path / "m.jsonl")
    logger.log({"task": 0, "nc1": float("nan")}, 0)
    logger.log({"task": 1, "nc1": 0.5}, 1)
    logger.close()
    assert read_jsonl(tmp_path / "m.jsonl") == [{"task": 0, "nc1": None}, {"task": 1, "nc1": 0.5}]


def test_a_run_folder_forwards_each_row_with_its_step(tmp_path, fake):
    config = {"lr": 0.1, "loggers": ["fake"]}
    folder = RunFolder.open(tmp_path / "r", "toy", config, "cpu", "run7", step_key="task")
    (logger,) = fake.made
    assert (logger.run_id, logger.config) == ("run7", config)
    folder.append_metrics({"task": 3, "acc": 0.5, "nc1": float("inf")})
    folder.append_metrics({"task": 4, "acc": 0.75, "nc1": 1.0})
    folder.close()
    # The same rows as metrics.jsonl (non-finite values as null), stepped by the task.
    assert logger.rows == [
        ({"task": 3, "acc": 0.5, "nc1": None}, 3),
        ({"task": 4, "acc": 0.75, "nc1": 1.0}, 4),
    ]
    assert folder.read_metrics() == [row for row, _ in logger.rows]
    assert logger.closed


def test_without_loggers_only_metrics_jsonl_is_written(tmp_path, fake):
    folder = RunFolder.open(tmp_path / "r", "toy", {"lr": 0.1}, "cpu", "run")
    folder.append_metrics({"task": 0})
    folder.close()
    assert fake.made == [] and folder.read_metrics() == [{"task": 0}]
    assert sorted(p.name for p in folder.path.iterdir()) == ["config.json", "metrics.jsonl"]


@pytest.mark.parametrize("fail", [False, True])
def test_execute_starts_and_closes_the_run_loggers(tmp_path, fake, toy, fail):
    config = {"seed": 0, "out": str(tmp_path), "steps": 3, "fail": fail, "loggers": ["fake"]}
    spec = RunSpec("toy", config, str(tmp_path / "run"))
    if fail:
        with pytest.raises(RuntimeError, match="toy failure"):
            execute(spec)
    else:
        assert execute(spec) == "done"
    (logger,) = fake.made
    steps = [step for _, step in logger.rows]
    assert steps == ([0] if fail else [0, 1, 2])  # the toy's step key is "step"
    assert logger.closed  # closed even when the run failed


def test_unknown_logger_names_the_known_ones():
    with pytest.raises(ConfigError, match="unknown logger 'nope'.*tensorboard.*wandb"):
        check_loggers(["nope"])
    check_loggers(["jsonl"])  # always on, accepted


@pytest.mark.parametrize("name", ["tensorboard", "wandb"])
def test_a_missing_extra_stops_the_study_before_any_run(name, monkeypatch, tmp_path):
    monkeypatch.setattr(loggers_module, "find_spec", lambda module: None)
    argv = ["--loggers", name, "--out", str(tmp_path)]
    with pytest.raises(ConfigError, match=rf"pip install 'plasticollapse\[{name}\]'"):
        plan_from_file("permuted", "quick/permuted_digits", argv)
    assert not list(tmp_path.iterdir())


def test_loggers_are_not_part_of_a_run_identity(tmp_path):
    plain = plan_from_file("permuted", "quick/permuted_digits", ["--out", str(tmp_path)])
    logged = plan_from_file(
        "permuted", "quick/permuted_digits", ["--out", str(tmp_path), "--loggers", "jsonl"]
    )
    assert [s.folder for s in plain] == [s.folder for s in logged]


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None, reason="the tensorboard extra is absent"
)
def test_tensorboard_writes_event_files(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = RunFolder.open(
        tmp_path / "r", "toy", {"loggers": ["tensorboard"]}, "cpu", "run", step_key="task"
    )
    folder.append_metrics({"task": 0, "acc": 0.5, "label": "text is skipped"})
    folder.append_metrics({"task": 2, "acc": 0.25})
    folder.close()
    events = EventAccumulator(str(folder.path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("acc")] == [(0, 0.5), (2, 0.25)]


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="the wandb extra is absent")
def test_wandb_runs_offline_into_the_run_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    folder = RunFolder.open(tmp_path / "r", "toy", {"loggers": ["wandb"]}, "cpu", "run")
    folder.append_metrics({"task": 0, "acc": 0.5})
    folder.close()
    assert list((folder.path / "wandb").glob("offline-run-*"))
    assert json.loads(folder.config_path.read_text())["config"]["loggers"] == ["wandb"]
