"""Setup A: online Permuted MNIST, with neural collapse measured after every task.

The protocol (the authors' code, forked from Dohare et al.'s online Permuted MNIST)::

    x, y   = the dataset's whole training set, flattened to (N, D), float32 in [0, 1]
    P_-1   = identity
    for task t = 0 .. tasks-1:
        Q_t = a fresh random permutation of the D pixels
        P_t = P_{t-1}[Q_t]              (composed; "independent": P_t = Q_t)
        x_t = x[:, P_t]                 (pixel j of a task-t image is pixel P_t[j] of the original)
        for each epoch of the task (first_task_epochs for t = 0, else epochs_per_task):
            one prequential SGD pass over x_t in a random sample order: a fresh one each
            epoch (sample_order = "per_epoch"), or the task's one order reused by every
            epoch (sample_order = "per_task", the authors': they shuffle x_t once per task)
            (each sample scored before the update it causes; batch size 1 in the paper)
        measure NC1..NC4 and plasticity on (x_t, y) in eval mode; append one row

Composition, as the authors do it: their loop re-permutes the already permuted data,
``x = x[:, Q_t]``, so ``x_t = x_{t-1}[:, Q_t] = x[:, P_{t-1}[Q_t]]``, and task 0 is
permuted too. Since Q_t is uniform and independent of the past, every P_t is again a
uniform permutation independent of P_0..P_{t-1}: "composed" and "independent" streams have
the same distribution, and differ only in which permutations a given seed draws.

Accuracy of a task is its online (prequential) accuracy: (1/N) sum_i 1[argmax f(x_i) = y_i]
with f the network just before the update on sample i. A task trained for several epochs
(the first task, ``first_task_epochs = E``) reports as ``accuracy`` the mean of its E
epochs' online accuracies (``task_accuracy = "mean"``, the authors': they average the
online accuracy over every step of the task, docs/paper.md) or its last epoch's
(``"last"``); ``loss`` follows the same rule. ``accuracy_first_epoch`` and
``accuracy_last_epoch`` are always recorded. Plasticity loss, as the paper:
``pl_t = accuracy_0 - accuracy_t``.

The threshold variant (``nc1_threshold``): task 0 trains epoch after epoch until the NC1
measured after an epoch (``threshold_metric``: the exact ``nc1`` or the authors'
``nc1_pinv``) is below the threshold, or ``first_task_epochs`` epochs (a safety cap; the
authors had none) have passed; ``nc1_threshold_reached`` on its row says which, and a run
stopped by the cap says so in its summary's ``note`` (printed beside it by the sweep).

Randomness: the model's initialisation comes from ``seed_everything(seed)``; every other
draw (the subset of samples, Q_t, the sample order of each epoch) comes from its own
``torch.Generator`` seeded by a hash of ``(seed, what, task, epoch)``. A seed thus fixes
the whole stream, and a resumed run redraws exactly what an uninterrupted one would
without storing generator states.

Remedies (``remedies = [...]``, :mod:`plasticollapse.remedies`) act in three places: before
training task t >= 1 (``at_task_start``, on a sample of the new task's inputs: Shrink &
Perturb, ReDo, resets), every k steps inside a pass (``at_interval``) and at every step
inside the engine (loss terms, weight decay, ``after_step``: weight decay, L2 Init and
Continual Backprop in both engines, the NC1 regulariser in the reference engine only,
which ``engine = "auto"`` then picks). Counts the engine reports for a pass
(``cbp_units_replaced``, ``redo_units_reset``) are summed into the task's row.

Every task appends one row to ``metrics.jsonl`` (keys in :func:`run`), and the run
checkpoints after every task and every epoch of a multi-epoch task, so a kill loses at
most one epoch. User metrics plug in as callbacks: ``run(config, folder, callbacks=[f])``
calls ``f(task, model, row)`` after each task's measurements; it may add keys to ``row`` (or
return a dict of them), which are then written with the row.

Example::

    plasticollapse permuted --config paper/permuted_mnist
    plasticollapse permuted --dataset digits --tasks 20 --hidden 32 32 --lr 0.1 --seeds 0 1
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from plasticollapse.engines import OnlineStats
from plasticollapse.remedies import RemedyContext, build_remedies
from plasticollapse.runs.folder import RunFolder
from plasticollapse.runs.runtime import (
    check_classes,
    fixed_subset,
    generator_for,
    resolve_device,
    seed_everything,
    set_threads,
)
from plasticollapse.studies.base import Callback
from plasticollapse.studies.permuted.config import Config, epochs_of_task, is_measured
from plasticollapse.studies.permuted.summary import summarise_run, threshold_outcome
from plasticollapse.training.loop import TASK_START_SAMPLES, Learner, restore, run_online

if TYPE_CHECKING:
    from plasticollapse.models import MLP

# --------------------------------------------------------------------------- the task stream


def fresh_permutation(seed: int, task: int, dim: int) -> torch.Tensor:
    """Q_t: the task's own uniformly random permutation of ``range(dim)``."""
    return torch.randperm(dim, generator=generator_for(seed, "pixels", task))


