"""The random-label stream (Kumar et al. 2023's Random Label MNIST, see :mod:`.config`).

Task t of a seed::

    S       = subset_size training images, a seeded subset fixed for the run  (seed, "subset")
    y_t(i)  = a uniform random class for each image i of S               (seed, "labels", t)
    held-out: the test split's images, each with its own random class    (seed, "test_labels", t)

Every task has the same inputs and labels independent of them: the network can only
memorise, so its online accuracy measures how fast it can still fit (trainability).
Training and measurement are the shared stream loop's (:mod:`plasticollapse.studies.streams.run`).
"""

from __future__ import annotations

from functools import partial

import torch

from plasticollapse.runs.runtime import generator_for
from plasticollapse.studies.random_labels.config import Config
from plasticollapse.studies.streams.run import run_stream
from plasticollapse.studies.streams.stream import StreamData, StreamTask, check_size, draw


class RandomLabelStream:
    """Task t: the fixed subset with fresh uniformly random labels."""

    masks_absent_classes = False

    def __init__(self, config: Config, data: StreamData):
        check_size("subset_size", config.subset_size, data, config.dataset)
        subset = draw(len(data.y), config.seed, "subset")[: config.subset_size].sort().values
        self.config, self.data = config, data
        self.x = data.x[subset.to(data.x.device)].contiguous()  # shared by every task
        self.train = torch.arange(config.subset_size, device=data.y.device)
        self.test = torch.arange(len(data.y_test), device=data.y_test.device)

    def random_labels(self, n: int, *keys: object) -> torch.Tensor:
        generator = generator_for(self.config.seed, *keys)
        labels = torch.randint(self.data.num_classes, (n,), generator=generator)
        return labels.to(self.data.y.device)

    def task(self, t: int) -> StreamTask:
        y = self.random_labels(len(self.train), "labels", t)
        y_test = self.random_labels(len(self.test), "test_labels", t)
        classes = torch.unique(y)
        return StreamTask(t, self.x, y, self.train, self.data.x_test, y_test, self.test, classes)


#: Train and measure the stream; rows: :mod:`plasticollapse.studies.streams.run`.
run = partial(run_stream, make_stream=RandomLabelStream)
