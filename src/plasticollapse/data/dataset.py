"""The in-memory Dataset: float32 images in [0, 1] and int64 labels, train and test.

The readers (:mod:`~plasticollapse.data.idx`, :mod:`~plasticollapse.data.cifar`,
:mod:`~plasticollapse.data.digits`) decode files into numpy arrays; :func:`make_dataset`
turns those into a :class:`Dataset`, the one shape every study consumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from plasticollapse.data.checksums import CorruptDatasetError


@dataclass(frozen=True)
class Dataset:
    """A labelled image dataset held whole in memory.

    Attributes:
        name: one of :data:`plasticollapse.data.DATASET_NAMES`.
        train_x, test_x: ``float32`` images in ``[0, 1]``, shape ``(N, C, H, W)``:
            ``(N, 1, 28, 28)`` for MNIST and Fashion-MNIST, ``(N, 3, 32, 32)`` for CIFAR-10
            (unnormalised), ``(N, 1, 8, 8)`` for digits.
        train_y, test_y: ``int64`` class indices in ``[0, num_classes)``, shape ``(N,)``.
        num_classes: number of classes.
        classes: class names, indexed by label.
    """

    name: str
    train_x: torch.Tensor = field(repr=False)
    train_y: torch.Tensor = field(repr=False)
    test_x: torch.Tensor = field(repr=False)
    test_y: torch.Tensor = field(repr=False)
    num_classes: int
    classes: tuple[str, ...] = ()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def input_dim(self) -> int:
        """``C * H * W``: the width of a flattened image, e.g. 784 for MNIST."""
        return int(np.prod(self.image_shape))

    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of ``"train"`` or ``"test"``."""
        if split == "train":
            return self.train_x, self.train_y
        if split == "test":
            return self.test_x, self.test_y
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")

    def flat(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of a split with images flattened to ``(N, C*H*W)`` (a view, no copy)."""
        x, y = self.split(split)
        return flatten(x), y

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={tuple(self.train_x.shape)}, "
            f"test={tuple(self.test_x.shape)}, num_classes={self.num_classes})"
        )


def flatten(x: torch.Tensor) -> torch.Tensor:
    """Images ``(N, C, H, W)`` -> ``(N, C*H*W)``, channel-major as PyTorch lays them out."""
    return x.reshape(x.shape[0], -1)


def _to_images(x: np.ndarray, scale: float) -> torch.Tensor:
    # astype copies into a fresh writable array (the decoded buffers are read-only views).
    return torch.from_numpy(x.astype(np.float32)).div_(scale)


def _to_labels(y: np.ndarray, name: str, num_classes: int) -> torch.Tensor:
    labels = torch.from_numpy(y.astype(np.int64))
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise CorruptDatasetError(
            f"{name}: labels span [{int(labels.min())}, {int(labels.max())}], expected "
            f"[0, {num_classes - 1}]; the files are not {name}."
        )
    return labels


def make_dataset(
    name: str,
    classes: tuple[str, ...],
    train_x: Any,
    train_y: Any,
    test_x: Any,
    test_y: Any,
    scale: float,
) -> Dataset:
    """Wrap decoded arrays as a :class:`Dataset`: images ``(N, C, H, W)`` divided by ``scale``
    into [0, 1] as float32, labels checked to index ``classes``."""
    return Dataset(
        name=name,
        train_x=_to_images(train_x, scale),
        train_y=_to_labels(train_y, name, len(classes)),
        test_x=_to_images(test_x, scale),
        test_y=_to_labels(test_y, name, len(classes)),
        num_classes=len(classes),
        classes=classes,
    )
