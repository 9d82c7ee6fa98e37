"""The fields every online classification stream shares (each study's Config inherits them).

A study's ``Config`` subclasses :class:`StreamConfig`, redeclares the fields whose defaults
its source pins (``lr``, ``hidden``, ``tasks``, ...) with the source named in the help, and
adds its own (``task_samples``, ``subset_size``, ``classes_per_task``). Validation of the
shared fields is here; a subclass checks its own after ``super().__post_init__()``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import Any, Literal

from plasticollapse.remedies import remedy_names
from plasticollapse.remedies.fields import RemedyFields
from plasticollapse.runs.config import ConfigError, field
from plasticollapse.runs.loggers import LoggerFields
from plasticollapse.training.engine_choice import check_engine


@dataclasses.dataclass(frozen=True)
class StreamConfig(RemedyFields, LoggerFields):
    """One online run over a stream of classification tasks (see :mod:`.run`).

    Each task trains ``epochs_per_task`` prequential passes over its training samples
    (mini-batches of ``batch_size``, a fresh order per pass), then is measured on those
    samples and on its held-out split. The probes (``plasticity_probe``,
    ``retrained_baseline``, ``forgetting``) cost extra compute and are off by default.
    """

    dataset: Literal["fashion-mnist", "mnist", "digits"] = field(
        "fashion-mnist", help="the images the stream is made of"
    )
    data_root: str | None = field(
        None, help="dataset folder (default: $PLASTICOLLAPSE_DATA or ~/.cache/plasticollapse)"
    )
    download: bool = field(False, help="download the dataset when it is missing")
    train_samples: int = field(0, help="keep a seeded subset of the training split (0: all)")
    test_samples: int = field(0, help="keep a seeded subset of the test split (0: all)")
    inputs: Literal["unit", "symmetric"] = field(
        "unit", help="pixels in [0, 1] (unit) or (x - 0.5) / 0.5 in [-1, 1] (symmetric)"
    )
    hidden: tuple[int, ...] = field((100, 100), help="the MLP's hidden layer widths")
    init: Literal["pytorch", "kaiming"] = field(
        "pytorch",
        help="pytorch: nn.Linear's default U(+-1/sqrt(fan_in)); "
        "kaiming: Kaiming-uniform weights and zero biases (the paper's MLP)",
    )
    lr: float = field(0.01, help="SGD learning rate")
    engine: Literal["auto", "fast", "reference"] = field(
        "auto",
        help="fast: compiled CPU MLP (any batch); reference: autograd; auto: fast if it can",
    )
    batch_size: int = field(1, help="mini-batch size (1: fully online)")
    tasks: int = field(10, help="number of tasks in the stream")
    epochs_per_task: int = field(1, help="passes over each task's training samples")
    measure_every: int = field(1, help="measure collapse after every k-th task (and the last)")
    measure_samples: int = field(
        0, help="measure on at most this many of the task's training samples (0: all)"
    )
    layer_collapse: bool = field(
        True, help="collapse in every hidden layer too (nc1_layer{k}, ...)"
    )
    plasticity_probe: bool = field(
        False, help="at each task switch: 1 - L_after/L_before on a probe batch of the new task"
    )
    probe_samples: int = field(256, help="plasticity probe: samples of the new task it trains on")
    probe_steps: int = field(100, help="plasticity probe: full-batch SGD steps")
    probe_lr: float | None = field(None, help="plasticity probe: SGD learning rate (none: lr)")
    retrained_baseline: bool = field(
        False, help="also train a fresh network on each task with the same budget"
    )
    forgetting: bool = field(False, help="accuracy on task 0's data after every task")
    seed: int = field(0, help="fixes the initialisation, the stream and every random draw")
    out: str = field("runs/streams", help="folder of the run folders")
    device: str = field("auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    threads: int = field(0, help="torch threads (0: torch's default)")
    progress: bool = field(True, help="show a progress bar")
    loggers: tuple[str, ...] = field((), help="loggers besides metrics.jsonl: tensorboard, wandb")

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        check_choices(self)
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"hidden must hold one or more widths >= 1, got {self.hidden}")
        for name in ("lr", "probe_lr"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a finite number > 0, got {value}")
        for name in ("batch_size", "tasks", "epochs_per_task", "measure_every", "probe_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {getattr(self, name)}")
        for name in ("train_samples", "test_samples", "measure_samples", "threads", "probe_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"{name} must be >= 0 (0 = all / default), got {getattr(self, name)}"
                )
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        super().__post_init__()  # the remedies and their parameters
        check_engine(self)  # the one engine choice (training/engine_choice.py)

    @property
    def effective_probe_lr(self) -> float:
        return self.lr if self.probe_lr is None else self.probe_lr


def check_choices(config: Any) -> None:
    """Every ``Literal`` field of the config (its subclasses' too) holds one of its values
    (the command line and presets check this on parsing; a config built in Python here)."""
    for name, kind in typing.get_type_hints(type(config)).items():
        if typing.get_origin(kind) is Literal:
            allowed = typing.get_args(kind)
            value = getattr(config, name)
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def run_label(config: StreamConfig) -> str:
    """``plain``, or the remedies joined by ``+`` (``shrink_perturb+redo``)."""
    return "+".join(remedy_names(config)) or "plain"


def estimated_cost(config: Mapping[str, Any]) -> float:
    """Passes over a task's samples (sweeps start the longest runs first), doubled by the
    retrained baseline."""
    passes = config["tasks"] * config["epochs_per_task"]
    return passes * (2 if config.get("retrained_baseline") else 1)
