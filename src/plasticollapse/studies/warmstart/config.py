"""The warm-start study's config: one run's settings (see :mod:`.run` for the protocol)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

from plasticollapse.runs.config import ConfigError, field

NAME = "warmstart"

SCHEMES = ("plain", "shrink_perturb", "nc1_reg", "weight_decay", "l2_init", "redo")
DATASETS = ("cifar10", "fashion-mnist", "mnist", "digits")
#: Decay of the ``weight_decay`` scheme when the ``weight_decay`` field is left unset.
DEFAULT_SCHEME_WEIGHT_DECAY = 0.01
#: A warm-up epoch whose mean loss exceeds this in magnitude counts as diverged.
LOSS_LIMIT = 1e4
#: Batch size of evaluation passes (no gradients, so larger than training batches).
EVAL_BATCH = 1024


@dataclasses.dataclass(frozen=True)
class Config:
    """One warm-start run. Defaults are the paper's protocol (ResNet-18, CIFAR-10, plain).

    ``width`` is the ResNet's stem width (64: the paper), ``hidden`` the MLP's layer widths.
    ``weight_decay`` is the warm-up's SGD weight decay: unset (none) means 0, or 0.01 for
    the ``weight_decay`` scheme; probes never decay. ``amp`` (bf16 autocast) and
    channels_last apply on CUDA only.
    """

    dataset: Literal["cifar10", "fashion-mnist", "mnist", "digits"] = "cifar10"
    data_root: str | None = None
    download: bool = False
    model: Literal["resnet18", "mlp"] = "resnet18"
    width: int = 64
    maxpool: bool = True
    hidden: tuple[int, ...] = (100, 100, 100)
    warmup_fraction: float = 0.5
    warmup_epochs: int = 350
    checkpoint_every: int = 5
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float | None = None
    batch_size: int = 128
    augment: bool = False
    finetune_target_acc: float = 0.99
    finetune_max_epochs: int = 100
    scheme: Literal["plain", "shrink_perturb", "nc1_reg", "weight_decay", "l2_init", "redo"] = (
        "plain"
    )
    shrink: float = 0.6
    perturb: float = 0.01
    nc1_lambda: float = 0.05
    nc1_clip: float = 200.0
    l2_init_lambda: float = 0.01
    redo_tau: float = 0.1
    train_samples: int = 0
    seed: int = 7
    out: str = "runs/warmstart"
    device: str = "auto"
    amp: bool = True
    threads: int = 0
    progress: bool = True
    loggers: tuple[str, ...] = field((), help="loggers besides metrics.jsonl: tensorboard, wandb")

    def __post_init__(self):
        # Lists from JSON/TOML become the tuple the dataclass declares (it is frozen).
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for name, allowed in (
            ("dataset", DATASETS),
            ("model", ("resnet18", "mlp")),
            ("scheme", SCHEMES),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}"
                )
        if not 0 < self.warmup_fraction <= 1:
            raise ConfigError(f"warmup_fraction must be in (0, 1], got {self.warmup_fraction}")
        for name in ("warmup_epochs", "checkpoint_every", "batch_size", "finetune_max_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {getattr(self, name)}")
        if self.checkpoint_every > self.warmup_epochs:
            raise ConfigError(
                f"checkpoint_every ({self.checkpoint_every}) exceeds warmup_epochs "
                f"({self.warmup_epochs}): the run would measure nothing"
            )
        if self.model == "resnet18" and self.width < 1:
            raise ConfigError(f"width must be >= 1, got {self.width}")
        if self.model == "mlp" and (not self.hidden or min(self.hidden) < 1):
            raise ConfigError(f"hidden must be one or more widths >= 1, got {self.hidden}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a finite number > 0, got {self.lr}")
        if not 0 < self.finetune_target_acc <= 1:
            raise ConfigError(
                f"finetune_target_acc must be in (0, 1], got {self.finetune_target_acc}"
            )
        for name in ("momentum", "shrink", "perturb", "nc1_lambda", "l2_init_lambda", "redo_tau"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.nc1_clip <= 0:
            raise ConfigError(f"nc1_clip must be > 0, got {self.nc1_clip}")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0 (or none), got {self.weight_decay}")
        if self.scheme == "weight_decay" and self.weight_decay == 0:
            raise ConfigError(
                "scheme 'weight_decay' needs weight_decay > 0 (the paper: 0.001, 0.01, 0.1), "
                "or leave weight_decay unset for 0.01"
            )
        if self.scheme == "redo" and self.model != "mlp":
            raise ConfigError("scheme 'redo' resets MLP units only; use --model mlp")
        for name in ("train_samples", "threads", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def warmup_weight_decay(self) -> float:
        """The SGD weight decay of the warm-up (see the class docstring)."""
        if self.weight_decay is not None:
            return self.weight_decay
        return DEFAULT_SCHEME_WEIGHT_DECAY if self.scheme == "weight_decay" else 0.0


def run_label(config: Config) -> str:
    """``plain``, ``shrink_perturb``, ``weight_decay_wd0.01``, ``plain_wd0.001``, ..."""
    label = config.scheme
    if config.warmup_weight_decay > 0:
        label += f"_wd{config.warmup_weight_decay:g}"
    return label


def estimated_cost(config: Mapping[str, Any]) -> float:
    """Epochs over the whole training set (sweeps start the longest runs first): the warm-up
    (a ``warmup_fraction`` of the data per epoch) plus, at most, every probe's epochs."""
    probes = config["warmup_epochs"] // config["checkpoint_every"] + 1  # + the fresh probe
    return (
        config["warmup_epochs"] * config["warmup_fraction"] + probes * config["finetune_max_epochs"]
    )
