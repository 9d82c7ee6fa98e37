"""The label-permuted stream's config: UPGD's label-permuted protocol, on offline data.

Source: Elsayed & Mahmood, "Addressing loss of plasticity and catastrophic forgetting in
continual learning" (ICLR 2024), code mohmdelsayed/upgd:

* core/task/label_permuted_emnist.py: batch size 1; every ``change_freq = 2500`` steps the
  labels of the whole dataset are mapped through a fresh ``torch.randperm(n_outputs)`` and
  a fresh shuffled pass over the dataset starts (so a task is the first 2,500 samples of a
  new shuffle); inputs ``Normalize((0.5,), (0.5,))``; task 0 is permuted too;
* experiments/label_permuted_emnist.py: ``n_steps = 1000000`` (400 tasks), the network
  ``FullyConnectedReLU`` (core/network/fcn_relu.py: hidden 300 and 300 // 2 = 150, ReLU,
  nn.Linear's default initialisation), SGD with lr in {1e-2, 1e-3, 1e-4, 1e-5}.

EMNIST is not available offline: the stream runs on Fashion-MNIST (or MNIST, digits),
whose 10 classes give the permutation of 10 labels. The repository stores no selected
learning rate for SGD; the default is the grid's largest, 0.01. The held-out split is the
dataset's test split with the task's permutation of its labels, as the repository's
offline variant (core/task/label_permuted_mnist_offline.py, ``held_out``) does.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from plasticollapse.runs.config import ConfigError, field
from plasticollapse.studies.streams.config import StreamConfig, estimated_cost, run_label

__all__ = ["SOURCE", "Config", "estimated_cost", "run_label"]

NAME = "label_permuted"

#: The protocol's constants as read in mohmdelsayed/upgd (module doc).
SOURCE = {
    "task_samples": 2500,  # core/task/label_permuted_emnist.py: change_freq=2500
    "batch_size": 1,  # same file: batch_size=1
    "tasks": 400,  # experiments/label_permuted_emnist.py: n_steps = 1000000 = 400 x 2500
    "hidden": (300, 150),  # core/network/fcn_relu.py: n_hidden_units=300, then 300 // 2
    "init": "pytorch",  # same file: m.reset_parameters() on every nn.Linear
    "inputs": "symmetric",  # Normalize((0.5,), (0.5,))
    "lr": 0.01,  # experiments/label_permuted_emnist.py: lr in 10 ** -i, i = 2..5 (largest)
    "epochs_per_task": 1,
}


@dataclasses.dataclass(frozen=True)
class Config(StreamConfig):
    """One label-permuted run (defaults: :data:`SOURCE`, on Fashion-MNIST).

    Task t: ``task_samples`` training samples drawn afresh from the training split, their
    labels (and the held-out split's) mapped through a fresh uniform permutation of the
    classes; one online pass at batch size 1 (``epochs_per_task`` passes in general).
    """

    STUDY: ClassVar[str] = "label_permuted"

    dataset: Literal["fashion-mnist", "mnist", "digits"] = field(
        "fashion-mnist", help="the images whose labels each task permutes (UPGD: EMNIST)"
    )
    inputs: Literal["unit", "symmetric"] = field(
        "symmetric", help="pixels in [0, 1] (unit) or (x - 0.5) / 0.5 (symmetric, UPGD's)"
    )
    hidden: tuple[int, ...] = field((300, 150), help="the MLP's hidden widths (UPGD: 300-150)")
    lr: float = field(0.01, help="SGD learning rate (UPGD's grid: 1e-2 .. 1e-5)")
    tasks: int = field(400, help="number of label permutations (UPGD: 1M steps / 2,500)")
    task_samples: int = field(
        2500, help="training samples per task, drawn afresh each task (UPGD: 2,500 steps)"
    )
    out: str = field("runs/label_permuted", help="folder of the run folders")

    def __post_init__(self):
        super().__post_init__()
        if self.task_samples < 1:
            raise ConfigError(f"task_samples must be an integer >= 1, got {self.task_samples}")
