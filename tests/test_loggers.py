"""Loggers: every row reaches every logger of a run, with its step; missing extras are
reported before a run starts. Needs neither tensorboard nor wandb (their own tests skip)."""

import importlib.machinery
import importlib.util
import json
import sys
import types

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


# --------------------------------------------------------------------------- W&B, faked


class FakeWandb(types.ModuleType):
    """Stands in for the ``wandb`` package: records each ``init`` and what its run logs."""

    def __init__(self):
        super().__init__("wandb")
        self.__spec__ = importlib.machinery.ModuleSpec("wandb", None)  # find_spec finds it
        self.inits: list[dict] = []

    def Settings(self, **options):  # noqa: N802 - wandb's own spelling
        return {"settings": options}

    def init(self, **options):
        self.inits.append(options)
        return types.SimpleNamespace(log=lambda row, step: None, finish=lambda: None)


@pytest.fixture
def fake_wandb(monkeypatch):
    for name in ("WANDB_PROJECT", "WANDB_RUN_GROUP", "WANDB_MODE", "WANDB_SILENT", "WANDB_QUIET"):
        monkeypatch.delenv(name, raising=False)
    module = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def run_tiny_study(tmp_path, *fields: str) -> list[str]:
    """Two seeds x two learning rates of a tiny permuted study through the CLI, W&B on."""
    from plasticollapse import cli

    argv = ["permuted", "--dataset", "digits", "--hidden", "8", "--tasks", "1"]
    argv += ["--train_samples", "100", "--engine", "reference", "--progress", "false"]
    argv += ["--threads", "1", "--first_task_epochs", "1", "--seeds", "0", "1"]
    argv += ["--lr", "0.1", "0.05", "--loggers", "wandb", "--out", str(tmp_path), *fields]
    assert cli.main([*argv, "--backend", "serial"]) == 0
    return sorted(p.name for p in tmp_path.iterdir())


def test_wandb_groups_the_seeds_of_one_setting_by_default(fake_wandb, tmp_path, capsys):
    folders = run_tiny_study(tmp_path / "runs")
    inits = fake_wandb.inits
    assert sorted(i["name"] for i in inits) == folders  # one W&B run per run, by folder
    assert {i["project"] for i in inits} == {"plasticollapse"}
    groups = {i["name"]: i["group"] for i in inits}
    by_lr = {}
    for name, group in groups.items():
        by_lr.setdefault(name.split("_seed")[0], set()).add(group)
    assert len(by_lr) == 2 and all(len(g) == 1 for g in by_lr.values())  # seeds together
    assert len(set(groups.values())) == 2  # and the two settings apart
    assert all(group.startswith(f"{prefix}_") for prefix, (group,) in by_lr.items())
    # Offline into the run folder, and silent: the sweep's output is its own.
    assert {i["mode"] for i in inits} == {"offline"}
    assert all(i["settings"] == {"settings": {"silent": True}} for i in inits)
    assert all(str(tmp_path / "runs") in i["dir"] for i in inits)


def test_wandb_project_and_group_from_the_environment(fake_wandb, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    monkeypatch.setenv("WANDB_RUN_GROUP", "env-group")
    monkeypatch.setenv("WANDB_SILENT", "false")  # the user's own choice of verbosity stands
    run_tiny_study(tmp_path / "runs")
    assert {(i["project"], i["group"]) for i in fake_wandb.inits} == {("from-env", "env-group")}
    assert {i["settings"] for i in fake_wandb.inits} == {None}


def test_wandb_fields_win_over_the_environment_and_keep_the_runs(fake_wandb, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    plain = run_tiny_study(tmp_path / "runs")
    fake_wandb.inits.clear()
    fields = ("--wandb_project", "mine", "--wandb_group", "sweep-3")
    assert run_tiny_study(tmp_path / "runs", *fields) == plain  # the same runs (complete)
    assert fake_wandb.inits == []  # complete runs are skipped: nothing logged again
    again = run_tiny_study(tmp_path / "other", *fields)
    assert [name.rsplit("_", 1)[1] for name in again] == [n.rsplit("_", 1)[1] for n in plain]
    assert {(i["project"], i["group"]) for i in fake_wandb.inits} == {("mine", "sweep-3")}
