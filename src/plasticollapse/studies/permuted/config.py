"""The Permuted study's config: one online run's settings (see :mod:`.run` for the protocol)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

from plasticollapse.runs.config import ConfigError, field

NAME = "permuted"


@dataclasses.dataclass(frozen=True)
class Config:
    """One online Permuted-MNIST run. Defaults are the paper's protocol (one epoch per task).

    ``nc1_threshold`` is the authors' variant: train the first task until the NC1 measured
    after an epoch falls below it, at most ``first_task_epochs`` epochs (so
    ``first_task_epochs`` is then a cap, not a count; the first row's ``task_epochs`` says
    how many were used). ``train_samples`` and ``measure_samples`` (0 = all, the paper)
    take a fixed, seeded random subset of the training set as the task data, and of that
    as the set collapse is measured on, for quick runs.
    """

    dataset: Literal["mnist", "fashion-mnist", "digits"] = "mnist"
    data_root: str | None = None
    download: bool = False
    hidden: tuple[int, ...] = (100, 100, 100)
    lr: float = 0.01
    batch_size: int = 1
    tasks: int = 200
    first_task_epochs: int = 1
    epochs_per_task: int = 1
    nc1_threshold: float | None = None
    permutation: Literal["composed", "independent"] = "composed"
    train_samples: int = 0
    measure_every: int = 1
    measure_samples: int = 0
    seed: int = 0
    out: str = "runs/permuted"
    device: str = "auto"
    threads: int = 0
    engine: Literal["auto", "fast", "reference"] = "auto"
    progress: bool = True
    loggers: tuple[str, ...] = field((), help="loggers besides metrics.jsonl: tensorboard, wandb")

    def __post_init__(self):
        # Lists from JSON/TOML become the tuple the dataclass declares (it is frozen).
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        choices = {
            "dataset": ("mnist", "fashion-mnist", "digits"),
            "permutation": ("composed", "independent"),
            "engine": ("auto", "fast", "reference"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}"
                )
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"hidden must be one or more widths >= 1, got {self.hidden}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a finite number > 0, got {self.lr}")
        for name in ("batch_size", "tasks", "first_task_epochs", "epochs_per_task"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {getattr(self, name)}")
        if self.measure_every < 1:
            raise ConfigError(
                f"measure_every must be >= 1 (measure after every k-th task), "
                f"got {self.measure_every}"
            )
        for name in ("train_samples", "measure_samples", "threads"):
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"{name} must be >= 0 (0 = all / default), got {getattr(self, name)}"
                )
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.nc1_threshold is not None and not self.nc1_threshold > 0:
            raise ConfigError(
                f"nc1_threshold must be > 0, or none to train the first task for "
                f"first_task_epochs epochs; got {self.nc1_threshold}"
            )


def run_label(config: Config) -> str:
    """``fte5``, or ``fte100_nc1lt0.2`` for the threshold variant."""
    label = f"fte{config.first_task_epochs}"
    if config.nc1_threshold is not None:
        label += f"_nc1lt{config.nc1_threshold:g}"
    return label


def estimated_cost(config: Mapping[str, Any]) -> float:
    """Epochs the run trains (a task costs about one epoch): sweeps start the longest first."""
    return config["first_task_epochs"] + (config["tasks"] - 1) * config["epochs_per_task"]


def epochs_of_task(config: Config, task: int) -> int:
    return config.first_task_epochs if task == 0 else config.epochs_per_task


def is_measured(config: Config, task: int) -> bool:
    """Collapse is measured after every ``measure_every``-th task (0, k, 2k, ...) and the last."""
    return task % config.measure_every == 0 or task == config.tasks - 1
