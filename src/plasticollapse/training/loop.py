"""The one online loop of every online study (permuted, the classification streams, the
bit-flipping regression).

A study supplies an :class:`OnlineStream` (task t: its data, its passes, its measurements)
and a :class:`Learner` (network, remedies, engine); :func:`run_online` does the rest::

    state = the checkpoint's (or fresh_state())                 one state type, every study
    for t = state.task .. tasks-1:
        task = stream.task(t)
        if the task has not started:                             (a resume may be mid-task)
            if t >= 1: every remedy's at_task_start(task.remedy_inputs())   boundary hooks:
            task_extra += task.started()                          called here, and only here
        while task_epoch < task.passes:
            stats = engine.train(task.x, task.y, task.order(task_epoch), task.columns)
                                                 (per-step and every-k-step hooks: the engine)
            record the pass; stop early if task.stop_after_pass()   (the threshold variant)
            checkpoint mid-task (every pass, or once checkpoint_seconds have passed)
        row = task, task.training_keys(passes), pl, task_extra, task.measured(row), callbacks
        append the row; checkpoint

Plasticity loss ``pl`` follows :class:`PlasticityLoss`: ``accuracy_0 - accuracy_t``
(classification, the paper's) or ``loss_t - loss_0`` (regression: the online error).

Resume: the checkpoint holds the state below, the network's weights, the optimizer's state
(plain SGD's: empty, but saved) and the remedies'; every random draw derives from the seed,
so a resumed run writes exactly the rows an uninterrupted one would. The state (plain data)::

    task            the task in progress (or next to start)
    task_epoch      passes of that task already trained
    epoch           passes trained over the whole run
    task_stats      one record per pass of the task in progress (the study's tuple:
                    permuted (accuracy, loss), streams and regression (correct, count, loss_sum))
    task_extra      keys the remedies and the task's start added (and the engine's counts)
    task_seconds    time spent on the task in progress
    <metric>_task0  task 0's value of the plasticity metric (accuracy_task0, loss_task0)
    seconds         time spent on the finished tasks
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from plasticollapse.engines import Engine, OnlineStats
from plasticollapse.engines.stats import add_counts
from plasticollapse.remedies.base import Remedy
from plasticollapse.runs.folder import DivergenceError, RunFolder, check_finite, progress_bar

#: How many of a new task's inputs remedies see at its start (ReDo scores dormancy on them).
TASK_START_SAMPLES = 2048

#: A user metric: ``f(task, model, row)`` may add keys to ``row`` or return a dict of them.
Callback = Callable[[int, nn.Module, dict[str, Any]], "Mapping[str, Any] | None"]


def fresh_state() -> dict[str, Any]:
    """Where a new run starts: task 0, nothing trained, nothing timed."""
    return {
        "task": 0,
        "task_epoch": 0,
        "epoch": 0,
        "task_stats": [],
        "task_extra": {},
        "task_seconds": 0.0,
        "accuracy_task0": None,
        "seconds": 0.0,
    }


class OnlineTask(Protocol):
    """Task ``index`` of a stream, as the loop trains and measures it."""

    index: int
    x: torch.Tensor
    y: torch.Tensor
    #: the most passes over the task (the threshold variant may stop earlier)
    passes: int

    @property
    def columns(self) -> torch.Tensor | None:
        """An optional pixel permutation the engine applies to ``x``'s columns (permuted)."""

    def order(self, epoch: int) -> torch.Tensor:
        """The rows of ``x`` that pass ``epoch`` of the task visits, in order."""

    def remedy_inputs(self) -> torch.Tensor:
        """The inputs every remedy's ``at_task_start`` sees (tasks t >= 1)."""

    def started(self) -> dict[str, Any]:
        """Keys measured at the switch to the task, after the remedies (probes)."""

    def stop_after_pass(self) -> bool:
        """After each pass: whether the task is done before its last pass."""

    def training_keys(self, records: list[Any], epoch: int) -> dict[str, Any]:
        """The row's training side from the task's pass records (accuracy, loss, ...);
        ``epoch`` counts the passes of the whole run."""

    def measured(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row's measurements of the trained network (collapse, plasticity, probes);
        ``row`` holds its keys so far (for gaps to a baseline)."""


class OnlineStream(Protocol):
    """What a study hands the loop: its tasks and how their passes are recorded."""

    tasks: int

    def task(self, t: int) -> OnlineTask:
        """Task ``t``, drawn from the run's seed alone (and, where a head is masked, the
        network restricted to its classes)."""

    def record(self, stats: OnlineStats) -> tuple:
        """What the state keeps of one pass (plain data, checkpointed)."""

    def postfix(self, row: dict[str, Any]) -> dict[str, str]:
        """The progress bar's postfix after a task."""


@dataclasses.dataclass(frozen=True)
class PlasticityLoss:
    """``pl`` of a row from ``metric``: task 0's minus task t's when higher is better
    (accuracy: ``pl = acc_0 - acc_t``), else task t's minus task 0's (``loss_t - loss_0``)."""

    metric: str = "accuracy"
    higher_is_better: bool = True

    @property
    def state_key(self) -> str:
        return f"{self.metric}_task0"

    def of(self, value: float, task0: float) -> float:
        return task0 - value if self.higher_is_better else value - task0


@dataclasses.dataclass(frozen=True)
class LoopRules:
    """The variations of the loop, as data.

    ``checkpoint_seconds``: inside a task, checkpoint at the end of a pass once this many
    seconds have passed since the last checkpoint (0: after every pass). The counts the
    engine reports for a pass (``cbp_units_replaced``) are summed into the task's row.
    """

    plasticity: PlasticityLoss = PlasticityLoss()
    checkpoint_seconds: float = 0.0


