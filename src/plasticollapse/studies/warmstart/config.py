"""The warm-start study's config: one run's settings (see :mod:`.run` for the protocol)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from plasticollapse.remedies import REMEDIES, weight_decay_of
from plasticollapse.remedies import build_remedies as _build_remedies
from plasticollapse.remedies.events import Event
from plasticollapse.remedies.fields import ONLINE_REMEDY_FIELDS, RemedyFields
from plasticollapse.remedies.weight_decay import DEFAULT_WEIGHT_DECAY
from plasticollapse.runs.config import ConfigError, check_device_name, field
from plasticollapse.runs.loggers import LoggerFields

NAME = "warmstart"

#: Values of ``scheme``: one remedy by name (``plain``: none).
SCHEMES = tuple(REMEDIES)
DATASETS = ("cifar10", "fashion-mnist", "mnist", "digits")
#: Decay of the ``weight_decay`` scheme when the ``weight_decay`` field is left unset.
DEFAULT_SCHEME_WEIGHT_DECAY = DEFAULT_WEIGHT_DECAY
#: A warm-up epoch whose mean loss exceeds this in magnitude counts as diverged.
LOSS_LIMIT = 1e4
#: Batch size of evaluation passes (no gradients, so larger than training batches).
EVAL_BATCH = 1024
#: Training images per second of one CPU core for the ResNet-18 of width 64 on 32x32 inputs
#: (batch 128, float32): ``benchmarks/warmstart_speed.py --width 64 --samples 256 --epochs 1
#: --threads 1 --device cpu`` measured 12 images/s on a 2-core machine shared with other
#: jobs (load average 4; the process got a third of a core: 49 s of CPU in 152 s), so about
#: 30 on a core of its own. Only for the CPU notice a sweep prints, so a rough figure.
CPU_RESNET18_IMAGES_PER_S = 30.0
#: Training images and pixels per image of each dataset (the cost scales with both).
TRAIN_IMAGES = {"cifar10": 50_000, "fashion-mnist": 60_000, "mnist": 60_000, "digits": 1_437}
PIXELS = {"cifar10": 32 * 32, "fashion-mnist": 28 * 28, "mnist": 28 * 28, "digits": 8 * 8}


@dataclasses.dataclass(frozen=True)
class Config(RemedyFields, LoggerFields):
    """One warm-start run. Defaults are the paper's protocol (ResNet-18, CIFAR-10, plain).

    ``width`` is the ResNet's stem width (64: the paper), ``hidden`` the MLP's layer widths.
    The warm-up applies ``remedies`` (several together), or the one remedy named by
    ``scheme`` (the older spelling, kept so that old presets and run folders still work);
    giving both is an error. ``weight_decay`` is the warm-up's SGD weight decay: unset
    (none) means 0, or 0.01 under the ``weight_decay`` remedy; probes never decay. ``amp``
    (bf16 autocast) and channels_last apply on CUDA only.
    """

    STUDY: ClassVar[str] = "warmstart"
    #: Remedies act in the warm-up's steps (loss terms, weight decay, after_step, with the
    #: step's activations: Continual Backprop on the network's layer pairs), at its
    #: checkpoints, and at the start of each probe.
    EVENTS: ClassVar[frozenset[Event]] = frozenset(
        {Event.STEP, Event.STEP_ACTIVATIONS, Event.CHECKPOINT, Event.PROBE_START}
    )

    #: ``remedies`` (and the online remedies' fields) came after the first runs: left out
    #: of the identity while at their defaults.
    LEGACY_IDENTITY_OMITS: ClassVar[frozenset] = frozenset({"remedies"}) | ONLINE_REMEDY_FIELDS

    dataset: Literal["cifar10", "fashion-mnist", "mnist", "digits"] = field(
        "cifar10", help="training and test data"
    )
    data_root: str | None = field(
        None, help="dataset folder (default: $PLASTICOLLAPSE_DATA or ~/.cache/plasticollapse)"
    )
    download: bool = field(False, help="download the dataset when it is missing")
    model: Literal["resnet18", "mlp"] = field("resnet18", help="the network")
    width: int = field(64, help="resnet18: stem width (64: the paper)")
    maxpool: bool = field(True, help="resnet18: max-pool after the stem")
    hidden: tuple[int, ...] = field((100, 100, 100), help="mlp: hidden layer widths")
    warmup_fraction: float = field(0.5, help="share of the training set the warm-up sees")
    warmup_epochs: int = field(350, help="warm-up epochs")
    checkpoint_every: int = field(5, help="measure and probe every k warm-up epochs")
    lr: float = field(1e-3, help="SGD learning rate (warm-up and probes)")
    momentum: float = field(0.0, help="SGD momentum (warm-up and probes)")
    batch_size: int = field(128, help="mini-batch size (warm-up and probes)")
    augment: bool = field(False, help="random crops and flips of training batches")
    finetune_target_acc: float = field(
        0.99, help="a probe stops once an epoch's online training accuracy reaches this"
    )
    finetune_max_epochs: int = field(100, help="a probe trains at most this many epochs")
    scheme: str = field(
        "plain",
        help="one remedy by name (the older spelling of remedies; plain: none)",
        metadata={"metavar": "{as --remedies}"},
    )
    train_samples: int = field(0, help="keep a seeded subset of the training set (0: all)")
    seed: int = field(7, help="fixes the initialisation and every random draw")
    out: str = field("runs/warmstart", help="folder of the run folders")
    device: str = field("auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    amp: bool = field(True, help="bf16 autocast on CUDA")
    threads: int = field(0, help="torch threads (0: torch's default)")
    progress: bool = field(True, help="show progress bars")
    loggers: tuple[str, ...] = field((), help="loggers besides metrics.jsonl: tensorboard, wandb")

    def __post_init__(self):
        # Lists from JSON/TOML become the tuple the dataclass declares (it is frozen).
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for name, allowed in (
            ("dataset", DATASETS),
            ("model", ("resnet18", "mlp")),
            ("scheme", tuple(REMEDIES)),  # the registry now, with remedies registered later
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}"
                )
        if self.scheme != "plain" and self.remedies:
            raise ConfigError(
                f"give the remedies as remedies or as scheme, not both "
                f"(scheme {self.scheme!r}, remedies {list(self.remedies)})"
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
        if self.momentum < 0:
            raise ConfigError(f"momentum must be >= 0, got {self.momentum}")
        for name in ("train_samples", "threads", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        check_device_name(self.device)
        super().__post_init__()  # the remedies and their parameters

    def requested_remedies(self) -> tuple[str, ...]:
        """``remedies``, or the one named by ``scheme``."""
        return self.remedies or (self.scheme,)

    @property
    def warmup_weight_decay(self) -> float:
        """The SGD weight decay of the warm-up (see the class docstring)."""
        return weight_decay_of(_build_remedies(self))


def run_label(config: Config) -> str:
    """``plain``, ``shrink_perturb``, ``weight_decay_wd0.01``, ``plain_wd0.001``,
    ``shrink_perturb+l2_init`` (remedies joined by ``+``), ..."""
    label = "+".join(config.remedies) if config.remedies else config.scheme
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


def estimated_cpu_hours(config: Mapping[str, Any]) -> tuple[float, float] | None:
    """Hours one CPU core needs for the run's training passes, at least and at most; None for
    the MLP (seconds on a CPU, not worth a notice).

    At least: the warm-up and one epoch per probe; at most: every probe trains its
    ``finetune_max_epochs`` (:func:`estimated_cost`). Each epoch over the whole training set
    costs ``N / rate`` seconds, the rate :data:`CPU_RESNET18_IMAGES_PER_S` scaled by
    ``(64 / width)^2`` (the convolutions' cost grows with the square of the width) and by
    ``1024 / pixels`` (their cost grows with the image's area). Measuring adds a little.
    """
    if config.get("model", "resnet18") != "resnet18":
        return None
    dataset = config.get("dataset", "cifar10")
    images = config.get("train_samples") or TRAIN_IMAGES.get(dataset, 50_000)
    scale = (config.get("width", 64) / 64) ** 2 * PIXELS.get(dataset, 1024) / 1024
    hours_per_epoch = images * scale / CPU_RESNET18_IMAGES_PER_S / 3600
    probes = config["warmup_epochs"] // config["checkpoint_every"] + 1
    least = config["warmup_epochs"] * config["warmup_fraction"] + probes
    return least * hours_per_epoch, estimated_cost(config) * hours_per_epoch
