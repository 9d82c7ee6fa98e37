"""Warm-start training pieces: data on the device, the model, SGD epochs, the plasticity probe."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from plasticollapse.runs.folder import progress_bar
from plasticollapse.runs.runtime import (
    fixed_subset,
    generator_for,
)
from plasticollapse.studies.warmstart.config import EVAL_BATCH, Config

if TYPE_CHECKING:
    from plasticollapse.models import MLP, ResNet18
    from plasticollapse.remedies.base import Remedy

    #: The networks the study trains: each has ``features(x)`` and ``classifier``.
    Network = MLP | ResNet18

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


def build_model(config: Config, tensors: Tensors) -> Network:
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


class StepHooks:
    """Every per-step hook of the warm-up's remedies, called from here only.

    One training step is::

        logits, features, hidden = hooks.forward(model, xb)
        loss = hooks.objective(CE(logits, yb), logits, features, yb)
        (backward, optimizer.step())
        hooks.after_update(optimizer, step, hidden)

    ``forward`` gives the hidden activations (``forward_hidden``: the MLP's ReLU outputs)
    when a remedy reads them and the network has them; the ResNet has no such list, and
    the remedy that reads activations there (Continual Backprop on its layer pairs,
    :class:`~plasticollapse.remedies.pair_remedies.LayerPairContinualBackprop`) hooks the
    step's forward itself. Without remedies every call is plain SGD's.
    """

    def __init__(self, model: Network, remedies: Sequence[Remedy] = ()):
        self.model = model
        self.remedies = list(remedies)
        self.loss_terms = [r for r in self.remedies if "loss" in r.per_step_hooks()]
        self.after = [r for r in self.remedies if "after_step" in r.per_step_hooks()]
        self.hidden = any(r.needs_activations for r in self.remedies) and hasattr(
            model, "forward_hidden"
        )

    def forward(self, xb: torch.Tensor):
        """(logits, penultimate features, hidden activations or None) of a training batch."""
        if self.hidden:
            logits, hidden = cast("MLP", self.model).forward_hidden(xb)
            return logits, hidden[-1], hidden
        features = self.model.features(xb)
        return self.model.classifier(features), features, None

    def objective(self, loss, logits, features, labels):
        """``loss + sum_r remedy_r.loss(model, logits, features, labels)``."""
        for remedy in self.loss_terms:
            term = remedy.loss(self.model, logits, features, labels)
            if term is not None:
                loss = loss + term
        return loss

    def after_update(self, optimizer, step: int, hidden) -> None:
        """Each remedy's ``after_step`` (with the step's activations when it reads them)."""
        for remedy in self.after:
            if remedy.needs_activations:
                remedy.after_step(self.model, optimizer, step, hidden)
            else:
                remedy.after_step(self.model, optimizer, step)


def train_epoch(
    model: Network,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    generator: torch.Generator,
    config: Config,
    remedies: Sequence[Remedy] = (),
) -> tuple[float, float]:
    """One SGD epoch over ``(x, y)`` in the order drawn from ``generator``, minimising::

        L = CE(logits, y) + sum_r remedy_r.loss(model, logits, features, y)

    (the cross-entropy in float32, also under autocast), each remedy's ``after_step``
    following every update (:class:`StepHooks`). (Weight decay is the optimizer's.)
    Without remedies: plain SGD, as the probes train.

    Returns ``(mean L, online accuracy)``: each batch is scored by the network before its
    own update (train mode), and the counts stay on the device until the epoch ends, so the
    loop never waits for the GPU.
    """
    device = x.device
    n = len(y)
    hooks = StepHooks(model, remedies)
    order = torch.randperm(n, generator=generator).to(device)
    if config.augment:
        pad = 4
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(device)
        flip = (torch.rand(n, generator=generator) < 0.5).to(device)
    model.train()
    correct = torch.zeros((), dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for step, start in enumerate(range(0, n, config.batch_size)):
        idx = order[start : start + config.batch_size]
        xb, yb = x[idx], y[idx]
        if config.augment:
            part = slice(start, start + len(idx))
            xb = augment_batch(xb, dy[part], dx[part], flip[part], pad)
        with autocast(config, device):
            logits, features, hidden = hooks.forward(xb)
        loss = hooks.objective(F.cross_entropy(logits.float(), yb), logits, features, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        hooks.after_update(optimizer, step, hidden)
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


def sgd(model: nn.Module, config: Config, weight_decay: float) -> torch.optim.SGD:
    return torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=weight_decay
    )


# --------------------------------------------------------------------------- the probe


def finetune(
    model: Network,
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


def probe_start(model: Network, remedies: Sequence[Remedy], epoch: int) -> Network:
    """The network a checkpoint's probe trains: a copy of the warm-up network, changed by
    each remedy's ``at_probe_start`` (Shrink & Perturb shrinks and perturbs it). The copy
    carries none of the remedies' forward hooks (Continual Backprop's activation
    recorder): a probe is plain SGD."""
    from plasticollapse.remedies.layer_pairs import remove_recorder_hooks

    start = copy.deepcopy(model)
    remove_recorder_hooks(start)
    for remedy in remedies:
        remedy.at_probe_start(start, epoch)
    return start