@dataclasses.dataclass
class Learner:
    """The network, its remedies and the engine that trains it: what a checkpoint holds."""

    model: nn.Module
    remedies: Sequence[Remedy]
    engine: Engine

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        return getattr(self.engine, "optimizer", None)  # the fast engine has none

    def state_dict(self) -> dict[str, Any]:
        state = {
            "model": self.model.state_dict(),
            "remedies": [r.state_dict() for r in self.remedies],
        }
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        return state


def restore(folder: RunFolder, model: nn.Module, remedies: Sequence[Remedy]) -> dict[str, Any]:
    """The run's state from ``folder``'s checkpoint (:func:`fresh_state` for a new run, and
    its defaults for keys an older checkpoint lacks); the network's weights and the remedies'
    states are loaded into ``model`` and ``remedies``. The optimizer's state, if saved, stays
    in the state for :func:`run_online` (the engine is built after the weights are loaded)."""
    state = {**fresh_state(), **(folder.load_checkpoint() or {})}
    if "model" in state:
        model.load_state_dict(state.pop("model"))
    for remedy, saved in zip(remedies, state.pop("remedies", ()), strict=False):
        remedy.load_state_dict(saved)
    return state


@dataclasses.dataclass(frozen=True)
class OnlineResult:
    """What a run leaves for its study's summary: the rows, the time, how it ended."""

    rows: list[dict[str, Any]]
    seconds: float
    divergence: DivergenceError | None


def run_online(
    stream: OnlineStream,
    learner: Learner,
    state: dict[str, Any],
    folder: RunFolder,
    callbacks: Iterable[Callback] = (),
    *,
    rules: LoopRules = LoopRules(),
    progress: bool = False,
) -> OnlineResult:
    """Train and measure ``stream.tasks`` tasks from ``state`` (:func:`restore`), appending
    one row per task to ``folder`` and checkpointing (see the module doc). A non-finite
    online loss ends the run (``divergence``); the rows written before it stay."""
    model, remedies, engine = learner.model, learner.remedies, learner.engine
    if "optimizer" in state and learner.optimizer is not None:
        learner.optimizer.load_state_dict(state.pop("optimizer"))
    state.pop("optimizer", None)
    callbacks = list(callbacks)
    task0_key = rules.plasticity.state_key
    last_checkpoint = time.perf_counter()

    def checkpoint() -> None:
        nonlocal last_checkpoint
        folder.save_checkpoint({**state, **learner.state_dict()})
        last_checkpoint = time.perf_counter()

    def train_task(task: OnlineTask) -> None:
        """The passes still to run of ``task``, each recorded (and checkpointed mid-task)."""
        while state["task_epoch"] < task.passes:
            start = time.perf_counter()
            stats = engine.train(task.x, task.y, task.order(state["task_epoch"]), task.columns)
            check_finite(state["epoch"] + 1, loss=stats.loss)
            add_counts(state["task_extra"], [stats.extra])  # e.g. cbp_units_replaced
            state["task_stats"].append(stream.record(stats))
            state["task_epoch"] += 1
            state["epoch"] += 1
            stop = task.stop_after_pass()
            state["task_seconds"] += time.perf_counter() - start
            if stop or state["task_epoch"] >= task.passes:
                return
            if time.perf_counter() - last_checkpoint >= rules.checkpoint_seconds:
                checkpoint()  # mid-task: a kill loses at most this much

    def row_of(task: OnlineTask) -> dict[str, Any]:
        """The row of a trained task: training keys, pl, boundary keys, measurements,
        callbacks' keys."""
        row = {"task": task.index, **task.training_keys(state["task_stats"], state["epoch"])}
        value = row[rules.plasticity.metric]
        task0 = value if task.index == 0 else state[task0_key]
        row["pl"] = rules.plasticity.of(value, task0)
        row.update(state["task_extra"])
        row.update(task.measured(row))
        for callback in callbacks:
            row.update(callback(task.index, model, row) or {})
        return row

    divergence: DivergenceError | None = None
    with contextlib.ExitStack() as stack:
        bar = None
        if progress:
            bar = progress_bar(total=stream.tasks, initial=state["task"], desc=folder.path.name)
            stack.enter_context(bar)
        try:
            for t in range(state["task"], stream.tasks):
                start = time.perf_counter()
                task = stream.task(t)
                if state["task_epoch"] == 0:  # not yet started (a resume may be mid-task)
                    state["task_extra"] = {}
                    if t > 0:
                        inputs = task.remedy_inputs()
                        for remedy in remedies:
                            extra = remedy.at_task_start(model, learner.optimizer, t, inputs)
                            state["task_extra"].update(extra)
                    state["task_extra"].update(task.started())
                state["task_seconds"] += time.perf_counter() - start
                train_task(task)
                start = time.perf_counter()
                row = row_of(task)
                state["task_seconds"] += time.perf_counter() - start
                folder.append_metrics({**row, "seconds": state["task_seconds"]})
                if t == 0:
                    state[task0_key] = row[rules.plasticity.metric]
                done = state["seconds"] + state["task_seconds"]
                state.update(task=t + 1, task_epoch=0, task_stats=[], task_extra={}, seconds=done)
                state["task_seconds"] = 0.0
                checkpoint()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(stream.postfix(row))
        except DivergenceError as e:
            divergence = e
    return OnlineResult(folder.read_metrics(), state["seconds"] + state["task_seconds"], divergence)
