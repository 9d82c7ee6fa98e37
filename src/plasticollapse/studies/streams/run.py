"""The classification streams' side of the one online loop
(:func:`plasticollapse.training.loop.run_online`): for each task t of a
:class:`~plasticollapse.studies.streams.stream.Stream`::

    task = stream.task(t)                      # training samples, held-out split, classes
    restrict a masked head to task.classes     # class-incremental streams
    if t >= 1: every remedy's at_task_start    # Shrink & Perturb, ReDo, ... (the loop)
    [plasticity_probe] plasticity score on a probe batch of the new task
    repeat epochs_per_task times:
        one prequential pass over the task's training samples in a fresh random order
        (the engine: each mini-batch scored before the update it causes)
    measure collapse on the training samples and, prefixed test_, on the held-out split
    [retrained_baseline] train a fresh network on the task with the same budget
    [forgetting] accuracy on task 0's data
    append one row; checkpoint

A row's ``accuracy`` is the task's *average online accuracy*: the fraction of its training
steps' samples predicted right before their update, over all its epochs (Kumar et al.
2023, "Maintaining plasticity in continual learning via regenerative regularization",
Sec. 4.1); ``accuracy_first_epoch`` and ``accuracy_last_epoch`` are those of its first and
last pass (equal to ``accuracy`` for one-pass tasks); ``loss`` is the mean online
cross-entropy; ``pl = accuracy(task 0) - accuracy`` as in the paper. Other keys:
``task, task_epochs, epoch`` (cumulative passes), ``num_train, num_test, classes_seen``,
the remedies' keys, ``seconds``, and those of :mod:`.measure`; with Continual Backprop,
``cbp_units_replaced``: the units it replaced during the task (the engine's count), so that
a reader sees whether the remedy acted at all at the run's rate.

The run checkpoints after every task, and inside a task at the end of an epoch once
:data:`CHECKPOINT_SECONDS` have passed since the last checkpoint, so a kill loses at most
about that much. Every random draw derives from the seed (the stream's, the sample
orders', the remedies', the probes'), so a resumed run writes exactly the rows an
uninterrupted one would. ``run(config, folder, callbacks=[f])`` calls
``f(task, model, row)`` after each task's measurements (it may add keys to the row).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from plasticollapse.engines import OnlineStats
from plasticollapse.remedies import RemedyContext, build_remedies
from plasticollapse.runs.folder import RunFolder
from plasticollapse.runs.runtime import resolve_device, seed_everything, set_threads
from plasticollapse.studies.base import Callback
from plasticollapse.studies.streams import measure
from plasticollapse.studies.streams.config import StreamConfig
from plasticollapse.studies.streams.model import build_model, set_classes
from plasticollapse.studies.streams.stream import (
    Stream,
    StreamData,
    StreamTask,
    among,
    epoch_order,
    load_stream_data,
)
from plasticollapse.studies.streams.summary import summarise_run
from plasticollapse.training.loop import (
    TASK_START_SAMPLES,
    Learner,
    LoopRules,
    restore,
    run_online,
)

#: Inside a long task, checkpoint at the end of an epoch once this many seconds have
#: passed since the last checkpoint (the results do not depend on when it happens).
CHECKPOINT_SECONDS = 60.0


def is_measured(config: StreamConfig, task: int) -> bool:
    """Collapse is measured after every ``measure_every``-th task (0, k, 2k, ...) and the
    last: the rule of :func:`plasticollapse.studies.permuted.config.is_measured`."""
    return task % config.measure_every == 0 or task == config.tasks - 1


def task_row(task: StreamTask, stats: list[tuple[int, int, float]], epoch: int) -> dict[str, Any]:
    """The training side of a task's row from its passes' (correct, count, loss_sum)."""
    correct = sum(s[0] for s in stats)
    count = sum(s[1] for s in stats)
    return {
        "task_epochs": len(stats),
        "epoch": epoch,
        "accuracy": correct / count,
        "accuracy_first_epoch": stats[0][0] / stats[0][1],
        "accuracy_last_epoch": stats[-1][0] / stats[-1][1],
        "loss": sum(s[2] for s in stats) / count,
        "num_train": len(task.train),
        "num_test": len(task.test),
        "classes_seen": len(task.classes),
    }


class OnlineStreamTask:
    """A :class:`StreamTask` as the online loop trains and measures it."""

    columns = None

    def __init__(self, run: StreamRun, task: StreamTask):
        self.run, self.task = run, task
        self.index, self.x, self.y = task.index, task.x, task.y
        self.passes = run.config.epochs_per_task

    def order(self, epoch: int) -> torch.Tensor:
        return epoch_order(self.run.config.seed, self.task, epoch)

    def remedy_inputs(self) -> torch.Tensor:
        config, task = self.run.config, self.task
        return task.x[among(task.train, TASK_START_SAMPLES, config.seed, "sample", task.index)]

    def started(self) -> dict[str, Any]:
        """The plasticity probe measures the network that will train on the task."""
        if not self.run.config.plasticity_probe:
            return {}
        run = self.run
        masked = run.stream.masks_absent_classes
        return measure.plasticity_probe(run.model, self.task, run.config, masked)

    def stop_after_pass(self) -> bool:
        return False

    def training_keys(self, records: list[tuple[int, int, float]], epoch: int) -> dict[str, Any]:
        return task_row(self.task, records, epoch)

    def measured(self, row: dict[str, Any]) -> dict[str, Any]:
        run, task, out = self.run, self.task, {}
        if is_measured(run.config, task.index):
            num_classes = run.stream.data.num_classes
            out.update(measure.measure_task(run.model, task, num_classes, run.config))
        if run.config.retrained_baseline:
            out.update(measure.retrained_baseline(run.config, run.stream, task, run.device))
            out["retrained_gap"] = out["retrained_accuracy"] - row["accuracy"]
        if run.task0 is not None:
            out.update(measure.forgetting(run.model, run.task0))
        return out


class StreamRun:
    """A stream study's run as the online loop sees it: the stream's tasks (the head
    restricted to each one's classes), their records, the row keys that need the row."""

    def __init__(
        self, config: StreamConfig, stream: Stream, model: nn.Module, device: torch.device
    ):
        self.config, self.stream, self.model, self.device = config, stream, model, device
        self.tasks = config.tasks
        self.task0 = stream.task(0) if config.forgetting else None

    def task(self, t: int) -> OnlineStreamTask:
        task = self.stream.task(t)
        set_classes(self.model, task.classes)
        return OnlineStreamTask(self, task)

    def record(self, stats: OnlineStats) -> tuple[int, int, float]:
        return (stats.correct, stats.count, stats.loss_sum)

    def postfix(self, row: dict[str, Any]) -> dict[str, str]:
        return {"task": str(row["task"]), "acc": f"{row['accuracy']:.3f}"}


def run_stream(
    config: StreamConfig,
    folder: RunFolder,
    callbacks: Iterable[Callback] = (),
    *,
    make_stream: Callable[[Any, StreamData], Stream],
) -> dict[str, Any]:
    """Train and measure ``config.tasks`` tasks of the stream ``make_stream(config, data)``
    makes of the dataset, resuming from ``folder``'s checkpoint; append one row per task;
    return the summary (:func:`.summary.summarise_run`). A study's ``run`` is this with its
    stream class: ``run = partial(run_stream, make_stream=MyStream)``.

    A non-finite online loss ends the run with ``status = "diverged"``; its rows stay.
    """
    from plasticollapse.training import make_engine

    set_threads(config.threads)
    device = resolve_device(config.device)
    data = load_stream_data(config, device)
    stream = make_stream(config, data)
    seed_everything(config.seed)  # fixes the initialisation
    model = build_model(config, data.input_dim, data.num_classes, stream.masks_absent_classes)
    model.to(device)
    remedies = build_remedies(config)
    for remedy in remedies:  # before the checkpoint: L2 Init's theta_0 is the initialisation
        remedy.bind(model, RemedyContext(seed=config.seed, num_classes=data.num_classes))
    state = restore(folder, model, remedies)
    # Plain SGD keeps no state of its own: a fresh engine continues where the last stopped.
    masked = stream.masks_absent_classes
    engine = make_engine(
        config.engine, model, config.lr, config.batch_size, remedies, masked_head=masked
    )
    run = StreamRun(config, stream, model, device)
    rules = LoopRules(checkpoint_seconds=CHECKPOINT_SECONDS)
    learner = Learner(model, remedies, engine)
    done = run_online(run, learner, state, folder, callbacks, rules=rules, progress=config.progress)
    return summarise_run(done.rows, done.seconds, done.divergence)
