"""What a stream of classification tasks is: its data, and task t of it.

A study defines its stream as a class with ``task(t) -> StreamTask`` (and the attributes of
:class:`Stream`); :func:`plasticollapse.studies.streams.run.run_stream` trains and measures
any such stream. Every random draw of a stream comes from
``generator_for(seed, purpose, task)``, so a seed fixes the whole stream and a resumed run
redraws exactly what an uninterrupted one would.

Tasks index into shared tensors (``x[train]`` with labels ``y[train]``) rather than
copying them: the fast engine caches its sparse rows of ``x`` across calls, so a task that
reuses the same ``x`` costs no rebuild.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from plasticollapse.runs.runtime import fixed_subset, generator_for
from plasticollapse.studies.streams.config import StreamConfig


@dataclass(frozen=True)
class StreamData:
    """The dataset a stream is made of: flattened inputs (float32) and true labels."""

    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_dim(self) -> int:
        return int(self.x.shape[1])


@dataclass(frozen=True)
class StreamTask:
    """Task ``index`` of a stream.

    Its training samples are ``x[train]`` with labels ``y[train]`` (``y`` has one label per
    row of ``x``: the task's labelling of every row); its held-out split is
    ``x_test[test]`` with labels ``y_test[test]``; ``classes`` (sorted) are the classes the
    task presents, which a class-incremental network's head is restricted to.
    """

    index: int
    x: torch.Tensor
    y: torch.Tensor
    train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    test: torch.Tensor
    classes: torch.Tensor

    def training(self, idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels) of the task's training samples (``idx``: positions among them)."""
        rows = self.train if idx is None else self.train[idx]
        return self.x[rows], self.y[rows]

    def held_out(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels) of the task's held-out split."""
        return self.x_test[self.test], self.y_test[self.test]


class Stream(Protocol):
    """A stream of tasks over one dataset."""

    data: StreamData
    #: True when the network's head must be restricted to each task's classes (the logits
    #: of classes not yet presented are masked out of the softmax).
    masks_absent_classes: bool

    def task(self, t: int) -> StreamTask:
        """Task ``t`` (0-based), drawn from the run's seed alone."""


def load_stream_data(config: StreamConfig, device: torch.device) -> StreamData:
    """The dataset's train and test splits, flattened, scaled as ``config.inputs`` says,
    optionally subsampled (``train_samples``, ``test_samples``: seeded subsets), on ``device``."""
    from plasticollapse.data import load_dataset

    data = load_dataset(config.dataset, root=config.data_root, download=config.download)
    splits = []
    for split, size in (("train", config.train_samples), ("test", config.test_samples)):
        x, y = data.flat(split)
        subset = fixed_subset(config.seed, f"{split}_samples", len(y), size)
        if subset is not None:
            x, y = x[subset], y[subset]
        if config.inputs == "symmetric":  # UPGD's Normalize((0.5,), (0.5,))
            x = (x - 0.5) / 0.5
        splits.append((x.contiguous().to(device), y.to(device)))
    (x, y), (x_test, y_test) = splits
    return StreamData(x, y, x_test, y_test, num_classes=data.num_classes)


def check_size(name: str, size: int, data: StreamData, dataset: str) -> None:
    """A stream field asking for more training samples than the split has is an error."""
    if size > len(data.y):
        raise ValueError(
            f"{name} {size} exceeds the {len(data.y)} training samples of {dataset}; lower {name}"
        )


def draw(n: int, seed: int, *keys: object) -> torch.Tensor:
    """A seeded random permutation of ``range(n)`` for the purpose ``keys``."""
    return torch.randperm(n, generator=generator_for(seed, *keys))


def epoch_order(seed: int, task: StreamTask, epoch: int) -> torch.Tensor:
    """The rows of ``task.x`` that pass ``epoch`` of the task visits, in order: its training
    samples in a fresh random order each pass."""
    return task.train[draw(len(task.train), seed, "order", task.index, epoch).to(task.train.device)]


def among(indices: torch.Tensor, size: int, seed: int, *keys: object) -> torch.Tensor:
    """``size`` of ``indices`` (all when ``size`` is 0 or too large), a seeded random choice
    kept in ``indices``' order."""
    if size <= 0 or size >= len(indices):
        return indices
    chosen = draw(len(indices), seed, *keys)[:size].sort().values
    return indices[chosen.to(indices.device)]
