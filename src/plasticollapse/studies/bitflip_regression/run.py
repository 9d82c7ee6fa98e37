"""Online SGD on the slowly-changing regression stream, measured after every flip period.

The protocol (Dohare et al.'s lop/slowly_changing_regression/expr.py and lop/algos/bp.py,
re-written; the stream is :mod:`.stream`)::

    target = the fixed LTU network of the run's seed
    learner = ReLU MLP m -> hidden -> n, Kaiming-uniform weights, zero biases (their FFNN)
    for task (flip period) t = 0 .. tasks-1:
        remedies' at_task_start (t >= 1) on the new period's evaluation inputs
        for each of its flip_after steps: x = flipping bits of t + fresh random bits,
            y = target(x); score (x, y) with the squared error, then one SGD step on it
        measure on eval_samples fresh inputs of period t; append one row

Engine: the reference engine with the squared error (``loss="squared_error"``), or with
``engine="fast"`` the compiled batch-1 engine's squared error (same steps, float32 rounding
in another order; ``auto`` keeps autograd so that earlier runs keep their numbers), one
sample per step in the period's order: the
objective of a step is ``MSE(f(x), y) + sum_r remedy_r.loss(model, f(x), h(x), y)``, with
SGD weight decay ``sum_r remedy_r.weight_decay()``; the engine calls every remedy's per-step
hooks (``after_step`` with the step's hidden activations: Continual Backprop, as the
source's slowly-changing regression runs it) and every-k-step hooks; this module calls the
boundary hooks through the one online loop (:func:`plasticollapse.training.loop.run_online`).
Remedies that need class labels are refused by the config.

Each period appends one row::

    task, step (cumulative), loss (online mean squared error over the period, each sample
    scored before its update, as the source's errs), pl = loss_t - loss_0 (plasticity loss
    as an error: > 0 when the learner does worse than on its first period),
    the remedies' keys (redo_units_reset), seconds, and on measured periods
    (:func:`measure`): eval_loss, nrc1, nrc2, nrc3 (Andriopoulos et al. 2024) and
    dormant_fraction, dead_fraction, effective_rank, srank, stable_rank of the penultimate
    features; for every hidden layer k: nrc1_layer{k}, dormant_fraction_layer{k},
    dead_fraction_layer{k}, effective_rank_layer{k}, srank_layer{k}; weight_magnitude.

Opt-in keys: ``probe_steps > 0``: plasticity_score, probe_loss_before, probe_loss_after
(:func:`plasticollapse.metrics.trainability.plasticity_score` with the squared error, on a
copy of the network at the start of the period, after the remedies, with the period's
evaluation batch and lr); ``retrained``: retrained_loss, the online loss of a freshly
initialised network trained by plain SGD on the same period's samples, and retrained_gap =
loss - retrained_loss (> 0: the continual learner does worse than a fresh one, the
"retrained" baseline of the loss-of-plasticity code); ``forgetting``: task0_eval_loss, the
squared error on period 0's evaluation inputs.

The evaluation inputs are fresh draws of the current period's distribution, but that
distribution has only 2^(m - f) points (32 in the source), all of which training visits:
there is no held-out split to speak of, so rows carry no ``test_`` keys.

The run checkpoints after every period (a period of the source is about a second of
training); callbacks ``f(task, model, row)`` may add keys to a row, as in the other studies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from plasticollapse.engines import Engine, OnlineStats
from plasticollapse.remedies import RemedyContext, build_remedies
from plasticollapse.remedies.base import Remedy
from plasticollapse.runs.folder import RunFolder
from plasticollapse.runs.runtime import (
    generator_for,
    resolve_device,
    seed_everything,
    set_threads,
)
from plasticollapse.studies.base import Callback
from plasticollapse.studies.bitflip_regression.config import Config, is_measured
from plasticollapse.studies.bitflip_regression.stream import (
    TargetNetwork,
    target_network,
    task_inputs,
)
from plasticollapse.studies.bitflip_regression.summary import summarise_run
from plasticollapse.training.loop import Learner, LoopRules, PlasticityLoss, restore, run_online

if TYPE_CHECKING:
    from plasticollapse.models import MLP

#: Per-hidden-layer keys of a measured row (suffixed ``_layer{k}``).
LAYER_KEYS = ("nrc1", "dormant_fraction", "dead_fraction", "effective_rank", "srank")


def task_data(
    config: Config, target: TargetNetwork, task: int, n: int, purpose: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples (inputs, targets) of period ``task``; ``purpose`` "bits" (training)
    or "eval" picks the generator of their random bits."""
    x = task_inputs(config.seed, task, n, config.inputs, config.flipping_bits, config.flip, purpose)
    return x, target(x)


