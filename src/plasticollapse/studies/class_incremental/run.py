"""The class-incremental stream (the loss-of-plasticity code's incremental CIFAR, see
:mod:`.config`).

Task t of a seed::

    order   = a seeded permutation of the C classes (class_order "random"; "fixed": 0..C-1)
    present = order[: initial_classes + t * classes_per_task]
    train_t = every training image whose class is present (true labels)
    held-out: every test image whose class is present

The network's head keeps all C outputs and is masked to the present classes
(:class:`~plasticollapse.studies.streams.model.MaskedLinear`), as the source slices its
logits. Collapse is measured over the classes present (absent classes are left out of
every formula, ``num_classes_present`` says how many). Training and measurement are the
shared stream loop's (:mod:`plasticollapse.studies.streams.run`).
"""

from __future__ import annotations

from functools import partial

import torch

from plasticollapse.studies.class_incremental.config import Config
from plasticollapse.studies.streams.run import run_stream
from plasticollapse.studies.streams.stream import StreamData, StreamTask, draw


class ClassIncrementalStream:
    """Task t: all samples of the first ``initial_classes + t * classes_per_task`` classes."""

    masks_absent_classes = True

    def __init__(self, config: Config, data: StreamData):
        needed = config.classes_at(config.tasks - 1)
        if needed > data.num_classes:
            raise ValueError(
                f"tasks {config.tasks} need {needed} classes (initial_classes "
                f"{config.initial_classes} + {config.tasks - 1} x classes_per_task "
                f"{config.classes_per_task}) but {config.dataset} has {data.num_classes}; "
                "lower tasks or classes_per_task"
            )
        self.config, self.data = config, data
        c = data.num_classes
        order = draw(c, config.seed, "class_order") if config.class_order == "random" else None
        self.order = torch.arange(c) if order is None else order

    def classes(self, t: int) -> torch.Tensor:
        """The classes task ``t`` presents, sorted."""
        return self.order[: self.config.classes_at(t)].sort().values.to(self.data.y.device)

    def task(self, t: int) -> StreamTask:
        data = self.data
        present = self.classes(t)
        train = torch.isin(data.y, present).nonzero().flatten()
        test = torch.isin(data.y_test, present).nonzero().flatten()
        return StreamTask(t, data.x, data.y, train, data.x_test, data.y_test, test, present)


#: Train and measure the stream; rows: :mod:`plasticollapse.studies.streams.run`.
run = partial(run_stream, make_stream=ClassIncrementalStream)
