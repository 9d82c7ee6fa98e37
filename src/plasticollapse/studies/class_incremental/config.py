"""The class-incremental stream's config: the loss-of-plasticity code's incremental CIFAR.

Source: Dohare et al., "Loss of plasticity in deep continual learning" (Nature 2024), code
shibhansh/loss-of-plasticity, lop/incremental_cifar/incremental_cifar_experiment.py and
cfg/base_deep_learning_system.json:

* ``current_num_classes = 5`` at the start and ``increase = 5`` more every
  ``class_increase_frequency = 200`` epochs, until all 100 classes of CIFAR-100 are in;
  the class order is ``np.random.permutation(num_classes)``, drawn from the run's seed;
* the network has all 100 outputs from the start, and its loss and prediction use only the
  columns of the classes seen so far: ``net(x)[:, all_classes[:current_num_classes]]``;
* training batch size 90; SGD with ``stepsize`` 0.1; the test and validation sets are
  restricted to the classes seen so far;
* the ``retrained_network.json`` config re-initialises the network at every increase: the
  baseline this package's ``retrained_baseline`` probe trains beside the run.

Here, on Fashion-MNIST's (or MNIST's, digits') 10 classes: 2 classes at the start and 2 more
per task (5 tasks), the source's 5 + 5 scaled to 10 classes, and a ReLU MLP instead of
ResNet-18. Not reproduced: SGD momentum 0.9 and weight decay 5e-4 (the engines run plain
SGD; ``weight_decay = 0.0005`` adds the decay), the step-size schedule (x0.2 at epochs 60,
120 and 160 of each task), data augmentation, and early stopping (the source reloads the
parameters of the epoch with the best validation accuracy at the end of each task).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from plasticollapse.runs.config import ConfigError, field
from plasticollapse.studies.streams.config import StreamConfig, estimated_cost, run_label

__all__ = ["SOURCE", "Config", "estimated_cost", "run_label"]

NAME = "class_incremental"

#: The protocol's constants as read in shibhansh/loss-of-plasticity (module doc), before
#: scaling to 10 classes.
SOURCE = {
    "initial_classes": 5,  # incremental_cifar_experiment.py: self.current_num_classes = 5
    "classes_per_task": 5,  # same file, extend_classes: increase = 5
    "num_classes": 100,  # same file: self.num_classes = 100
    "epochs_per_task": 200,  # same file: self.class_increase_frequency = 200
    "batch_size": 90,  # same file: self.batch_sizes = {"train": 90, ...}
    "lr": 0.1,  # cfg/base_deep_learning_system.json: "stepsize": 0.1
    "class_order": "random",  # same file: self.all_classes = np.random.permutation(...)
}


@dataclasses.dataclass(frozen=True)
class Config(StreamConfig):
    """One class-incremental run (defaults: :data:`SOURCE` scaled to 10 classes).

    Task t presents the first ``initial_classes + t * classes_per_task`` classes of the
    run's class order: all their training images, ``epochs_per_task`` passes at
    ``batch_size``, with the head restricted to them; the held-out split is the test
    images of those classes.
    """

    dataset: Literal["fashion-mnist", "mnist", "digits"] = field(
        "fashion-mnist", help="the images whose classes arrive in groups (the source: CIFAR-100)"
    )
    hidden: tuple[int, ...] = field((100, 100, 100), help="the MLP's hidden layer widths")
    init: Literal["pytorch", "kaiming"] = field(
        "kaiming",
        help="kaiming: Kaiming-uniform weights, zero biases (the source inits Kaiming); "
        "pytorch: nn.Linear's default",
    )
    lr: float = field(0.1, help="SGD learning rate (the source: 0.1, with momentum 0.9)")
    batch_size: int = field(90, help="mini-batch size (the source: 90)")
    tasks: int = field(5, help="number of class groups (2 + 4 x 2 = all 10 classes)")
    epochs_per_task: int = field(200, help="passes over the task's data (the source: 200)")
    initial_classes: int = field(2, help="classes of task 0 (the source: 5 of 100)")
    classes_per_task: int = field(2, help="classes added at each later task (the source: 5)")
    class_order: Literal["random", "fixed"] = field(
        "random", help="random: a seeded permutation of the classes (the source's); fixed: 0..C-1"
    )
    out: str = field("runs/class_incremental", help="folder of the run folders")

    def __post_init__(self):
        super().__post_init__()
        for name in ("initial_classes", "classes_per_task"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {getattr(self, name)}")

    def classes_at(self, task: int) -> int:
        """How many classes task ``task`` presents."""
        return self.initial_classes + task * self.classes_per_task
