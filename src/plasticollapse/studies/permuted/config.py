"""The Permuted study's config: one online run's settings (see :mod:`.run` for the protocol)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from plasticollapse.remedies import remedy_names
from plasticollapse.remedies.fields import REMEDY_FIELDS, RemedyFields
from plasticollapse.runs.config import ConfigError, check_device_name, field
from plasticollapse.runs.loggers import LoggerFields
from plasticollapse.training.engine_choice import check_engine

NAME = "permuted"


@dataclasses.dataclass(frozen=True)
class Config(RemedyFields, LoggerFields):
    """One online Permuted-MNIST run. Defaults are the paper's protocol (one epoch per task).

    ``nc1_threshold`` is the authors' variant: train the first task until the NC1 measured
    after an epoch (``threshold_metric``: ``nc1``, or ``nc1_pinv``, the authors' own
    convention) falls below it, at most ``first_task_epochs`` epochs (so
    ``first_task_epochs`` is then a safety cap, not a count; the authors had none, and the
    preset sets it high; the first row's ``task_epochs`` says how many were used).
    ``task_accuracy`` says what ``accuracy`` (and ``loss``) of a multi-epoch task is: the
    ``mean`` of its epochs' online accuracies (the authors') or the ``last`` epoch's.
    ``sample_order``: a fresh shuffle every epoch, or one shuffle per task reused by every
    epoch of the task (the authors'). ``train_samples`` and ``measure_samples`` (0 = all, the paper)
    take a fixed, seeded random subset of the training set as the task data, and of that
    as the set collapse is measured on, for quick runs. ``remedies`` act at every task
    boundary (Shrink & Perturb, ReDo, resets), every k steps (``shrink_perturb_every``,
    ``redo_every``) or every step (weight decay, L2 Init, Continual Backprop: in the
    compiled fast engine too; the NC1 regulariser: the reference engine only, which
    ``engine = "auto"`` then picks). ``layer_norm`` and ``crelu`` change the MLP; the
    reference engine runs them.
    """

    STUDY: ClassVar[str] = "permuted"

    #: The remedies' fields, the protocol choices and the MLP's options came after the first
    #: runs: left out of the identity while at their defaults, so earlier runs keep their
    #: folders.
    LEGACY_IDENTITY_OMITS: ClassVar[frozenset] = REMEDY_FIELDS | frozenset(
        {"task_accuracy", "sample_order", "threshold_metric", "layer_norm", "crelu"}
    )

    dataset: Literal["mnist", "fashion-mnist", "digits"] = field(
        "mnist", help="the images whose pixels each task permutes"
    )
    data_root: str | None = field(
        None, help="dataset folder (default: $PLASTICOLLAPSE_DATA or ~/.cache/plasticollapse)"
    )
    download: bool = field(False, help="download the dataset when it is missing")
    hidden: tuple[int, ...] = field((100, 100, 100), help="the MLP's hidden layer widths")
    layer_norm: bool = field(
        False, help="LayerNorm before each hidden activation (reference engine)"
    )
    crelu: bool = field(False, help="CReLU [relu(z), relu(-z)] activations (reference engine)")
    lr: float = field(0.01, help="SGD learning rate")
    batch_size: int = field(1, help="mini-batch size (1: the paper, fully online)")
    tasks: int = field(200, help="number of permuted tasks")
    first_task_epochs: int = field(
        1, help="epochs of task 0 (with nc1_threshold: at most this many)"
    )
    epochs_per_task: int = field(1, help="epochs of every later task")
    nc1_threshold: float | None = field(
        None, help="train task 0 until its NC1 falls below this (the authors' variant)"
    )
    threshold_metric: Literal["nc1", "nc1_pinv"] = field(
        "nc1", help="the NC1 that nc1_threshold tests: exact, or the authors' pinv convention"
    )
    task_accuracy: Literal["last", "mean"] = field(
        "last", help="accuracy of a multi-epoch task: its last epoch's, or the mean (authors')"
    )
    sample_order: Literal["per_epoch", "per_task"] = field(
        "per_epoch", help="reshuffle every epoch, or one order per task for all its epochs"
    )
    permutation: Literal["composed", "independent"] = field(
        "composed", help="P_t = P_{t-1}[Q_t] (the authors') or a fresh Q_t"
    )
    train_samples: int = field(0, help="keep a seeded subset of the training set (0: all)")
    measure_every: int = field(1, help="measure collapse after every k-th task (and the last)")
    measure_samples: int = field(0, help="measure on a seeded subset of the task (0: all)")
    seed: int = field(0, help="fixes the initialisation and every random draw")
    out: str = field("runs/permuted", help="folder of the run folders")
    device: str = field("auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    threads: int = field(0, help="torch threads (0: torch's default)")
    engine: Literal["auto", "fast", "reference"] = field(
        "auto", help="fast: compiled batch-1 CPU MLP; reference: autograd; auto: fast if it can"
    )
    progress: bool = field(True, help="show a progress bar")
    loggers: tuple[str, ...] = field((), help="loggers besides metrics.jsonl: tensorboard, wandb")

    def __post_init__(self):
        # Lists from JSON/TOML become the tuple the dataclass declares (it is frozen).
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        choices = {
            "dataset": ("mnist", "fashion-mnist", "digits"),
            "permutation": ("composed", "independent"),
            "engine": ("auto", "fast", "reference"),
            "threshold_metric": ("nc1", "nc1_pinv"),
            "task_accuracy": ("last", "mean"),
            "sample_order": ("per_epoch", "per_task"),
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
        check_device_name(self.device)
        super().__post_init__()  # the remedies and their parameters
        check_engine(self)  # the one engine choice (training/engine_choice.py)


def run_label(config: Config) -> str:
    """``fte5``, ``fte100_nc1lt0.2`` for the threshold variant, ``fte1_shrink_perturb+redo``
    with remedies (joined by ``+``), ``fte1_ln_crelu`` with the MLP's options."""
    label = f"fte{config.first_task_epochs}"
    if config.nc1_threshold is not None:
        label += f"_nc1lt{config.nc1_threshold:g}"
    label += "_ln" * config.layer_norm + "_crelu" * config.crelu
    if remedy_names(config):
        label += "_" + "+".join(remedy_names(config))
    return label


def estimated_cost(config: Mapping[str, Any]) -> float:
    """Epochs the run trains (a task costs about one epoch): sweeps start the longest first."""
    return config["first_task_epochs"] + (config["tasks"] - 1) * config["epochs_per_task"]


def epochs_of_task(config: Config, task: int) -> int:
    return config.first_task_epochs if task == 0 else config.epochs_per_task


def is_measured(config: Config, task: int) -> bool:
    """Collapse is measured after every ``measure_every``-th task (0, k, 2k, ...) and the last."""
    return task % config.measure_every == 0 or task == config.tasks - 1
