"""Run folders: what a run measured, in plain files that survive kills and resume.

A run folder holds::

    config.json     the resolved config, package version, git commit (and whether the
                    checkout had changes, with a hash of them), torch version, the device
                    used (``cpu``, ``cuda:0``) and its hardware's name
    metrics.jsonl   one JSON object per task / checkpoint, appended and fsync'ed as it ends
                    (the config's ``loggers`` also send each row to TensorBoard or W&B)
    checkpoint.pt   the latest training state, with the number of metric rows it
                    corresponds to (written to a temporary file, fsync'ed, renamed over);
                    plain data only, read with ``weights_only=True`` (runs/checkpoint.py)
    checkpoint.prev.pt  the checkpoint before it, the fallback when checkpoint.pt is unreadable
    summary.json    written once, when the run completes (its presence means "complete")
    error.txt       the traceback of a failed run (cleared when the run later succeeds)

Resume protocol: the checkpoint records how many metrics rows existed when it was saved.
On resume, rows after that count (written after the last checkpoint by a run killed before
its next checkpoint) are dropped and recomputed, so a resumed run writes exactly the rows an
uninterrupted one would. A checkpoint.pt that does not load (truncated, corrupt, or holding
a pickled object rather than plain data: never run), or that claims more rows than
metrics.jsonl holds, is set aside as ``checkpoint.corrupt.pt`` and the run resumes from
checkpoint.prev.pt instead (rows after *its* count are recomputed); when neither is usable
the run restarts from scratch, with no rows. Either way one line on stderr says what
happened.

Files are created with the permissions the umask allows (as ``open`` would), not the 0600 of
``mkstemp``, so collaborators sharing a run folder can read it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# jsonable is defined with the JSONL logger that needs it; importable from here as before.
from plasticollapse.runs.loggers import JsonlLogger, Logger, jsonable, open_loggers
from plasticollapse.runs.provenance import environment_info

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
CORRUPT_CHECKPOINT = "checkpoint.corrupt.pt"
SUMMARY = "summary.json"
ERROR = "error.txt"


class DivergenceError(RuntimeError):
    """Training produced a non-finite or exploding value; the run stops cleanly."""

    def __init__(self, step: int | float, metric: str, value: float):
        self.step, self.metric, self.value = step, metric, value
        super().__init__(f"training diverged at step {step}: {metric} = {value}")


def check_finite(step: int | float, limit: float | None = None, **values: float) -> None:
    """Raise :class:`DivergenceError` naming the first value that is NaN/inf (or > limit)."""
    for name, value in values.items():
        v = float(value)
        if not math.isfinite(v) or (limit is not None and abs(v) > limit):
            raise DivergenceError(step, name, v)


def current_umask() -> int:
    """This process's umask (read from ``/proc`` where possible, so no thread sees it change)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_folder(path: Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where folders cannot be fsync'ed)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w"):
    """Write ``path`` atomically: a temporary file in the same folder (``.<name>.*.tmp``),
    flushed and fsync'ed, given the umask's permissions, renamed over ``path``, and the
    folder fsync'ed. A failure (or kill) leaves ``path`` as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; honour the umask
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(Path(path)) as f:
        f.write(text)


def remove_temp_files(folder: Path) -> list[Path]:
    """Remove the ``.<name>.*.tmp`` files that writes killed midway left in ``folder``."""
    stale = [p for p in Path(folder).glob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def ensure_writable(folder: str | Path, what: str = "--out") -> None:
    """Create ``folder`` (with its parents) and check a file can be written in it.

    Raises :class:`~plasticollapse.runs.config.ConfigError` naming ``what`` and the path
    when a parent is a file, or the folder cannot be created or written (permissions, a
    read-only or immutable folder, ``/proc``), so a run fails before it starts.
    """
    from plasticollapse.runs.config import ConfigError

    folder = Path(folder)
    advice = f"choose another {what}" if what.startswith("--") else "choose another folder"
    for parent in [folder, *folder.parents]:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise ConfigError(f"{what} {folder}: {parent} is a file, not a folder; {advice}")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ConfigError(f"{what} {folder}: cannot write there ({reason}); {advice}") from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl; a line that does not parse (a run killed mid-write) ends it."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        if isinstance(row, dict):
            rows.append(row)
    return rows


class RunFolder:
    """One run's folder. Create with :meth:`open`, which checks it holds the same run.

    ``RunFolder(path)`` reads a folder (and appends rows to its metrics.jsonl only);
    :meth:`open` also starts the loggers the run's config asks for, which :meth:`close`
    ends.
    """

    def __init__(
        self, path: str | Path, loggers: list[Logger] | None = None, step_key: str | None = None
    ):
        self.path = Path(path)
        self.loggers: list[Logger] = [JsonlLogger(self.path / METRICS), *(loggers or [])]
        self.step_key: str | None = step_key
        self._rows_logged = 0

    # ----------------------------------------------------------------- identity
    @classmethod
    def open(
        cls,
        path: str | Path,
        experiment: str,
        config: dict[str, Any],
        device: str,
        run_id: str,
        step_key: str | None = None,
        identity: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        keys: dict[str, Any] | None = None,
    ) -> RunFolder:
        """Create the folder (or reopen it), refusing to mix two different runs in one.

        ``config["loggers"]`` names the loggers to start besides metrics.jsonl;
        ``step_key`` is the row key they use as the step (the row's index without one).
        ``identity`` maps a config dict to what its run computes (the study's
        :func:`~plasticollapse.runs.identity.run_identity`); the stored and the new config must
        agree on it (without it: on every non-execution field both know). ``keys`` (the
        study's ``step_key`` and ``setting_keys``) go into config.json beside the config, so
        that the tidy table reads a folder's rows without asking the study; a folder of an
        older run gets them when it resumes. They are not part of the config: the folder's
        name and identity do not change.
        """
        folder = cls(path, step_key=step_key)
        folder.path.mkdir(parents=True, exist_ok=True)
        remove_temp_files(folder.path)  # of writes a kill cut short; the caller holds the run
        if folder.config_path.exists():
            stored = folder.read_config()
            same = _same_run(stored["config"], config, identity)
            if stored.get("experiment") != experiment or not same:
                raise ValueError(
                    f"{folder.path} already holds a different run (its config.json differs); "
                    "choose another --out, or delete that folder to start over"
                )
            _record_execution(folder.config_path, stored, config, device, keys or {})
        else:
            record = {"experiment": experiment, "run_id": run_id, "config": config}
            record.update(keys or {})
            record.update(environment_info(device))
            atomic_write_text(folder.config_path, json.dumps(jsonable(record), indent=2) + "\n")
        folder.loggers += open_loggers(config.get("loggers", ()), folder.path, run_id, config)
        return folder

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def previous_checkpoint_path(self) -> Path:
        return self.path / PREVIOUS_CHECKPOINT

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY

    @property
    def error_path(self) -> Path:
        return self.path / ERROR

    def read_config(self) -> dict[str, Any]:
        """The folder's config.json; a ConfigError naming the file when it is not a run's."""
        return read_run_config(self.config_path)

    @property
    def is_complete(self) -> bool:
        return self.summary_path.exists()

    # ----------------------------------------------------------------- metrics
    def append_metrics(self, row: dict[str, Any]) -> None:
        """Append one row to metrics.jsonl, durable before returning, and to every logger."""
        row = jsonable(row)
        step = row.get(self.step_key) if self.step_key else None
        step = int(step) if isinstance(step, (int, float)) else self._rows_logged
        for logger in self.loggers:
            logger.log(row, step)
        self._rows_logged += 1

    def close(self) -> None:
        """End the loggers (flush TensorBoard's events, finish a W&B run)."""
        for logger in self.loggers:
            logger.close()

    def read_metrics(self) -> list[dict[str, Any]]:
        """All complete rows; a final line cut by a kill is ignored."""
        return read_jsonl(self.metrics_path) if self.metrics_path.exists() else []

    def truncate_metrics(self, keep: int) -> None:
        rows = self.read_metrics()[:keep]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    # ----------------------------------------------------------------- checkpoints
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Save ``state`` tagged with the current number of metrics rows, durably.

        The state goes to a temporary file in the folder, which is fsync'ed; the current
        checkpoint.pt becomes checkpoint.prev.pt and the new file is renamed to checkpoint.pt;
        then the folder is fsync'ed. A kill at any point leaves a loadable checkpoint: the new
        one, the old one, or (between the two renames) only checkpoint.prev.pt.
        """
        from plasticollapse.runs.checkpoint import write_state

        state = {**state, "metrics_rows": len(self.read_metrics())}
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{CHECKPOINT}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~current_umask())
            with os.fdopen(fd, "wb") as f:
                write_state(f, state)
                f.flush()
                os.fsync(f.fileno())
            if self.checkpoint_path.exists():
                os.replace(self.checkpoint_path, self.previous_checkpoint_path)
            os.replace(tmp, self.checkpoint_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_folder(self.path)

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The last usable checkpoint (metrics rows after it are dropped), or None for a
        fresh start (then no rows are kept).

        checkpoint.pt is used when it loads and its row count is at most the rows on disk;
        else checkpoint.prev.pt; else the run starts over. A checkpoint that was skipped
        because it is unreadable is renamed checkpoint.corrupt.pt (so that the next save
        does not keep it as the fallback), and one line on stderr says what happened.
        """
        rows = len(self.read_metrics())
        problems: list[str] = []
        for path in (self.checkpoint_path, self.previous_checkpoint_path):
            if not path.exists():
                continue
            state, problem = _load_state(path, rows)
            if state is not None:
                if problems:
                    self._set_aside_corrupt()
                    _say(
                        f"{self.path}: {'; '.join(problems)}; resuming from {path.name} "
                        f"(its {state['metrics_rows']} metrics rows kept, later ones redone)"
                    )
                self.truncate_metrics(state["metrics_rows"])
                return state
            problems.append(f"{path.name} {problem}")
        if problems:
            self._set_aside_corrupt()
            self.previous_checkpoint_path.unlink(missing_ok=True)
            _say(f"{self.path}: {'; '.join(problems)}; no usable checkpoint, restarting the run")
        if self.metrics_path.exists():
            self.truncate_metrics(0)
        return None

    def _set_aside_corrupt(self) -> None:
        if self.checkpoint_path.exists():
            os.replace(self.checkpoint_path, self.path / CORRUPT_CHECKPOINT)

    # ----------------------------------------------------------------- ending
    def write_summary(self, summary: dict[str, Any]) -> None:
        self.error_path.unlink(missing_ok=True)
        atomic_write_text(self.summary_path, json.dumps(jsonable(summary), indent=2) + "\n")

    def read_summary(self) -> dict[str, Any] | None:
        return json.loads(self.summary_path.read_text()) if self.is_complete else None

    def write_error(self, exc: BaseException) -> None:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        atomic_write_text(self.error_path, text)


def read_run_config(path: Path) -> dict[str, Any]:
    """A run's config.json: a dict with ``experiment`` and ``config``; ConfigError naming the
    file and what to do otherwise."""
    from plasticollapse.runs.config import ConfigError

    advice = "repair it, or move that run folder away"
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({e}); {advice}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e}); {advice}") from None
    if not (isinstance(record, dict) and isinstance(record.get("config"), dict)):
        raise ConfigError(f"{path}: not a run's config.json (no `config` object); {advice}")
    if not isinstance(record.get("experiment"), str):
        raise ConfigError(f"{path}: not a run's config.json (no `experiment` name); {advice}")
    return record


def _load_state(path: Path, rows: int) -> tuple[dict[str, Any] | None, str]:
    """``(state, "")`` when the checkpoint at ``path`` loads as plain data
    (:func:`~plasticollapse.runs.checkpoint.read_state`) and is consistent with ``rows``
    metrics rows on disk, else ``(None, why not)``."""
    from plasticollapse.runs.checkpoint import read_state

    state, problem = read_state(path)
    if problem:
        return None, problem
    kept = state.get("metrics_rows") if isinstance(state, dict) else None
    if not isinstance(kept, int) or kept < 0:
        return None, "is not a checkpoint of this run (no metrics row count)"
    if kept > rows:
        return None, f"is ahead of metrics.jsonl ({kept} rows recorded, {rows} on disk)"
    return state, ""


def _say(line: str) -> None:
    print(f"plasticollapse: {line}", file=sys.stderr, flush=True)


def _record_execution(
    path: Path, record: dict[str, Any], config: dict[str, Any], device: str, keys: dict[str, Any]
) -> None:
    """A resumed run's config.json takes the execution fields (threads, device, ...) it now
    runs with, and the device it now computes on, so that it records how the run last
    executed; and the study's step and setting keys, when a folder written before they were
    recorded lacks them."""
    from plasticollapse.runs.config import EXECUTION_FIELDS
    from plasticollapse.runs.runtime import device_used

    changed = {
        k: v
        for k, v in jsonable(config).items()
        if k in EXECUTION_FIELDS and record["config"].get(k) != v
    }
    used = {k: v for k, v in device_used(device).items() if record.get(k) != v}
    used.update({k: v for k, v in jsonable(keys).items() if k not in record})
    if changed or used:
        record["config"].update(changed)
        record.update(used)
        atomic_write_text(path, json.dumps(jsonable(record), indent=2) + "\n")


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    from plasticollapse.runs.identity import identity_fields

    return identity_fields(config)


def _same_run(
    stored: dict[str, Any],
    config: dict[str, Any],
    identity: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> bool:
    """Whether a folder's stored config describes the run ``config`` asks for.

    With ``identity``: whether both have the same identity (a stored config that no longer
    parses is another run). Without: only the fields both know are compared, since a folder
    written before a study gained a field lacks it.
    """
    if identity is not None:
        try:
            return identity(stored) == identity(config)
        except ValueError:
            return False
    old, new = _identity(stored), _identity(config)
    return all(old[key] == new[key] for key in old.keys() & new.keys())


def progress_bar(**kwargs: Any):
    """A tqdm bar that is quiet when stderr is not a terminal (``disable=None``)."""
    from tqdm.auto import tqdm

    return tqdm(disable=None, dynamic_ncols=True, **kwargs)
