"""Setup B: warm-starting, with neural collapse and a plasticity probe at every checkpoint.

The protocol (the authors' warm-start code, with measurements in eval mode)::

    D      = the training set (CIFAR-10: 50k images, normalised with CIFAR10_MEAN/STD)
    W      = a seeded random warmup_fraction of D (the paper: 50%, 25k images)
    theta  = a fresh network (the seed fixes it)
    fresh probe: a copy of theta trained on D                -> fresh_full_test_acc (summary)
    for warm-up epoch e = 1 .. warmup_epochs:
        one SGD epoch over W in a fresh random order, with the scheme's warm-up loss
        every checkpoint_every epochs (e = 5, 10, ..., as the authors; no epoch-0 row, the
        fresh probe is its baseline):
            redo scheme: recycle the tau-dormant units of theta (part of its warm-up)
            measure theta on W in eval mode: NC1..NC4, accuracy, feature ranks, dormancy,
                weight magnitude; and its test accuracy
            probe: a copy of theta (shrink_perturb scheme: shrunk and perturbed) trained on
                D with plain SGD (same lr and momentum, no weight decay, no regulariser)
                until an epoch's online training accuracy reaches finetune_target_acc, at
                most finetune_max_epochs; record its test accuracy
            append one row to metrics.jsonl

The probe's stopping rule is the authors': the accuracy counted online during the epoch
(each batch scored by the network before its update, in train mode), not a separate pass.

Schemes (warm-up only; probes are always plain SGD):

- ``plain``: cross-entropy.
- ``shrink_perturb``: the warm-up is plain; each probe starts from
  ``shrink * theta + perturb * theta_fresh`` (Ash & Adams 2020; 0.6 and 0.01).
- ``nc1_reg``: L = CE - nc1_lambda * min(NC1_batch, nc1_clip) (the paper's regulariser).
- ``weight_decay``: SGD weight decay during warm-up; ``weight_decay`` unset means 0.01
  (the paper studies 0.001, 0.01 and 0.1). For every other scheme an unset weight_decay
  means 0, and a value given explicitly applies to that scheme's warm-up too.
- ``l2_init``: L = CE + l2_init_lambda / 2 * ||theta - theta_0||^2 (Kumar et al. 2023).
- ``redo``: ReDo resets (Sokar et al. 2023) of units with dormancy score <= redo_tau at
  every checkpoint; MLPs only (all hidden layers).

Rows describe the warm-up network at that epoch (for ``redo``, after the checkpoint's
reset, which belongs to its warm-up; for ``shrink_perturb``, before shrinking, which belongs
to the probe only).

Data: CIFAR-10 is normalised once on the device; MNIST, Fashion-MNIST and digits stay in
[0, 1], as Setup A. With ``augment``, warm-up and probe batches (never measurements) get a
random crop of the 4-pixel zero-padded image and a horizontal flip with probability 1/2,
drawn per sample on the device. ``train_samples`` (0 = all) keeps a fixed seeded subset of
the training set as D, for tests and quick runs.

Randomness: ``seed_everything(seed)`` fixes the initialisation; every other draw (the
warm-up subset, each epoch's order and augmentation, each probe epoch, S&P's and ReDo's
fresh weights) comes from a generator seeded by a hash of ``(seed, purpose, epoch, ...)``.
So checkpoints store no generator state and a resumed run draws exactly what an
uninterrupted one would.

Checkpoints: after every checkpoint's measurements, after each probe epoch (the probe's own
model and optimizer nested under ``probe``), and after every row. A kill therefore loses at
most ``checkpoint_every`` warm-up epochs or one probe epoch, and the resumed run writes the
rows an uninterrupted run would (exactly, on CPU).

Divergence: a warm-up epoch whose mean loss is non-finite or above 1e4 in magnitude, or a
non-finite NC1, appends a row ``{"epoch", "diverged": true, "diverged_metric",
"diverged_value"}`` and ends the run with summary status ``diverged``.

Speed: whole datasets live on the device as tensors, batches are slices through a
permutation (no DataLoader); on CUDA the ResNet runs channels_last with bf16 autocast
(``amp``) for training and test accuracy. Collapse is measured in float32: bf16 rounding of
the features (about 0.4% of their size) would swamp the small within-class spread of a
collapsed network.

User metrics plug in as callbacks: ``run(config, folder, callbacks=[f])`` calls
``f(epoch, model, row)`` after each checkpoint's measurements (before the probe); it may add
keys to ``row`` or return a dict of them.

Example::

    plasticollapse warmstart --config configs/paper/warmstart_cifar10.toml
    plasticollapse warmstart --config configs/quick/warmstart_digits.toml --seeds 0 1
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from plasticollapse.config import ConfigError
from plasticollapse.experiments.common import finite, fmt, mean_finite, pearson
from plasticollapse.results import DivergenceError, RunFolder, check_finite, progress_bar
from plasticollapse.runtime import (
    fixed_subset,
    generator_for,
    resolve_device,
    seed_everything,
    set_threads,
)

NAME = "warmstart"

SCHEMES = ("plain", "shrink_perturb", "nc1_reg", "weight_decay", "l2_init", "redo")
DATASETS = ("cifar10", "fashion-mnist", "mnist", "digits")
#: Decay of the ``weight_decay`` scheme when the ``weight_decay`` field is left unset.
DEFAULT_SCHEME_WEIGHT_DECAY = 0.01
#: A warm-up epoch whose mean loss exceeds this in magnitude counts as diverged.
LOSS_LIMIT = 1e4
#: Batch size of evaluation passes (no gradients, so larger than training batches).
EVAL_BATCH = 1024

#: ``callback(epoch, model, row)``: may add keys to ``row`` in place or return a dict of them.
Callback = Callable[[int, nn.Module, dict[str, Any]], "Mapping[str, Any] | None"]


@dataclasses.dataclass(frozen=True)
class Config:
    """One warm-start run. Defaults are the paper's protocol (ResNet-18, CIFAR-10, plain).

    ``width`` is the ResNet's stem width (64: the paper), ``hidden`` the MLP's layer widths.
    ``weight_decay`` is the warm-up's SGD weight decay: unset (none) means 0, or 0.01 for
    the ``weight_decay`` scheme; probes never decay. ``amp`` (bf16 autocast) and
    channels_last apply on CUDA only.
    """

    dataset: Literal["cifar10", "fashion-mnist", "mnist", "digits"] = "cifar10"
    data_root: str | None = None
    download: bool = False
    model: Literal["resnet18", "mlp"] = "resnet18"
    width: int = 64
    maxpool: bool = True
    hidden: tuple[int, ...] = (100, 100, 100)
    warmup_fraction: float = 0.5
    warmup_epochs: int = 350
    checkpoint_every: int = 5
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float | None = None
    batch_size: int = 128
    augment: bool = False
    finetune_target_acc: float = 0.99
    finetune_max_epochs: int = 100
    scheme: Literal["plain", "shrink_perturb", "nc1_reg", "weight_decay", "l2_init", "redo"] = (
        "plain"
    )
    shrink: float = 0.6
    perturb: float = 0.01
    nc1_lambda: float = 0.05
    nc1_clip: float = 200.0
    l2_init_lambda: float = 0.01
    redo_tau: float = 0.1
    train_samples: int = 0
    seed: int = 7
    out: str = "runs/warmstart"
    device: str = "auto"
    amp: bool = True
    threads: int = 0
    progress: bool = True

    def __post_init__(self):
        # Lists from JSON/TOML become the tuple the dataclass declares (it is frozen).
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for name, allowed in (
            ("dataset", DATASETS),
            ("model", ("resnet18", "mlp")),
            ("scheme", SCHEMES),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}"
                )
        if not 0 < self.warmup_fraction <= 1:
            raise ConfigError(f"warmup_fraction must be in (0, 1], got {self.warmup_fraction}")
        for name in ("warmup_epochs", "checkpoint_every", "batch_size", "finetune_max_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {getattr(self, name)}")
        if self.checkpoint_every > self.warmup_epochs:
            raise ConfigError(
                f"checkpoint_every ({self.checkpoint_every}) exceeds warmup_epochs "
                f"({self.warmup_epochs}): the run would measure nothing"
            )
        if self.model == "resnet18" and self.width < 1:
            raise ConfigError(f"width must be >= 1, got {self.width}")
        if self.model == "mlp" and (not self.hidden or min(self.hidden) < 1):
            raise ConfigError(f"hidden must be one or more widths >= 1, got {self.hidden}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a finite number > 0, got {self.lr}")
        if not 0 < self.finetune_target_acc <= 1:
            raise ConfigError(
                f"finetune_target_acc must be in (0, 1], got {self.finetune_target_acc}"
            )
        for name in ("momentum", "shrink", "perturb", "nc1_lambda", "l2_init_lambda", "redo_tau"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.nc1_clip <= 0:
            raise ConfigError(f"nc1_clip must be > 0, got {self.nc1_clip}")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0 (or none), got {self.weight_decay}")
        if self.scheme == "weight_decay" and self.weight_decay == 0:
            raise ConfigError(
                "scheme 'weight_decay' needs weight_decay > 0 (the paper: 0.001, 0.01, 0.1), "
                "or leave weight_decay unset for 0.01"
            )
        if self.scheme == "redo" and self.model != "mlp":
            raise ConfigError("scheme 'redo' resets MLP units only; use --model mlp")
        for name in ("train_samples", "threads", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def warmup_weight_decay(self) -> float:
        """The SGD weight decay of the warm-up (see the class docstring)."""
        if self.weight_decay is not None:
            return self.weight_decay
        return DEFAULT_SCHEME_WEIGHT_DECAY if self.scheme == "weight_decay" else 0.0


def run_label(config: Config) -> str:
    """``plain``, ``shrink_perturb``, ``weight_decay_wd0.01``, ``plain_wd0.001``, ..."""
    label = config.scheme
    if config.warmup_weight_decay > 0:
        label += f"_wd{config.warmup_weight_decay:g}"
    return label


# --------------------------------------------------------------------------- data and model


@dataclasses.dataclass
class Tensors:
    """The run's data on the device: D (train), W (warm-up subset of D), the test set."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    warmup_x: torch.Tensor
    warmup_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int


