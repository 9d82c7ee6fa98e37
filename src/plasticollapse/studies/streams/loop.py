"""The one training loop of every online classification stream.

For each task t of a :class:`~plasticollapse.studies.streams.stream.Stream`::

    task = stream.task(t)                      # training samples, held-out split, classes
    restrict a masked head to task.classes     # class-incremental streams
    if t >= 1: every remedy's at_task_start    # Shrink & Perturb, ReDo, ...
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
the remedies' keys, ``seconds``, and those of :mod:`.measure`.

The run checkpoints after every task, and inside a task at the end of an epoch once
:data:`CHECKPOINT_SECONDS` have passed since the last checkpoint, so a kill loses at most
about that much. Every random draw derives from the seed (the stream's, the sample
orders', the remedies', the probes'), so a resumed run writes exactly the rows an
uninterrupted one would. ``run(config, folder, callbacks=[f])`` calls
``f(task, model, row)`` after each task's measurements (it may add keys to the row).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

from plasticollapse.remedies import RemedyContext, build_remedies
from plasticollapse.runs.folder import DivergenceError, RunFolder, check_finite, progress_bar
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

# The online run state (training/online.py); task_stats holds (correct, count, loss_sum)
# of each pass of the task in progress.
from plasticollapse.training.online import TASK_START_SAMPLES, fresh_state

#: Inside a long task, checkpoint at the end of an epoch once this many seconds have
#: passed since the last checkpoint (the results do not depend on when it happens).
CHECKPOINT_SECONDS = 60.0


def is_measured(config: StreamConfig, task: int) -> bool:
    """Collapse is measured after every ``measure_every``-th task (0, k, 2k, ...) and the
    last: the rule of :func:`plasticollapse.studies.permuted.config.is_measured`."""
    return task % config.measure_every == 0 or task == config.tasks - 1


def restored(folder: RunFolder, model, remedies) -> dict[str, Any]:
    """The run's state from its checkpoint (:func:`fresh_state` for a new run); the
    checkpoint's network weights and remedy states are loaded into ``model`` and
    ``remedies`` (and taken out of the state, which :func:`run_stream` saves them beside)."""
    state = folder.load_checkpoint() or fresh_state()
    if "model" in state:
        model.load_state_dict(state.pop("model"))
    for remedy, saved in zip(remedies, state.pop("remedies", ()), strict=False):
        remedy.load_state_dict(saved)
    return state


def start_task(model, optimizer, remedies, task: StreamTask, config: StreamConfig) -> dict:
    """What happens at the switch to ``task``: the remedies act (from task 1 on), then the
    plasticity probe measures the network that will train on it. Returns the row's keys."""
    extra: dict[str, Any] = {}
    if task.index > 0:
        sample = task.x[among(task.train, TASK_START_SAMPLES, config.seed, "sample", task.index)]
        for remedy in remedies:
            extra.update(remedy.at_task_start(model, optimizer, task.index, sample))
    if config.plasticity_probe:
        extra.update(measure.plasticity_probe(model, task, config))
    return extra


def task_row(task: StreamTask, state: dict[str, Any]) -> dict[str, Any]:
    """The training side of a task's row (see the module doc)."""
    stats = state["task_stats"]
    correct = sum(s[0] for s in stats)
    count = sum(s[1] for s in stats)
    accuracy = correct / count
    accuracy_task0 = accuracy if task.index == 0 else state["accuracy_task0"]
    return {
        "task": task.index,
        "task_epochs": len(stats),
        "epoch": state["epoch"],
        "accuracy": accuracy,
        "accuracy_first_epoch": stats[0][0] / stats[0][1],
        "accuracy_last_epoch": stats[-1][0] / stats[-1][1],
        "loss": sum(s[2] for s in stats) / count,
        "pl": accuracy_task0 - accuracy,
        "num_train": len(task.train),
        "num_test": len(task.test),
        "classes_seen": len(task.classes),
    }


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
    callbacks = list(callbacks)
    state = restored(folder, model, remedies)
    # Plain SGD keeps no state of its own: a fresh engine continues where the last stopped.
    masked = stream.masks_absent_classes
    engine = make_engine(
        config.engine, model, config.lr, config.batch_size, remedies, masked_head=masked
    )
    optimizer = getattr(engine, "optimizer", None)  # the fast engine has none
    last_checkpoint = time.perf_counter()

    def checkpoint() -> None:
        nonlocal last_checkpoint
        folder.save_checkpoint(
            {**state, "model": model.state_dict(), "remedies": [r.state_dict() for r in remedies]}
        )
        last_checkpoint = time.perf_counter()

    task0 = stream.task(0) if config.forgetting else None

    def finished(task: StreamTask) -> dict[str, Any]:
        """The row of a trained task: training keys, measurements, probes, callbacks' keys."""
        row = {**task_row(task, state), **state["task_extra"]}
        if is_measured(config, task.index):
            row.update(measure.measure_task(model, task, data.num_classes, config))
        if config.retrained_baseline:
            row.update(measure.retrained_baseline(config, stream, task, device))
            row["retrained_gap"] = row["retrained_accuracy"] - row["accuracy"]
        if task0 is not None:
            row.update(measure.forgetting(model, task0))
        for callback in callbacks:
            row.update(callback(task.index, model, row) or {})
        return row

    divergence: DivergenceError | None = None
    with contextlib.ExitStack() as stack:
        bar = None
        if config.progress:
            bar = progress_bar(total=config.tasks, initial=state["task"], desc=folder.path.name)
            stack.enter_context(bar)
        try:
            for t in range(state["task"], config.tasks):
                start = time.perf_counter()
                task = stream.task(t)
                set_classes(model, task.classes)
                if state["task_epoch"] == 0:  # not yet started (a resume may be mid-task)
                    state["task_extra"] = start_task(model, optimizer, remedies, task, config)
                state["task_seconds"] += time.perf_counter() - start

                while state["task_epoch"] < config.epochs_per_task:
                    start = time.perf_counter()
                    order = epoch_order(config.seed, task, state["task_epoch"])
                    stats = engine.train(task.x, task.y, order)
                    check_finite(state["epoch"] + 1, loss=stats.loss)
                    state["task_stats"].append((stats.correct, stats.count, stats.loss_sum))
                    state["task_epoch"] += 1
                    state["epoch"] += 1
                    state["task_seconds"] += time.perf_counter() - start
                    unfinished = state["task_epoch"] < config.epochs_per_task
                    if unfinished and time.perf_counter() - last_checkpoint >= CHECKPOINT_SECONDS:
                        checkpoint()

                start = time.perf_counter()
                row = finished(task)
                state["task_seconds"] += time.perf_counter() - start
                folder.append_metrics({**row, "seconds": state["task_seconds"]})
                if t == 0:
                    state["accuracy_task0"] = row["accuracy"]
                done = state["seconds"] + state["task_seconds"]
                state.update(task=t + 1, task_epoch=0, task_stats=[], task_extra={}, seconds=done)
                state["task_seconds"] = 0.0
                checkpoint()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({"task": t, "acc": f"{row['accuracy']:.3f}"})
        except DivergenceError as e:
            divergence = e
    seconds = state["seconds"] + state["task_seconds"]
    return summarise_run(folder.read_metrics(), seconds, divergence)
