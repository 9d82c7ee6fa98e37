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

A missing extra is reported when the runs are planned (:func:`check_loggers`), before any
run starts. Adding a logger is one class with ``log`` and ``close`` and one line in
:data:`LOGGERS`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from plasticollapse.runs.config import ConfigError


@runtime_checkable
class Logger(Protocol):
    """Receives each metric row of a run, in order, then ``close()`` when the run ends.

    ``row`` holds plain JSON values (NaN already None); ``step`` is the row's position on
    the study's own axis (its ``step_key``: the task, the epoch).
    """

    def log(self, row: Mapping[str, Any], step: int) -> None: ...

    def close(self) -> None: ...


class JsonlLogger:
    """One JSON object per line, appended and fsync'ed before ``log`` returns.

    A row is durable once logged, so a run killed at any moment keeps every row it
    reported; a line cut by a kill mid-write is skipped by the reader.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def log(self, row: Mapping[str, Any], step: int) -> None:
        from plasticollapse.runs.folder import jsonable  # folder imports this module

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
    """Scalars into ``<run folder>/tensorboard`` through ``torch.utils.tensorboard``."""

    def __init__(self, folder: Path, run_id: str, config: Mapping[str, Any]):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(folder) / "tensorboard"))

    def log(self, row: Mapping[str, Any], step: int) -> None:
        for key, value in scalars(row).items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A Weights & Biases run: project ``plasticollapse``, named after the run folder.

    Offline unless ``WANDB_MODE`` is set (``online`` to upload as it runs): clusters often
    have no network, and an offline run syncs later with ``wandb sync <run folder>/wandb``.
    """

    def __init__(self, folder: Path, run_id: str, config: Mapping[str, Any]):
        import wandb

        self.run = wandb.init(
            project="plasticollapse",
            name=run_id,
            dir=str(folder),
            config=dict(config),
            mode=None if "WANDB_MODE" in os.environ else "offline",
        )

    def log(self, row: Mapping[str, Any], step: int) -> None:
        self.run.log(scalars(row), step=step)

    def close(self) -> None:
        self.run.finish()


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