def load_tensors(config: Config, device: torch.device) -> Tensors:
    """Load the dataset, take the subsets, normalise (CIFAR-10) and move it to the device."""
    from plasticollapse.data import CIFAR10_MEAN, CIFAR10_STD, load_dataset

    data = load_dataset(config.dataset, root=config.data_root, download=config.download)
    x, y = data.train_x, data.train_y
    subset = fixed_subset(config.seed, "train_samples", len(y), config.train_samples)
    if subset is not None:
        x, y = x[subset], y[subset]
    n_warmup = max(1, round(config.warmup_fraction * len(y)))
    warmup = torch.randperm(len(y), generator=generator_for(config.seed, "warmup_split"))
    warmup = warmup[:n_warmup].sort().values

    memory_format = (
        torch.channels_last
        if device.type == "cuda" and config.model == "resnet18"
        else torch.contiguous_format
    )

    def prepare(images: torch.Tensor) -> torch.Tensor:
        images = images.to(device, dtype=torch.float32)
        if config.dataset == "cifar10":
            mean = torch.tensor(CIFAR10_MEAN, device=device).view(1, -1, 1, 1)
            std = torch.tensor(CIFAR10_STD, device=device).view(1, -1, 1, 1)
            images = (images - mean) / std
        return images.contiguous(memory_format=memory_format)

    train_x, train_y = prepare(x), y.to(device)
    warmup = warmup.to(device)
    return Tensors(
        train_x=train_x,
        train_y=train_y,
        warmup_x=train_x[warmup].contiguous(memory_format=memory_format),
        warmup_y=train_y[warmup],
        test_x=prepare(data.test_x),
        test_y=data.test_y.to(device),
        num_classes=data.num_classes,
    )


