"""The label-permuted stream (UPGD's protocol, see :mod:`.config`) and its run.

Task t of a seed::

    pi_t    = a fresh uniform permutation of the C classes     (generator: seed, "labels", t)
    train_t = task_samples rows of the training split, drawn without replacement
              (generator: seed, "task_samples", t)
    labels  y -> pi_t[y] for the training rows and for the held-out (test) split

so the inputs of every task come from one distribution and only the map from inputs to
labels changes: a network must unlearn and relearn the output layer's assignment each task.
Training and measurement are the shared stream loop's (:mod:`plasticollapse.studies.streams.run`).
"""

from __future__ import annotations

from functools import partial

import torch

from plasticollapse.studies.label_permuted.config import Config
from plasticollapse.studies.streams.run import run_stream
from plasticollapse.studies.streams.stream import StreamData, StreamTask, check_size, draw


class LabelPermutedStream:
    """Task t: ``task_samples`` fresh training rows, every label mapped through pi_t."""

    masks_absent_classes = False

    def __init__(self, config: Config, data: StreamData):
        check_size("task_samples", config.task_samples, data, config.dataset)
        self.config, self.data = config, data
        self.test = torch.arange(len(data.y_test), device=data.y_test.device)
        self.classes = torch.arange(data.num_classes, device=data.y.device)

    def labels(self, t: int) -> torch.Tensor:
        """pi_t: class c of the dataset is class pi_t[c] in task t."""
        return draw(self.data.num_classes, self.config.seed, "labels", t).to(self.data.y.device)

    def task(self, t: int) -> StreamTask:
        data, seed = self.data, self.config.seed
        pi = self.labels(t)
        train = draw(len(data.y), seed, "task_samples", t)[: self.config.task_samples]
        train = train.sort().values.to(data.y.device)
        y, y_test = pi[data.y], pi[data.y_test]
        return StreamTask(t, data.x, y, train, data.x_test, y_test, self.test, self.classes)


#: Train and measure the stream; rows: :mod:`plasticollapse.studies.streams.run`.
run = partial(run_stream, make_stream=LabelPermutedStream)
