"""Loggers: where a run's metric rows go, besides its metrics.jsonl.

Every study appends a row with :meth:`RunFolder.append_metrics
<plasticollapse.runs.folder.RunFolder.append_metrics>` and nothing else; the folder hands the
row to each :class:`Logger` of the run. ``metrics.jsonl`` (:class:`JsonlLogger`) is always
on: it is the record that resume, the tidy table and the report read. The others are
switched on by the execution field ``loggers``::

    loggers = ["tensorboard"]          # in a TOML preset
    plasticollapse permuted --config quick/permuted_digits --loggers tensorboard wandb

- ``tensorboard``: scalars into ``<run folder>/tensorboard`` (``tensorboard --logdir runs``);
  needs the extra ``pip install 'plasticollapse[tensorboard]'``;
- ``wandb``: a Weights & Biases run named after the run folder, in offline mode unless you
  set ``WANDB_MODE`` (``wandb sync`` uploads it later); needs ``plasticollapse[wandb]``.
  Its project and group are the fields ``wandb_project`` / ``wandb_group`` (of
  :class:`LoggerFields`), else ``$WANDB_PROJECT`` / ``$WANDB_RUN_GROUP``, else
  ``plasticollapse`` and the run's setting (:func:`setting_group`: the seeds of one setting
  share a group, so W&B averages them).

Outside a study (your own loop, :class:`plasticollapse.Monitor`) both work without a run
folder: ``TensorBoardLogger("logs")`` writes into ``logs/tensorboard``, ``WandbLogger()``
starts a W&B run in the default project and directory.

A missing extra is reported when the runs are planned (:func:`check_loggers`), before any
run starts. Adding a logger is one class with ``log`` and ``close`` and one line in
:data:`LOGGERS`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from plasticollapse.runs.config import ConfigError, field
from plasticollapse.runs.identity import identity_fields

#: The W&B project of runs that name none (field ``wandb_project``, ``$WANDB_PROJECT``).
DEFAULT_WANDB_PROJECT = "plasticollapse"


@dataclasses.dataclass(frozen=True)
class LoggerFields:
    """The loggers' own config fields, shared by every study's config. Execution fields
    (:data:`plasticollapse.runs.config.EXECUTION_FIELDS`): they change where rows are
    shown, never a run's identity."""

    wandb_project: str | None = field(
        None, help="W&B project (unset: $WANDB_PROJECT, else plasticollapse)"
    )
    wandb_group: str | None = field(
        None, help="W&B group (unset: $WANDB_RUN_GROUP, else the run's setting, seeds together)"
    )


@runtime_checkable
class Logger(Protocol):
    """Receives each metric row of a run, in order, then ``close()`` when the run ends.

    ``row`` holds plain JSON values (NaN already None); ``step`` is the row's position on
    the study's own axis (its ``step_key``: the task, the epoch).
    """

    def log(self, row: Mapping[str, Any], step: int) -> None: ...

    def close(self) -> None: ...