def train_period(engine: Engine, x: torch.Tensor, y: torch.Tensor) -> OnlineStats:
    """One prequential pass of ``engine`` (the squared error), one sample per step, in
    order: its ``loss`` is the mean squared error of the predictions made before each
    update (remedies' loss terms are trained on, not counted); ``extra`` the remedies'
    counts (``cbp_units_replaced``)."""
    return engine.train(x, y, torch.arange(len(x), device=x.device))


def measure(model: MLP, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Regression collapse and plasticity metrics on (x, y), in eval mode, without autograd.

    NRC1-3 of the penultimate features h with the head's weight and the targets
    (:func:`~plasticollapse.metrics.regression.regression_collapse_metrics`); unit and rank
    statistics (:class:`~plasticollapse.metrics.plasticity.UnitStatistics`) of h and of
    every hidden ReLU layer, and NRC1 of each layer's activations (their distance to their
    top-n principal subspace). With one target NRC3 is 0 for any network (a 1 x 1 matrix
    normalised is 1): it says something only for ``outputs >= 2``.
    """
    from plasticollapse.metrics.plasticity import (
        UnitStatistics,
        capture_activations,
        eval_mode,
        weight_magnitude,
    )
    from plasticollapse.metrics.regression import nrc1, regression_collapse_metrics

    n_targets = y.shape[1]
    layers = capture_activations(model, x)
    with eval_mode(model), torch.no_grad():
        h = model.features(x)
        out = {"eval_loss": float(F.mse_loss(model.classifier(h), y))}
    out.update(regression_collapse_metrics(h, model.classifier.weight, y))
    stats = UnitStatistics()
    stats.update(h)
    out.update(stats.compute())
    for k, a in enumerate(layers, start=1):
        layer = UnitStatistics()
        layer.update(a)
        values = {**layer.compute(), "nrc1": nrc1(a, min(n_targets, a.shape[1]))}
        out.update({f"{key}_layer{k}": values[key] for key in LAYER_KEYS})
    out["weight_magnitude"] = weight_magnitude(model)
    return out


def retrained_loss(
    config: Config, model: nn.Module, task: int, x: torch.Tensor, y: torch.Tensor
) -> float:
    """The online loss of a freshly initialised network (plain SGD, same lr) on the period."""
    from plasticollapse.remedies.functional import fresh_like

    fresh = fresh_like(model, generator_for(config.seed, "retrained", task))
    return train_period(learner_engine(config, fresh, ()), x, y).loss


def learner_engine(config: Config, model: nn.Module, remedies: Sequence[Remedy]) -> Engine:
    """The engine that trains ``model`` one sample per step on the squared error: the
    reference engine, or the compiled batch-1 engine under ``engine="fast"``."""
    from plasticollapse.training import make_engine

    return make_engine(config.engine, model, config.lr, 1, remedies, loss="squared_error")


class BitflipStream:
    """The flip periods as :func:`~plasticollapse.training.loop.run_online` trains them."""

    def __init__(self, config: Config, model: MLP, device: torch.device):
        self.config, self.model, self.device, self.tasks = config, model, device, config.tasks
        self.target = target_network(
            config.seed, config.inputs, config.target_hidden, config.outputs, config.beta
        )

    def data(self, task: int, n: int, purpose: str) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = task_data(self.config, self.target, task, n, purpose)
        return x.to(self.device), y.to(self.device)

    def task(self, t: int) -> FlipPeriod:
        return FlipPeriod(self, t)

    def record(self, stats: OnlineStats) -> tuple[int, int, float]:
        return (stats.correct, stats.count, stats.loss_sum)

    def postfix(self, row: dict[str, Any]) -> dict[str, str]:
        return {"task": str(row["task"]), "mse": f"{row['loss']:.3g}"}


class FlipPeriod:
    """Period t: ``flip_after`` fresh samples in one pass, one sample per step, in order;
    remedies and probes see, and measurements use, its ``eval_samples`` evaluation inputs."""

    columns = None
    passes = 1

    def __init__(self, stream: BitflipStream, index: int):
        config = stream.config
        self.stream, self.index = stream, index
        self.x, self.y = stream.data(index, config.flip_after, "bits")
        self.x_eval, self.y_eval = stream.data(index, config.eval_samples, "eval")

    def order(self, epoch: int) -> torch.Tensor:
        return torch.arange(len(self.x), device=self.x.device)

    def remedy_inputs(self) -> torch.Tensor:
        return self.x_eval

    def started(self) -> dict[str, Any]:
        from plasticollapse.metrics.trainability import plasticity_score

        config = self.stream.config
        if not config.probe_steps:
            return {}
        model = self.stream.model
        return plasticity_score(
            model, self.x_eval, self.y_eval, config.probe_steps, config.lr, F.mse_loss
        )

    def stop_after_pass(self) -> bool:
        return False

    def training_keys(self, records: list[tuple[int, int, float]], epoch: int) -> dict[str, Any]:
        (_, count, loss_sum) = records[-1]
        return {"step": (self.index + 1) * self.stream.config.flip_after, "loss": loss_sum / count}

    def measured(self, row: dict[str, Any]) -> dict[str, Any]:
        config, model, out = self.stream.config, self.stream.model, {}
        if config.retrained:
            out["retrained_loss"] = retrained_loss(config, model, self.index, self.x, self.y)
            out["retrained_gap"] = row["loss"] - out["retrained_loss"]
        if is_measured(config, self.index):
            out.update(measure(model, self.x_eval, self.y_eval))
        if config.forgetting:
            x0, y0 = self.stream.data(0, config.eval_samples, "eval")
            with torch.no_grad():
                out["task0_eval_loss"] = float(F.mse_loss(model(x0), y0))
        return out


def run(config: Config, folder: RunFolder, callbacks: Iterable[Callback] = ()) -> dict[str, Any]:
    """Train online over ``config.tasks`` flip periods, resuming from ``folder``'s checkpoint;
    append one row per period (keys in the module docstring); return the summary."""
    from plasticollapse.models import MLP

    set_threads(config.threads)
    device = resolve_device(config.device)
    seed_everything(config.seed)  # fixes the initialisation
    model = MLP(config.inputs, config.hidden, config.outputs).to(device)
    remedies = build_remedies(config)
    context = RemedyContext(seed=config.seed, num_classes=config.outputs)
    for remedy in remedies:  # before a checkpoint loads: L2 Init keeps theta_0
        remedy.bind(model, context)
    state = restore(folder, model, remedies)
    learner = Learner(model, remedies, learner_engine(config, model, remedies))
    stream = BitflipStream(config, model, device)  # its target: its own generator
    done = run_online(
        stream, learner, state, folder, callbacks, rules=RULES, progress=config.progress
    )
    return summarise_run(done.rows, done.seconds, done.divergence)


#: Plasticity loss as an error (``pl = loss_t - loss_0``), a checkpoint after every period.
RULES = LoopRules(plasticity=PlasticityLoss("loss", higher_is_better=False))
