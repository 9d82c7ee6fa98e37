"""Run locks: one ``.lock`` file per run folder, so two sweeps never compute one run twice.

A worker takes the run's lock (created with ``O_CREAT | O_EXCL``) before executing it and a
heartbeat thread touches it every :data:`HEARTBEAT_S` seconds. A lock is stale, and broken,
when its holder was on this host and is gone, a zombie (killed, not yet reaped), or a newer
process that reused its pid; or when its heartbeat is older than :data:`STALE_AFTER_S`
seconds, which covers holders on other hosts (Ray, SLURM) that died without cleaning up.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

#: Name of the lock file inside a run folder.
LOCK = ".lock"
#: How often a lock holder refreshes its lock's mtime.
HEARTBEAT_S = 30.0
#: A lock whose mtime is older than this is stale whoever holds it (10 missed heartbeats).
STALE_AFTER_S = 300.0


# --------------------------------------------------------------------------- locks


class RunLock:
    """An exclusive ``.lock`` file in a run folder, refreshed by a heartbeat while held.

    The file holds ``{"host", "pid", "since"}`` of its holder as JSON, and ``"start"``, the
    holder's start time in clock ticks since boot, where ``/proc`` gives it (so that a process
    that later reuses the pid is not taken for the holder). :meth:`acquire` is atomic
    (``O_CREAT | O_EXCL``, atomic on local file systems and NFSv3+); breaking a stale lock
    renames it aside first and checks it renamed the lock it judged stale.
    """

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self.held = False

    def acquire(self) -> bool:
        """Take the lock; False when a live holder has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._break_if_stale():
                    return False
                continue
            record = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
            state = _process_state(os.getpid()) if _proc_usable() else None
            if state is not None and state[1] is not None:
                record["start"] = state[1]
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            self.held = True
            self._stop.clear()
            self._heartbeat = threading.Thread(target=self._beat, name="run-lock", daemon=True)
            self._heartbeat.start()
            return True
        return False

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        self.path.unlink(missing_ok=True)
        self.held = False

    def holder(self) -> dict[str, Any] | None:
        """The holder's record, or None when unlocked (or the record is unreadable)."""
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def is_live(self) -> bool:
        """True when the lock exists and is not stale."""
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False
        return not _is_stale(self.holder(), age)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:  # folder removed under us: nothing left to keep alive
                return

    def _break_if_stale(self) -> bool:
        """Remove a stale lock; True when the caller should retry taking it."""
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True  # released meanwhile
        judged = self.holder()
        if not _is_stale(judged, age):
            return False
        aside = self.path.with_name(f"{LOCK}.stale.{socket.gethostname()}.{os.getpid()}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return True
        # Another breaker may have broken it and a new holder taken it between our look and
        # our rename: then we moved a live lock, and give it back.
        if _read_json(aside) != judged:
            with contextlib.suppress(OSError):  # a newer holder already took it: leave it
                os.link(aside, self.path)
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _is_stale(holder: dict[str, Any] | None, age_s: float) -> bool:
    if age_s > STALE_AFTER_S:
        return True
    if holder is None:  # being written right now, or a holder died mid-write: wait for age
        return False
    if holder.get("host") == socket.gethostname():
        start = holder.get("start")
        return not _pid_alive(int(holder.get("pid", -1)), start if isinstance(start, int) else None)
    return False


def _pid_alive(pid: int, start: int | None = None) -> bool:
    """True when process ``pid`` (on this host) is running: it exists and is not a zombie.

    A killed process stays in the process table as a zombie until its parent (or init, when
    it was orphaned) reaps it, a second or two after a SIGKILL of a whole process group;
    ``kill(pid, 0)`` succeeds on a zombie, so its state is read too (``/proc`` on Linux,
    ``ps`` elsewhere). ``start``: the holder's start time recorded in its lock; a live
    process with another start time reused the pid, and the holder is gone. When the state
    cannot be read, a pid that exists counts as alive.
    """
    if pid <= 0:
        return False
    foreign = False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else: still look at its state
        foreign = True
    state = _process_state(pid)
    if state is None:  # reaped since kill(), or hidden from us (/proc mounted hidepid=2)
        return foreign
    letter, started = state
    if letter[:1] in ("Z", "X", "x"):  # zombie, or dead and being reaped
        return False
    return start is None or started is None or started == start


@functools.cache
def _proc_usable() -> bool:
    """True when ``/proc`` describes this process's own pid namespace (Linux)."""
    try:
        return Path("/proc/self/stat").read_text().split(" ", 1)[0] == str(os.getpid())
    except (OSError, ValueError):
        return False


def _process_state(pid: int) -> tuple[str, int | None] | None:
    """``(state, start)`` of a process: its state letters (``R``, ``S``, ``Z`` ...) and its
    start time in clock ticks since boot (None where unknown). None when there is no such
    process; ``("?", None)`` when this system cannot tell."""
    if _proc_usable():
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return None
        except OSError:
            return ("?", None)
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split at the
        # last ")"; starttime is field 22, the 20th after the state.
        fields = text[text.rfind(")") + 1 :].split()
        try:
            return fields[0], int(fields[19])
        except (IndexError, ValueError):
            return (fields[0] if fields else "?"), None
    try:  # macOS, BSD: no /proc
        ps = subprocess.run(
            ["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ("?", None)
    state = ps.stdout.strip()
    if not state:
        # ps lists nothing and exits 1 for a pid that does not exist; anything else is unsure
        return None if ps.returncode == 1 and not ps.stderr.strip() else ("?", None)
    return state, None
