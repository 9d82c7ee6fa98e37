"""What the stream loop measures about a task: collapse on its training samples and on its
held-out split, and the opt-in probes.

Keys of a task's row (see :func:`measure_task` and the probes):

* training samples (the data the paper measures on): every key of
  :func:`~plasticollapse.metrics.measure.measure_model` with ``hidden_layers=True`` (and
  ``layer_collapse=True``: ``nc1_layer{k}``, ... for each hidden layer k), its accuracy and
  loss renamed ``eval_accuracy`` / ``eval_loss`` (a row's ``accuracy`` is the online one);
* held-out split: the same keys prefixed ``test_`` (``test_nc1``, ``test_accuracy``,
  ``test_nc1_layer1``, ...);
* ``plasticity_probe``: ``plasticity_score``, ``probe_loss_before``, ``probe_loss_after``
  (:func:`~plasticollapse.metrics.trainability.plasticity_score` on a fixed probe batch of
  the new task, at the switch to it);
* ``retrained_baseline``: ``retrained_accuracy`` (online, as ``accuracy``),
  ``retrained_test_accuracy`` and ``retrained_gap = retrained_accuracy - accuracy``;
* ``forgetting``: ``task0_accuracy`` and ``task0_test_accuracy``, the network's accuracy
  on task 0's training samples and held-out split (with task 0's labels) after each task.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from plasticollapse.runs.runtime import derived_seed
from plasticollapse.studies.streams.config import StreamConfig
from plasticollapse.studies.streams.model import build_model, set_classes
from plasticollapse.studies.streams.stream import Stream, StreamTask, among, epoch_order


def measure_split(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, layer_collapse: bool
) -> dict[str, float]:
    """``measure_model`` of the network on (x, y) with every hidden layer's keys.

    A plain MLP on the CPU is measured through the one sweep of sufficient statistics
    (:func:`~plasticollapse.engines.fast_statistics.mlp_metrics`, as the Permuted study
    measures): the same keys and formulas, float32 rounding apart (its module docstring);
    anything else, or a network whose activations are not finite (whose error
    ``measure_model`` then names), through ``measure_model``."""
    from plasticollapse.engines import fast_statistics
    from plasticollapse.metrics.measure import measure_model

    if fast_statistics.applies(model, x):
        fused = fast_statistics.mlp_metrics(model, x, y, num_classes, layer_collapse=layer_collapse)
        if fused is not None:
            return {k: float(v) for k, v in fused.items()}
    metrics = measure_model(
        model, x, y, num_classes, hidden_layers=True, layer_collapse=layer_collapse
    )
    return {k: float(v) for k, v in metrics.items()}


def measure_task(
    model: nn.Module, task: StreamTask, num_classes: int, config: StreamConfig
) -> dict[str, float]:
    """Collapse and plasticity on the task's training samples (at most ``measure_samples``,
    a seeded choice) and, prefixed ``test_``, on its held-out split."""
    rows = among(task.train, config.measure_samples, config.seed, "measure", task.index)
    train = measure_split(model, task.x[rows], task.y[rows], num_classes, config.layer_collapse)
    renamed = {"accuracy": "eval_accuracy", "loss": "eval_loss"}
    out = {renamed.get(k, k): v for k, v in train.items()}
    if len(task.test):
        x_test, y_test = task.held_out()
        test = measure_split(model, x_test, y_test, num_classes, config.layer_collapse)
        out.update({f"test_{k}": v for k, v in test.items()})
    return out


def accuracy_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 4096) -> float:
    """Fraction of (x, y) the network classifies right, in eval mode without autograd."""
    from plasticollapse.metrics.plasticity import eval_mode

    if len(y) == 0:
        return float("nan")
    correct = 0
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(y), batch):
            logits = model(x[start : start + batch])
            correct += int((logits.argmax(1) == y[start : start + batch]).sum())
    return correct / len(y)


def plasticity_probe(
    model: nn.Module, task: StreamTask, config: StreamConfig, masked_head: bool = False
) -> dict[str, float]:
    """The plasticity score of the network on the new task's probe batch: a seeded choice
    of ``probe_samples`` of its training samples (the same batch on a resume). With
    ``engine = "fast"`` its steps run compiled where the mini-batch engine applies
    (:mod:`plasticollapse.training.full_batch`), as the run's own training does."""
    from plasticollapse.metrics.trainability import plasticity_score
    from plasticollapse.training.full_batch import compiled_steps_apply, full_batch_steps

    idx = among(task.train, config.probe_samples, config.seed, "probe", task.index)
    x, y = task.x[idx], task.y[idx]
    train = None
    if config.engine == "fast" and compiled_steps_apply(model, len(x), masked_head):
        train = partial(full_batch_steps, masked_head=masked_head)
    return plasticity_score(
        model, x, y, steps=config.probe_steps, lr=config.effective_probe_lr, train=train
    )


def forgetting(model: nn.Module, task0: StreamTask) -> dict[str, float]:
    """Accuracy on task 0's training samples and held-out split, with task 0's labels."""
    return {
        "task0_accuracy": accuracy_of(model, *task0.training()),
        "task0_test_accuracy": accuracy_of(model, *task0.held_out()),
    }


#: The retrained baseline's keys of a task's row (besides ``retrained_gap``).
RETRAINED_KEYS = ("retrained_accuracy", "retrained_test_accuracy")


def retrained_baseline(
    config: StreamConfig, stream: Stream, task: StreamTask, device: torch.device
) -> dict[str, Any]:
    """:func:`train_retrained_baseline`'s values, trained once for every run under
    ``config.out`` that has the same one (the remedies do not change it): the first run
    stores them, the others read them (:mod:`.shared_baseline`; rows are identical)."""
    from plasticollapse.studies.streams.shared_baseline import SharedBaselines, baseline_identity

    identity = baseline_identity(config, task.index, device)
    return SharedBaselines(config.out).get_or_compute(
        identity, RETRAINED_KEYS, lambda: train_retrained_baseline(config, stream, task, device)
    )


def train_retrained_baseline(
    config: StreamConfig, stream: Stream, task: StreamTask, device: torch.device
) -> dict[str, Any]:
    """A freshly initialised network trained on the task with the run's budget.

    The loss-of-plasticity code's "retrained network" baseline (Dohare et al. 2024; its
    incremental CIFAR config ``retrained_network.json`` re-initialises the network at
    every task): the same architecture, initialisation scheme, learning rate, batch size,
    epochs and sample orders, but fresh weights (drawn from a seed of its own per task)
    and no remedy. Its online accuracy is what a network that has lost no plasticity
    reaches on this task.
    """
    from plasticollapse.training import make_engine

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(config.seed, "retrained", task.index))
        fresh = build_model(
            config, stream.data.input_dim, stream.data.num_classes, stream.masks_absent_classes
        )
    fresh.to(device)
    set_classes(fresh, task.classes)
    masked = stream.masks_absent_classes
    engine = make_engine(config.engine, fresh, config.lr, config.batch_size, masked_head=masked)
    correct = count = 0
    for epoch in range(config.epochs_per_task):
        stats = engine.train(task.x, task.y, epoch_order(config.seed, task, epoch))
        correct, count = correct + stats.correct, count + stats.count
    return {
        "retrained_accuracy": correct / count,
        "retrained_test_accuracy": accuracy_of(fresh, *task.held_out()),
    }
