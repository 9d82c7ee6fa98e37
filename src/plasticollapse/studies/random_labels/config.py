"""The random-label stream's config: Random Label MNIST of Kumar, Marklund & Van Roy (2023).

Source: S. Kumar, H. Marklund, B. Van Roy, "Maintaining plasticity in continual learning
via regenerative regularization" (arXiv 2308.11958, CoLLAs 2024), the paper's text (we
found no public copy of its code to read):

* Sec. 4.2 and Appendix Table 1 ("Random Label MNIST"): 1,200 images sampled from MNIST;
  a task assigns each image a random label; 400 epochs per task (30,000 steps at batch
  size 16); 50 tasks;
* Appendix A.1.3: an MLP with two hidden layers of width 100, ReLU, PyTorch's default
  initialisation (Sec. 5, "Parameter Initialization");
* Table 3: the SGD baseline's selected step size on Random Label MNIST, 1e-3 (L2 Init's:
  1e-2 with lambda 1e-2);
* Sec. 4.1: the metric is the task's average online accuracy over all its steps.

The stream follows Lyle et al., "Understanding plasticity in neural networks" (ICML 2023).
MNIST is downloaded; the default dataset is Fashion-MNIST, which runs offline
(``--dataset mnist --download true`` is the paper's). The paper does not say how inputs
were scaled: pixels stay in [0, 1]. A random-label task has no held-out data to
generalise to; the held-out split here is test images with their own fresh random labels,
so held-out accuracy is chance by construction (a check that the network memorises).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from plasticollapse.runs.config import ConfigError, field
from plasticollapse.studies.streams.config import StreamConfig, estimated_cost, run_label

__all__ = ["SOURCE", "Config", "estimated_cost", "run_label"]

NAME = "random_labels"

#: The protocol's constants as read in Kumar et al. 2023 (module doc).
SOURCE = {
    "subset_size": 1200,  # Table 1: dataset size per task, 1200 samples
    "batch_size": 16,  # Table 1: batch size 16
    "epochs_per_task": 400,  # Table 1: task duration 30,000 timesteps (400 epochs)
    "tasks": 50,  # Table 1: number of tasks 50
    "hidden": (100, 100),  # A.1.3: two hidden layers of width 100
    "init": "pytorch",  # Sec. 5: PyTorch default initialisation
    "lr": 0.001,  # Table 3: Random Label MNIST, Baseline, SGD, alpha = 1e-3
}


@dataclasses.dataclass(frozen=True)
class Config(StreamConfig):
    """One random-label run (defaults: :data:`SOURCE`, on Fashion-MNIST).

    Task t: the same ``subset_size`` training images (a seeded subset, fixed for the run),
    each with a fresh uniformly random label; ``epochs_per_task`` passes at ``batch_size``.
    """

    STUDY: ClassVar[str] = "random_labels"

    dataset: Literal["fashion-mnist", "mnist", "digits"] = field(
        "fashion-mnist", help="the images of the fixed subset (the paper: MNIST)"
    )
    lr: float = field(0.001, help="SGD learning rate (the paper's SGD baseline: 1e-3)")
    batch_size: int = field(16, help="mini-batch size (the paper: 16)")
    tasks: int = field(50, help="number of random labellings (the paper: 50)")
    epochs_per_task: int = field(400, help="passes over the subset per task (the paper: 400)")
    subset_size: int = field(1200, help="images in the fixed subset (the paper: 1,200)")
    out: str = field("runs/random_labels", help="folder of the run folders")

    def __post_init__(self):
        super().__post_init__()
        if self.subset_size < 1:
            raise ConfigError(f"subset_size must be an integer >= 1, got {self.subset_size}")
