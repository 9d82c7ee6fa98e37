"""The retrained baseline, computed once per seed and task and shared by every run that
would compute the same one.

The retrained baseline (:func:`.measure.retrained_baseline`) trains a fresh network with
no remedy: its value depends on the stream, the network, the training budget, the seed and
the task, never on the remedies. A sweep or matrix over remedies (``full/matrix``: 9
settings of ``class_incremental`` per seed) would train the same baseline once per
setting, half of each run's cost. :class:`SharedBaselines` keeps each one as a plain JSON
file under the runs' output folder, ``<out>/_shared/retrained_baseline/<key>.json``, and a
run that finds its task's file reads it instead of training.

The key is the SHA-256 of everything that decides the numbers (:func:`baseline_identity`):
every config field but the remedies, their parameters and the fields that only say where
and how results are shown or measured; the task index; the device; torch's and Numba's
versions and Numba's CPU target; the package's version and, in a git checkout, its commit
and the hash of its uncommitted changes. Two runs share a file only where they would have
computed the same bits (docs/reproducibility.md): rows are identical with and without the
shared file. A file that does not parse, or holds anything but finite numbers under the
expected names, is ignored and rewritten (it is data: JSON, nothing that can run code).

Concurrency: files are written atomically (a temporary file renamed over the name), so a
reader sees a whole file or none. Two runs that need the same baseline at the same moment
both train it and write the same bits; the sweep's order (remedy by remedy, seeds within:
``matrix/plan.py``) makes that rare on a few workers, so later settings find their
baselines computed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from plasticollapse.remedies.fields import RemedyFields
from plasticollapse.runs.config import EXECUTION_FIELDS
from plasticollapse.runs.loggers import LoggerFields

#: The folder under the runs' ``out`` that holds the shared files.
FOLDER = Path("_shared") / "retrained_baseline"
#: Fields that say only how a run is measured: they do not change the baseline's numbers.
MEASURING_ONLY = frozenset(
    {
        "measure_every", "measure_samples", "layer_collapse", "plasticity_probe",
        "probe_samples", "probe_steps", "probe_lr", "retrained_baseline", "forgetting",
    }
)  # fmt: skip
#: Left out of the key: the measuring fields, the remedies and their parameters, and the
#: execution fields but ``threads`` (torch's thread count can change its rounding); the
#: device enters the key as resolved.
_SKIPPED = (
    MEASURING_ONLY
    | (EXECUTION_FIELDS - {"threads"})
    | {f.name for f in (*dataclasses.fields(RemedyFields), *dataclasses.fields(LoggerFields))}
)


@lru_cache(maxsize=1)
def _code_and_environment() -> dict[str, Any]:
    """The versions, the CPU target and the code that decide the baseline's rounding."""
    import plasticollapse
    from plasticollapse.runs.provenance import git_info, numba_target

    return {
        "plasticollapse": plasticollapse.__version__,
        "git": git_info(Path(__file__)),
        "torch_version": torch.__version__,
        **numba_target(),
    }


def baseline_identity(config: Any, task_index: int, device: torch.device) -> dict[str, Any]:
    """What decides the retrained baseline of ``task_index`` (module docstring)."""
    fields = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.name not in _SKIPPED
    }
    return {
        "study": type(config).STUDY,
        "config": fields,
        "task": int(task_index),
        "device": str(device),
        **_code_and_environment(),
    }


def baseline_key(identity: dict[str, Any]) -> str:
    """The file name's key: SHA-256 of the identity's canonical JSON (32 hex digits)."""
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class SharedBaselines:
    """The shared baseline files of the runs written under ``out``."""

    def __init__(self, out: str | Path):
        self.folder = Path(out) / FOLDER

    def path(self, identity: dict[str, Any]) -> Path:
        return self.folder / f"{baseline_key(identity)}.json"

    def read(self, identity: dict[str, Any], names: tuple[str, ...]) -> dict[str, float] | None:
        """The stored values for ``identity``, or None if there are none that can be used:
        no file, not JSON, another identity (a hash collision), or not a finite number under
        each of ``names``."""
        try:
            stored = json.loads(self.path(identity).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(stored, dict) or stored.get("identity") != _plain(identity):
            return None
        values = stored.get("values")
        if not isinstance(values, dict) or set(values) != set(names):
            return None
        if not all(_is_finite_number(values[k]) for k in names):
            return None
        return {k: float(values[k]) for k in names}

    def write(self, identity: dict[str, Any], values: dict[str, float]) -> None:
        """Store ``values`` for ``identity`` (atomically; an existing file is replaced)."""
        from plasticollapse.runs.folder import atomic_write_text

        record = {"identity": _plain(identity), "values": {k: float(v) for k, v in values.items()}}
        atomic_write_text(self.path(identity), json.dumps(record, indent=1, sort_keys=True))

    def get_or_compute(
        self, identity: dict[str, Any], names: tuple[str, ...], compute: Callable[[], dict]
    ) -> dict[str, float]:
        """The stored values for ``identity``, else ``compute()``'s (keys ``names``), stored
        for the next run."""
        found = self.read(identity, names)
        if found is not None:
            return found
        values = compute()
        self.write(identity, values)
        return values


def _plain(identity: dict[str, Any]) -> Any:
    """The identity as JSON gives it back (tuples as lists, other values as strings)."""
    return json.loads(json.dumps(identity, sort_keys=True, default=str))


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