def next_permutation(
    previous: torch.Tensor | None, seed: int, task: int, dim: int, mode: str
) -> torch.Tensor:
    """P_t from P_{t-1}: ``P_{t-1}[Q_t]`` (composed; P_{-1} = identity) or ``Q_t`` (independent)."""
    q = fresh_permutation(seed, task, dim)
    if mode == "independent" or previous is None:
        return q
    return previous[q]


def pixel_permutation(seed: int, task: int, dim: int, mode: str) -> torch.Tensor:
    """P_t computed from scratch (resume): compose Q_0 .. Q_t in order."""
    perm = None
    first = 0 if mode == "composed" else task
    for t in range(first, task + 1):
        perm = next_permutation(perm, seed, t, dim, mode)
    assert perm is not None
    return perm


def permute_pixels(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``x[:, perm]``, the task's inputs: pixel j of every image becomes pixel perm[j].

    On the CPU through NumPy's ``take``, which gathers a 60,000 x 784 matrix about 3.5x
    faster than torch's advanced indexing (0.08 s vs 0.30 s on one core): it runs once per
    task, so it would otherwise cost a sizeable share of a fast-engine task.
    """
    if x.device.type == "cpu":
        return torch.from_numpy(np.take(x.numpy(), perm.numpy(), axis=1))
    return torch.index_select(x, 1, perm.to(x.device))


def sample_order(seed: int, task: int, epoch: int, n: int) -> torch.Tensor:
    """The order of the samples in epoch ``epoch`` of task ``task``: a fresh shuffle each."""
    return torch.randperm(n, generator=generator_for(seed, "order", task, epoch))


def epoch_order(config: Config, task: int, epoch: int, n: int) -> torch.Tensor:
    """The order of epoch ``epoch`` of ``task`` under ``config.sample_order``: per_epoch
    draws a fresh shuffle each epoch; per_task reuses epoch 0's shuffle for every epoch of
    the task (the authors' loop shuffles the task's data once)."""
    return sample_order(config.seed, task, 0 if config.sample_order == "per_task" else epoch, n)


# --------------------------------------------------------------------------- the run


def load_task_data(config: Config, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The training set, flattened, optionally subsampled, on ``device``; and the class count."""
    from plasticollapse.data import load_dataset

    data = load_dataset(config.dataset, root=config.data_root, download=config.download)
    x, y = data.flat("train")
    subset = fixed_subset(config.seed, "train_samples", len(y), config.train_samples)
    if subset is not None:
        x, y = x[subset], y[subset]
        check_classes(y, data.num_classes, f"train_samples = {config.train_samples}")
    return x.contiguous().to(device), y.to(device), data.num_classes


def measure(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    columns: torch.Tensor | None = None,
) -> dict[str, float]:
    """Collapse and plasticity metrics on the task's training data (eval mode, no autograd).

    ``measure_model``'s own accuracy and loss (of the trained network, in eval mode, on
    this data) are renamed ``eval_accuracy``/``eval_loss``: ``accuracy`` and ``loss`` of a
    row are the online ones.

    With ``columns`` = P the data is ``x[:, P]``, never built: an MLP is measured as a
    copy whose first layer reads the unpermuted pixels (:func:`reading_unpermuted`). The
    plain ReLU MLP on the CPU is measured by
    :func:`~plasticollapse.engines.fast_statistics.mlp_metrics` (the same keys and formulas
    from one sweep of sufficient statistics, float32 grams summed in float64: equal to
    ``measure_model``'s up to the rounding bound its docstring states); when that finds a
    non-finite value, or for another model, ``measure_model`` runs, and for the plain MLP
    there the forward pass is
    :func:`~plasticollapse.metrics.measure.mlp_forward` (no hooks), and on sparse inputs
    (MNIST) its first layer comes from the rows of ``x`` that the fast engine trained on,
    with W_1's columns permuted by P^-1
    (:func:`~plasticollapse.engines.fast_measure.first_layer_outputs`). Each computes the
    same activations up to float32 rounding (another summation order).
    """
    from plasticollapse.engines import fast_measure, fast_statistics
    from plasticollapse.metrics.measure import measure_model, mlp_forward
    from plasticollapse.models import MLP

    renamed = {"accuracy": "eval_accuracy", "loss": "eval_loss"}
    if fast_statistics.applies(model, x):
        fused = fast_statistics.mlp_metrics(model, x, y, num_classes, columns)
        if fused is not None:
            return {renamed.get(k, k): float(v) for k, v in fused.items()}
    forward = None
    if fast_measure.applies(model, x):
        first_layer = fast_measure.first_layer_outputs(model, x, columns)
        if first_layer is not None:
            forward = mlp_forward(model, x, first_layer)
    if columns is not None and forward is None:
        if isinstance(model, MLP):
            model = reading_unpermuted(model, columns)
        else:
            x = permute_pixels(x, columns)
    if forward is None and fast_measure.applies(model, x):
        forward = mlp_forward(model, x)
    metrics = measure_model(model, x, y, num_classes, hidden_layers=True, forward=forward)
    return {renamed.get(k, k): float(v) for k, v in metrics.items()}


def reading_unpermuted(model: MLP, columns: torch.Tensor) -> MLP:
    """A copy of the MLP ``model`` that computes on ``x`` what ``model`` computes on
    ``x[:, P]`` (P = ``columns``): since ``x[:, P] W^T = x (W[:, P^-1])^T``, only its first
    layer's weight columns move, permuted by P^-1. Every later activation, the logits and
    the set of parameter values are the same; only the first layer sums in another order."""
    twin = copy.deepcopy(model)
    first = twin.hidden_linears[0]
    perm = columns.to(first.weight.device)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(len(perm), device=perm.device)
    with torch.no_grad():
        first.weight.copy_(first.weight[:, inverse])
    return twin


class PermutedStream:
    """The permuted stream as :func:`~plasticollapse.training.loop.run_online` trains it:
    task t is (x, y) with the pixel permutation P_t as the engine's ``columns``."""

    def __init__(
        self,
        config: Config,
        model: MLP,
        x: torch.Tensor,
        y: torch.Tensor,
        num_classes: int,
        first_task: int,
    ):
        self.config, self.model, self.x, self.y = config, model, x, y
        self.num_classes, self.tasks = num_classes, config.tasks
        n, dim = x.shape
        measure_idx = fixed_subset(config.seed, "measure_samples", n, config.measure_samples)
        self.x_measure = x if measure_idx is None else x[measure_idx.to(x.device)]
        self.y_measure = y if measure_idx is None else y[measure_idx.to(x.device)]
        check_classes(self.y_measure, num_classes, f"measure_samples = {config.measure_samples}")
        self.first_task = first_task
        self.perm = pixel_permutation(config.seed, first_task, dim, config.permutation)

    def task(self, t: int) -> PermutedTask:
        if t > self.first_task:  # tasks come in order: compose P_t from P_{t-1}
            dim = self.x.shape[1]
            self.perm = next_permutation(
                self.perm, self.config.seed, t, dim, self.config.permutation
            )
        return PermutedTask(self, t, self.perm)

    def record(self, stats: OnlineStats) -> tuple[float, float]:
        return (stats.accuracy, stats.loss)

    def postfix(self, row: dict[str, Any]) -> dict[str, str]:
        postfix = {"task": str(row["task"]), "acc": f"{row['accuracy']:.3f}"}
        if "nc1" in row:
            postfix["nc1"] = f"{row['nc1']:.3g}"
        return postfix


class PermutedTask:
    """Task t: every sample of x under P_t, ``epochs_of_task`` passes, measured on the
    measurement subset; in the threshold variant task 0 stops once NC1 is below threshold."""

    def __init__(self, stream: PermutedStream, index: int, perm: torch.Tensor):
        config = stream.config
        self.stream, self.index, self.perm = stream, index, perm
        self.x, self.y = stream.x, stream.y
        self.columns = perm.to(stream.x.device)  # one permutation for every sample of the task
        self.passes = epochs_of_task(config, index)
        self.threshold = config.nc1_threshold if index == 0 else None
        self.metrics: dict[str, float] | None = None  # the threshold's last measurement

    def order(self, epoch: int) -> torch.Tensor:
        return epoch_order(self.stream.config, self.index, epoch, len(self.y)).to(self.x.device)

    def remedy_inputs(self) -> torch.Tensor:
        return permute_pixels(self.x[:TASK_START_SAMPLES], self.perm)

    def started(self) -> dict[str, Any]:
        return {}

    def measure(self) -> dict[str, float]:
        s = self.stream
        return measure(s.model, s.x_measure, s.y_measure, s.num_classes, self.columns)

    def stop_after_pass(self) -> bool:
        """The threshold variant decides after each pass whether task 0 is done."""
        if self.threshold is None:
            return False
        self.metrics = self.measure()
        return self.metrics[self.stream.config.threshold_metric] < self.threshold

    def training_keys(self, records: list[tuple[float, float]], epoch: int) -> dict[str, Any]:
        return task_row(self.stream.config, records, epoch)

    def measured(self, row: dict[str, Any]) -> dict[str, Any]:
        config, out = self.stream.config, {}
        if self.threshold is not None:
            reached = self.metrics and self.metrics[config.threshold_metric] < self.threshold
            out["nc1_threshold_reached"] = bool(reached)
        if self.metrics is None and is_measured(config, self.index):
            self.metrics = self.measure()
        return {**out, **(self.metrics or {})}


def run(config: Config, folder: RunFolder, callbacks: Iterable[Callback] = ()) -> dict[str, Any]:
    """Train online over ``config.tasks`` permuted tasks, resuming from ``folder``'s checkpoint.

    Each task appends one row::

        task, task_epochs, epoch (cumulative), accuracy, accuracy_first_epoch,
        accuracy_last_epoch, loss, pl, seconds, and, on measured tasks, every key of
        ``measure_model(hidden_layers=True)`` (nc1, nc1_pinv, sigma_b_condition, ...,
        nc4_agreement, dormant_fraction, effective_rank, ..., *_layer{k}, weight_magnitude)
        with its accuracy/loss as ``eval_accuracy``/``eval_loss``;
        ``nc1_threshold_reached`` on task 0 of the threshold variant; the remedies' keys
        (``redo_units_reset`` on tasks >= 1); callbacks' keys.

    ``accuracy`` and ``loss`` are the online prediction's and cross-entropy's; a remedy's
    loss term is trained on but not part of ``loss``.

    Returns the summary (see :func:`summarise_run`). A non-finite loss ends the run with
    ``status = "diverged"``; the rows measured before it stay.
    """
    from plasticollapse.models import MLP
    from plasticollapse.training import make_engine

    set_threads(config.threads)
    device = resolve_device(config.device)
    x, y, num_classes = load_task_data(config, device)
    seed_everything(config.seed)  # fixes the initialisation
    model = MLP(
        x.shape[1], config.hidden, num_classes, layer_norm=config.layer_norm, crelu=config.crelu
    ).to(device)
    remedies = build_remedies(config)
    for remedy in remedies:  # before the checkpoint: L2 Init's theta_0 is the initialisation
        remedy.bind(model, RemedyContext(seed=config.seed, num_classes=num_classes))
    state = restore(folder, model, remedies)
    # Plain SGD keeps no state of its own, so a fresh engine after loading the weights
    # continues exactly where the checkpointed one stopped.
    engine = make_engine(config.engine, model, config.lr, config.batch_size, remedies)
    # The task's data x_t = x[:, P_t] is never built: engines take P_t as ``columns`` (the
    # fast engine applies it to its first layer's columns, so its CSR rows of x serve every
    # task; the reference engine gathers each batch's columns), and so does measure().
    stream = PermutedStream(config, model, x, y, num_classes, state["task"])
    # Checkpoints after every epoch of a multi-epoch task: a kill loses at most one epoch.
    done = run_online(
        stream, Learner(model, remedies, engine), state, folder, callbacks, progress=config.progress
    )
    summary = summarise_run(done.rows, done.seconds, done.divergence)
    return {**summary, **threshold_outcome(config, done.rows)}


def task_row(config: Config, epochs: list[tuple[float, float]], epoch: int) -> dict[str, Any]:
    """The training side of a task's row from its epochs' (accuracy, loss): online accuracy
    and loss (of the last epoch, or the mean over the task's epochs: ``config.task_accuracy``)
    and the first and last epochs' online accuracies; ``epoch`` counts the run's epochs."""
    if config.task_accuracy == "mean":
        accuracy = float(np.mean([a for a, _ in epochs]))
        loss = float(np.mean([lo for _, lo in epochs]))
    else:
        accuracy, loss = epochs[-1]
    return {
        "task_epochs": len(epochs),
        "epoch": epoch,
        "accuracy": accuracy,
        "accuracy_first_epoch": epochs[0][0],
        "accuracy_last_epoch": epochs[-1][0],
        "loss": loss,
    }