def build_model(config: Config, tensors: Tensors) -> nn.Module:
    """The run's network, initialised from the global RNG (seeded by the caller)."""
    from plasticollapse.models import MLP, ResNet18

    channels = tensors.train_x.shape[1]
    if config.model == "mlp":
        input_dim = int(np.prod(tensors.train_x.shape[1:]))
        return MLP(input_dim, config.hidden, tensors.num_classes)
    return ResNet18(
        tensors.num_classes, in_channels=channels, width=config.width, maxpool=config.maxpool
    )


# --------------------------------------------------------------------------- training


def autocast(config: Config, device: torch.device):
    """bf16 autocast on CUDA when ``amp``; a no-op elsewhere."""
    if config.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def augment_batch(
    x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, pad: int = 4
) -> torch.Tensor:
    """Per-sample random crop of the zero-padded image and horizontal flip, on the device.

    ``out[n, :, i, j] = padded[n, :, dy_n + i, dx_n + j']`` with ``j' = W-1-j`` where
    ``flip_n``; offsets ``dy, dx`` in ``[0, 2 pad]``. (Padding is zero in the normalised
    space, i.e. the dataset's mean colour for CIFAR-10.)
    """
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = dy[:, None] + torch.arange(h, device=x.device)
    cols = dx[:, None] + torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    # Four broadcast index tensors gather straight into a standard (n, c, h, w) layout.
    out = padded[
        torch.arange(n, device=x.device)[:, None, None, None],
        torch.arange(c, device=x.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
    return out.contiguous(memory_format=_memory_format(x))


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1:
        return torch.channels_last
    return torch.contiguous_format


#: ``loss_fn(logits, features, labels) -> loss``: a scheme's training objective.
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(logits: torch.Tensor, features: torch.Tensor, labels: torch.Tensor):
    return F.cross_entropy(logits.float(), labels)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    generator: torch.Generator,
    config: Config,
    loss_fn: LossFn = cross_entropy,
) -> tuple[float, float]:
    """One SGD epoch over ``(x, y)`` in the order drawn from ``generator``.

    Returns ``(mean loss, online accuracy)``: each batch is scored by the network before
    its own update (train mode), and the counts stay on the device until the epoch ends, so
    the loop never waits for the GPU.
    """
    device = x.device
    n = len(y)
    order = torch.randperm(n, generator=generator).to(device)
    if config.augment:
        pad = 4
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(device)
        flip = (torch.rand(n, generator=generator) < 0.5).to(device)
    model.train()
    correct = torch.zeros((), dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, n, config.batch_size):
        idx = order[start : start + config.batch_size]
        xb, yb = x[idx], y[idx]
        if config.augment:
            part = slice(start, start + len(idx))
            xb = augment_batch(xb, dy[part], dx[part], flip[part], pad)
        with autocast(config, device):
            features = model.features(xb)
            logits = model.classifier(features)
        loss = loss_fn(logits, features, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        correct += (logits.argmax(1) == yb).sum()
        loss_sum += loss.detach().double() * len(idx)
    return float(loss_sum) / n, int(correct) / n


@torch.no_grad()
def test_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: Config) -> float:
    """Accuracy in eval mode (BatchNorm uses its running statistics); restores the mode."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for start in range(0, len(y), EVAL_BATCH):
        with autocast(config, x.device):
            logits = model(x[start : start + EVAL_BATCH])
        correct += (logits.argmax(1) == y[start : start + EVAL_BATCH]).sum()
    model.train(was_training)
    return int(correct) / len(y)


def warmup_loss_fn(config: Config, model: nn.Module, num_classes: int) -> LossFn:
    """The scheme's warm-up objective (weight decay lives in the optimizer instead)."""
    from plasticollapse import remedies

    if config.scheme == "nc1_reg":

        def nc1_reg(logits, features, labels):
            loss, _, _ = remedies.nc1_regularised_loss(
                logits, features, labels, num_classes, config.nc1_lambda, config.nc1_clip
            )
            return loss

        return nc1_reg
    if config.scheme == "l2_init":
        # The network is initialised before this is called: these are theta_0.
        initial = [p.detach().clone() for p in model.parameters()]

        def l2_init(logits, features, labels):
            penalty = remedies.l2_init_penalty(model, initial, config.l2_init_lambda)
            return cross_entropy(logits, features, labels) + penalty

        return l2_init
    return cross_entropy


def sgd(model: nn.Module, config: Config, weight_decay: float) -> torch.optim.SGD:
    return torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=weight_decay
    )