def jsonable(value: Any) -> Any:
    """Plain JSON types: tensors/numpy scalars -> float/int, NaN and inf -> null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    torch = sys.modules.get("torch")  # a tensor implies torch is loaded: no import here
    if torch is not None and isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
        return jsonable(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonlLogger:
    """One JSON object per line, appended and fsync'ed before ``log`` returns.

    A row is durable once logged, so a run killed at any moment keeps every row it
    reported; a line cut by a kill mid-write is skipped by the reader.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def log(self, row: Mapping[str, Any], step: int) -> None:
        line = json.dumps(jsonable(row), allow_nan=False)
        with self.path.open("a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def close(self) -> None:
        """Nothing to do: each row is written and closed as it is logged."""


def scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The row's numbers (bools as 0/1); strings, lists and missing values are left out."""
    return {key: float(value) for key, value in row.items() if isinstance(value, (int, float))}


class TensorBoardLogger:
    """Scalars into ``<folder>/tensorboard`` through ``torch.utils.tensorboard``; ``folder``
    is a run folder or any directory (``run_id`` and ``config`` are not needed)."""

    def __init__(
        self, folder: str | Path, run_id: str | None = None, config: Mapping[str, Any] | None = None
    ):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(folder) / "tensorboard"))

    def log(self, row: Mapping[str, Any], step: int) -> None:
        for key, value in scalars(row).items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A Weights & Biases run named after the run folder, in the project and group that
    :func:`wandb_project_and_group` picks.

    Offline unless ``WANDB_MODE`` is set (``online`` to upload as it runs): clusters often
    have no network, and an offline run syncs later with ``wandb sync <run folder>/wandb``.
    Silent unless ``WANDB_SILENT`` or ``WANDB_QUIET`` is set: a sweep starts one W&B run
    per run, and its banner each time would bury the sweep's own table.
    """

    def __init__(
        self,
        folder: str | Path | None = None,
        run_id: str | None = None,
        config: Mapping[str, Any] | None = None,
    ):
        import wandb

        config = dict(config or {})
        project, group = wandb_project_and_group(run_id, config)
        quiet = not {"WANDB_SILENT", "WANDB_QUIET"} & set(os.environ)
        self.run = wandb.init(
            project=project,
            group=group,
            name=run_id,
            dir=None if folder is None else str(folder),
            config=config,
            mode=None if "WANDB_MODE" in os.environ else "offline",
            settings=wandb.Settings(silent=True) if quiet else None,
        )

    def log(self, row: Mapping[str, Any], step: int) -> None:
        self.run.log(scalars(row), step=step)

    def close(self) -> None:
        self.run.finish()


def wandb_project_and_group(
    run_id: str | None, config: Mapping[str, Any]
) -> tuple[str, str | None]:
    """``(project, group)`` of a run's W&B run: the config's ``wandb_project`` /
    ``wandb_group``, else ``$WANDB_PROJECT`` / ``$WANDB_RUN_GROUP``, else
    :data:`DEFAULT_WANDB_PROJECT` and :func:`setting_group` (no group without a run id)."""
    project = config.get("wandb_project") or os.environ.get("WANDB_PROJECT")
    group = config.get("wandb_group") or os.environ.get("WANDB_RUN_GROUP")
    if not group and run_id is not None:
        group = setting_group(run_id, config)
    return project or DEFAULT_WANDB_PROJECT, group


def setting_group(run_id: str, config: Mapping[str, Any]) -> str:
    """The run's setting, the same for each of its seeds: the run id without its
    ``_seed<k>_<hash>`` tail, and a hash of what the run computes but its seed (so two
    settings that read alike, from two commands, stay apart): ``fte5_lr0.01_3f2a9c1e``."""
    label = re.sub(r"_?seed\d+_[0-9a-f]+$", "", run_id) or "run"
    setting = {k: v for k, v in identity_fields(dict(config)).items() if k != "seed"}
    digest = hashlib.sha256(json.dumps(setting, sort_keys=True, default=str).encode())
    return f"{label}_{digest.hexdigest()[:8]}"


@dataclass(frozen=True)
class LoggerKind:
    """A logger's class, the module it needs and the pip extra that installs that module."""

    factory: type
    module: str
    extra: str


#: The optional loggers, by the name the ``loggers`` field takes.
LOGGERS: dict[str, LoggerKind] = {
    "tensorboard": LoggerKind(TensorBoardLogger, "tensorboard", "tensorboard"),
    "wandb": LoggerKind(WandbLogger, "wandb", "wandb"),
}
#: Always on; accepted in ``loggers`` for readability.
ALWAYS = "jsonl"


def check_loggers(names: Iterable[str]) -> None:
    """ConfigError for an unknown logger, or one whose extra is not installed."""
    for name in names:
        if name == ALWAYS:
            continue
        if name not in LOGGERS:
            known = ", ".join([ALWAYS, *LOGGERS])
            raise ConfigError(f"unknown logger {name!r}; loggers: {known}")
        kind = LOGGERS[name]
        if find_spec(kind.module) is None:
            raise ConfigError(
                f"the {name} logger needs the {kind.module!r} package: "
                f"pip install 'plasticollapse[{kind.extra}]'"
            )


def open_loggers(
    names: Iterable[str], folder: Path, run_id: str, config: Mapping[str, Any]
) -> list[Logger]:
    """The optional loggers ``names`` asks for (metrics.jsonl is the folder's own)."""
    names = [n for n in dict.fromkeys(names) if n != ALWAYS]
    check_loggers(names)
    return [LOGGERS[n].factory(folder, run_id, config) for n in names]
