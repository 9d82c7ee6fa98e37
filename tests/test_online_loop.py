"""The one online loop (training/loop.py) driven by a toy stream that is no study: the
boundary hooks run once per task from task 1 on, even across a kill inside a task; a stop
rule ends a task early; a resumed run writes the uninterrupted rows; pl follows the rule."""

from __future__ import annotations

import pytest
import torch

from plasticollapse.engines import ReferenceEngine
from plasticollapse.models import MLP
from plasticollapse.remedies.base import Remedy
from plasticollapse.runs.folder import RunFolder
from plasticollapse.training.loop import (
    Learner,
    LoopRules,
    PlasticityLoss,
    restore,
    run_online,
)


class Boundary(Remedy):
    """Records every task start it sees (a boundary hook)."""

    name = "boundary"

    def __init__(self, calls: list):
        self.calls = calls

    def at_task_start(self, model, optimizer, task, inputs):
        self.calls.append(task)
        return {"boundary_task": task}


class ToyTask:
    columns = None

    def __init__(self, stream, index):
        self.stream, self.index, self.passes, self.trained = stream, index, 3, 0
        g = torch.Generator().manual_seed(index)
        self.x = torch.randn(40, 6, generator=g)
        self.y = torch.randint(0, 3, (40,), generator=g)

    def order(self, epoch):
        if (self.index, epoch) == self.stream.kill_at:
            raise KeyboardInterrupt
        return torch.randperm(40, generator=torch.Generator().manual_seed(100 * self.index + epoch))

    def remedy_inputs(self):
        return self.x[:8]

    def started(self):
        return {"started": self.index}

    def stop_after_pass(self):  # called after each pass: task 0 stops after its second of 3
        self.trained += 1
        return self.index == 0 and self.trained == 2

    def training_keys(self, records, epoch):
        correct = sum(r[0] for r in records)
        count = sum(r[1] for r in records)
        return {"task_epochs": len(records), "epoch": epoch, "accuracy": correct / count}

    def measured(self, row):
        return {"twice_accuracy": 2 * row["accuracy"]}


class ToyStream:
    tasks = 3

    def __init__(self, kill_at=None):
        self.kill_at = kill_at

    def task(self, t):
        return ToyTask(self, t)

    def record(self, stats):
        return (stats.correct, stats.count, stats.loss_sum)

    def postfix(self, row):
        return {}


def run_toy(path, calls, kill_at=None):
    torch.manual_seed(0)
    model = MLP(6, (5,), 3)
    remedies = [Boundary(calls)]
    path.mkdir(exist_ok=True)
    folder = RunFolder(path)
    state = restore(folder, model, remedies)
    engine = ReferenceEngine(model, 0.1, 1, remedies)
    rules = LoopRules(plasticity=PlasticityLoss("accuracy"), checkpoint_seconds=0.0)
    learner = Learner(model, remedies, engine)
    return run_online(ToyStream(kill_at), learner, state, folder, rules=rules)


def test_boundary_hooks_once_per_task_and_a_resume_writes_the_uninterrupted_rows(tmp_path):
    whole_calls: list = []
    whole = run_toy(tmp_path / "whole", whole_calls)
    assert whole_calls == [1, 2]  # boundary hooks: task starts t >= 1, once each
    assert [r["task_epochs"] for r in whole.rows] == [2, 3, 3]  # the stop rule ended task 0
    assert [r["epoch"] for r in whole.rows] == [2, 5, 8]
    assert [r["boundary_task"] for r in whole.rows[1:]] == [1, 2]
    assert [r["started"] for r in whole.rows] == [0, 1, 2]
    assert whole.rows[0]["pl"] == 0.0
    assert whole.rows[2]["pl"] == pytest.approx(
        whole.rows[0]["accuracy"] - whole.rows[2]["accuracy"]
    )
    assert all(r["twice_accuracy"] == 2 * r["accuracy"] for r in whole.rows)

    calls: list = []
    with pytest.raises(KeyboardInterrupt):  # killed inside task 1, after its first pass
        run_toy(tmp_path / "killed", calls, kill_at=(1, 1))
    resumed = run_toy(tmp_path / "killed", calls)
    assert calls == [1, 2]  # task 1's boundary hook is not called again on resume

    def drop_seconds(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert drop_seconds(resumed.rows) == drop_seconds(whole.rows)