# --------------------------------------------------------------------------- the probe


def finetune(
    model: nn.Module,
    tensors: Tensors,
    config: Config,
    tag: int | str,
    resume: Mapping[str, Any] | None = None,
    save: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The plasticity probe: train ``model`` (a copy, changed in place) on the full training
    set with plain SGD until an epoch's online accuracy reaches ``finetune_target_acc``, at
    most ``finetune_max_epochs`` epochs; then its test accuracy.

    ``tag`` (``"fresh"`` or the warm-up epoch) seeds the probe's sample orders. ``resume``
    is a state ``save`` was given: ``{"epochs", "train_acc", "model", "optimizer"}``;
    ``save`` is called after every epoch but the last.

    Returns ``{"full_test_acc", "finetune_epochs", "finetune_train_acc"}``.
    """
    optimizer = sgd(model, config, weight_decay=0.0)
    epochs, train_acc = 0, 0.0
    if resume is not None and "model" in resume:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        epochs, train_acc = resume["epochs"], resume["train_acc"]
    bar = (
        progress_bar(
            total=config.finetune_max_epochs, initial=epochs, desc=f"probe {tag}", leave=False
        )
        if config.progress
        else None
    )
    while epochs < config.finetune_max_epochs and train_acc < config.finetune_target_acc:
        generator = generator_for(config.seed, "probe", tag, epochs)
        _, train_acc = train_epoch(
            model, optimizer, tensors.train_x, tensors.train_y, generator, config
        )
        epochs += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train_acc=f"{train_acc:.3f}")
        done = epochs >= config.finetune_max_epochs or train_acc >= config.finetune_target_acc
        if save is not None and not done:
            save(
                {
                    "epochs": epochs,
                    "train_acc": train_acc,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                }
            )
    if bar is not None:
        bar.close()
    return {
        "full_test_acc": test_accuracy(model, tensors.test_x, tensors.test_y, config),
        "finetune_epochs": epochs,
        "finetune_train_acc": train_acc,
    }


def probe_start(model: nn.Module, config: Config, epoch: int) -> nn.Module:
    """The network a checkpoint's probe trains: a copy of the warm-up network, shrunk and
    perturbed for the ``shrink_perturb`` scheme (fresh weights seeded by the epoch)."""
    from plasticollapse.remedies import shrink_perturb

    start = copy.deepcopy(model)
    if config.scheme == "shrink_perturb":
        generator = generator_for(config.seed, "shrink_perturb", epoch)
        shrink_perturb(start, config.shrink, config.perturb, generator=generator)
    return start


# --------------------------------------------------------------------------- measuring


def measure(model: nn.Module, tensors: Tensors, config: Config) -> dict[str, Any]:
    """Collapse and plasticity of the warm-up network on the warm-up set, in eval mode and
    float32, with the warm-up set's accuracy from the same forward pass, and test accuracy.

    ``measure_model``'s ``accuracy``/``loss`` become ``warmup_train_acc``/``warmup_train_loss``.
    """
    from plasticollapse.measure import measure_model

    metrics = measure_model(
        model, tensors.warmup_x, tensors.warmup_y, tensors.num_classes, batch_size=EVAL_BATCH
    )
    renamed = {"accuracy": "warmup_train_acc", "loss": "warmup_train_loss"}
    row = {renamed.get(k, k): float(v) for k, v in metrics.items()}
    row["warmup_test_acc"] = test_accuracy(model, tensors.test_x, tensors.test_y, config)
    return row


# --------------------------------------------------------------------------- the run


def run(config: Config, folder: RunFolder, callbacks: Iterable[Callback] = ()) -> dict[str, Any]:
    """Warm up, measure and probe every ``checkpoint_every`` epochs, resuming from ``folder``.

    Each checkpoint appends one row::

        epoch, warmup_loss (mean training objective of the epoch), warmup_train_acc,
        warmup_train_loss, warmup_test_acc, every collapse and plasticity key of
        measure_model (nc1, nc1_quotient, cdnv, nc2_*, nc3_*, nc4_*, dormant_fraction,
        effective_rank, srank, stable_rank, weight_magnitude, ...), redo_units_reset
        (redo), callbacks' keys, full_test_acc, finetune_epochs, finetune_train_acc, seconds

    ``seconds`` is the run's wall time so far (summed over resumes). Returns the summary
    (:func:`summarise_run`).
    """
    from plasticollapse.remedies import redo_reset

    set_threads(config.threads)
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    tensors = load_tensors(config, device)
    seed_everything(config.seed)  # fixes the initialisation below
    model = build_model(config, tensors).to(device)
    if device.type == "cuda" and config.model == "resnet18":
        model = model.to(memory_format=torch.channels_last)
    initial = copy.deepcopy(model)  # theta_0: the fresh probe's start
    loss_fn = warmup_loss_fn(config, model, tensors.num_classes)
    optimizer = sgd(model, config, config.warmup_weight_decay)
    callbacks = list(callbacks)

    state: dict[str, Any] = folder.load_checkpoint() or {
        "epoch": 0,  # warm-up epochs trained
        "fresh": None,  # the fresh-initialisation probe's result
        "probe": None,  # the probe in progress: tag, pending row, its own training state
        "seconds": 0.0,
    }
    if "model" in state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    clock = time.perf_counter()
    seconds_before = state["seconds"]

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - clock

    def checkpoint(probe: dict[str, Any] | None = None) -> None:
        state.update(probe=probe, seconds=elapsed())
        folder.save_checkpoint(
            {**state, "model": model.state_dict(), "optimizer": optimizer.state_dict()}
        )

    def run_probe(start: nn.Module, tag: int | str, row: dict | None) -> dict[str, Any]:
        pending = state["probe"] if state["probe"] and state["probe"]["tag"] == tag else None

        def save(probe_state: dict[str, Any]) -> None:
            checkpoint({"tag": tag, "row": row, **probe_state})

        return finetune(start, tensors, config, tag, resume=pending, save=save)

    # The fresh-initialisation probe: the warm-start gap's baseline (the authors had none).
    if state["fresh"] is None:
        state["fresh"] = run_probe(initial, "fresh", None)
        checkpoint()
    del initial

    bar = (
        progress_bar(total=config.warmup_epochs, initial=state["epoch"], desc=folder.path.name)
        if config.progress
        else None
    )
    divergence: DivergenceError | None = None
    try:
        while True:
            pending = state["probe"]
            if pending is not None and pending["tag"] == state["epoch"]:
                # Resumed inside a checkpoint's probe: its row is measured, the warm-up
                # network is the one at that epoch.
                epoch, row = state["epoch"], pending["row"]
            elif state["epoch"] >= config.warmup_epochs:
                break
            else:
                epoch = state["epoch"] + 1
                generator = generator_for(config.seed, "warmup", epoch)
                loss, _ = train_epoch(
                    model, optimizer, tensors.warmup_x, tensors.warmup_y, generator, config, loss_fn
                )
                state["epoch"] = epoch
                check_finite(epoch, limit=LOSS_LIMIT, loss=loss)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3g}")
                if epoch % config.checkpoint_every != 0:
                    continue
                row = {"epoch": epoch, "warmup_loss": loss}
                if config.scheme == "redo":
                    counts = redo_reset(
                        model,
                        tensors.warmup_x,
                        config.redo_tau,
                        generator=generator_for(config.seed, "redo", epoch),
                        optimizer=optimizer,
                    )
                    row["redo_units_reset"] = sum(counts)
                row.update(measure(model, tensors, config))
                check_finite(epoch, nc1=row["nc1"])
                for callback in callbacks:
                    extra = callback(epoch, model, row)
                    if extra:
                        row.update(extra)
                checkpoint({"tag": epoch, "row": row})

            row = {**row, **run_probe(probe_start(model, config, epoch), epoch, row)}
            row["seconds"] = elapsed()
            folder.append_metrics(row)
            checkpoint()
            if bar is not None:
                bar.set_postfix(nc1=f"{row['nc1']:.3g}", full_test=f"{row['full_test_acc']:.3f}")
    except DivergenceError as e:
        divergence = e
        folder.append_metrics(
            {
                "epoch": e.step,
                "diverged": True,
                "diverged_metric": e.metric,
                "diverged_value": e.value,
                "seconds": elapsed(),
            }
        )
    finally:
        if bar is not None:
            bar.close()
    return summarise_run(folder.read_metrics(), state["fresh"], elapsed(), divergence)


# --------------------------------------------------------------------------- summaries


def summarise_run(
    rows: list[dict[str, Any]],
    fresh: Mapping[str, Any] | None,
    seconds: float,
    divergence: DivergenceError | None = None,
) -> dict[str, Any]:
    """summary.json: the fresh-init baseline, final values, correlations, status.

    ``r_nc1_full_test_acc`` is the Pearson r of NC1 vs full-data test accuracy across this
    run's checkpoints (the paper: +0.85 to +0.89), ``r_nc1_full_test_acc_first100`` the same
    over warm-up epochs <= 100 (+0.88 to +0.92). ``warmstart_gap`` is the last checkpoint's
    full-data test accuracy minus the fresh network's; ``mean_warmstart_gap`` the mean of
    that difference over checkpoints.
    """
    measured = [r for r in rows if r.get("full_test_acc") is not None]
    early = [r for r in measured if r["epoch"] <= 100]
    fresh = fresh or {}
    fresh_acc = fresh.get("full_test_acc")
    last = measured[-1] if measured else {}

    def gap(acc: Any) -> float | None:
        return acc - fresh_acc if finite(acc) and finite(fresh_acc) else None

    gaps = [g for g in (gap(r["full_test_acc"]) for r in measured) if g is not None]
    summary: dict[str, Any] = {
        "status": "diverged" if divergence is not None else "complete",
        "checkpoints": len(measured),
        "fresh_full_test_acc": fresh_acc,
        "fresh_finetune_epochs": fresh.get("finetune_epochs"),
        "fresh_finetune_train_acc": fresh.get("finetune_train_acc"),
        "final_epoch": last.get("epoch"),
        "final_nc1": last.get("nc1"),
        "final_full_test_acc": last.get("full_test_acc"),
        "final_warmup_test_acc": last.get("warmup_test_acc"),
        "warmstart_gap": gap(last.get("full_test_acc")),
        "mean_warmstart_gap": float(np.mean(gaps)) if gaps else None,
        "r_nc1_full_test_acc": pearson(
            [r["nc1"] for r in measured], [r["full_test_acc"] for r in measured]
        ),
        "r_nc1_full_test_acc_first100": pearson(
            [r["nc1"] for r in early], [r["full_test_acc"] for r in early]
        ),
        "seconds": seconds,
    }
    if divergence is not None:
        summary["diverged"] = {
            "epoch": divergence.step,
            "metric": divergence.metric,
            "value": str(divergence.value),
        }
    return summary


def summarise_study(specs: Sequence[Any], max_rows: int = 8) -> str:
    """A text table per scheme (mean over seeds): NC1, warm-up and full-data test accuracy
    at (up to ``max_rows``) checkpoints, the gap to a fresh network, and run times."""
    from plasticollapse.config import from_dict
    from plasticollapse.experiments import run_status

    groups: dict[str, list[tuple[dict, list[dict]]]] = {}
    lines = [f"{len(specs)} warmstart run(s):"]
    for spec in specs:
        config = from_dict(Config, spec.config)
        folder = RunFolder(spec.folder)
        summary = folder.read_summary()
        rows = [r for r in folder.read_metrics() if r.get("full_test_acc") is not None]
        status = summary.get("status", "?") if summary else run_status(spec)
        lines.append(f"  {spec.folder}  {status}  ({len(rows)} checkpoints)")
        if summary is not None:
            groups.setdefault(run_label(config), []).append((summary, rows))

    for label, runs in groups.items():
        summaries = [s for s, _ in runs]

        def across(key: str, summaries=summaries) -> float:
            return mean_finite([s.get(key) for s in summaries])

        fresh = across("fresh_full_test_acc")
        lines.append(
            f"{label}: {len(runs)} seed(s), fresh-init full-data test acc {fmt(fresh)} "
            f"(in {fmt(across('fresh_finetune_epochs'), '.1f')} epochs), "
            f"r(NC1, full acc) {fmt(across('r_nc1_full_test_acc'))}, "
            f"{fmt(across('seconds'), '.0f')} s/run"
        )
        epochs = sorted({r["epoch"] for _, rows in runs for r in rows})
        if len(epochs) > max_rows:
            picks = np.linspace(0, len(epochs) - 1, max_rows).round().astype(int)
            epochs = [epochs[i] for i in sorted(set(picks))]
        lines.append(
            f"  {'epoch':>6} {'NC1':>9} {'warmup acc':>10} {'warmup test':>11} "
            f"{'full test':>9} {'gap':>7} {'ft epochs':>9}"
        )
        for epoch in epochs:
            at = [r for _, rows in runs for r in rows if r["epoch"] == epoch]

            def mean(key: str, at=at) -> float:
                return mean_finite([r.get(key) for r in at])

            full = mean("full_test_acc")
            lines.append(
                f"  {epoch:>6} {fmt(mean('nc1'), '.4g', 9)} "
                f"{fmt(mean('warmup_train_acc'), width=10)} "
                f"{fmt(mean('warmup_test_acc'), width=11)} {fmt(full, width=9)} "
                f"{fmt(full - fresh, '+.3f', 7)} {fmt(mean('finetune_epochs'), '.1f', 9)}"
            )
    return "\n".join(lines)


__all__ = [
    "NAME",
    "Config",
    "augment_batch",
    "finetune",
    "run",
    "run_label",
    "summarise_run",
    "summarise_study",
    "train_epoch",
]
