"""What a run folder's config.json records of where a result came from: the package's
version and commit (with a hash of uncommitted changes), torch's and Numba's versions, the
CPU Numba compiles for, the device, the host and the time."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from plasticollapse import __version__


def environment_info(device: str) -> dict[str, Any]:
    """Facts that make a result reproducible: versions, commit, device, host, time.

    ``device`` is the config's (``auto``, ``cuda``, ...); the record holds that as
    ``device_requested`` and, as ``device`` and ``device_name``, the device the run computes
    on and its hardware (see :func:`~plasticollapse.runs.runtime.device_used`).
    """
    import torch

    from plasticollapse.runs.runtime import device_used

    return {
        "plasticollapse_version": __version__,
        "git": git_info(Path(__file__)),
        "torch_version": torch.__version__,
        **numba_target(),
        **device_used(device),
        "host": platform.node(),
        "python": platform.python_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def numba_target() -> dict[str, str]:
    """Numba's version and the CPU it compiles the engines for (``NUMBA_CPU_NAME``, else
    the host's, as LLVM names it: ``znver3``, ``rocketlake``): rows are bit-identical only
    between runs with the same one (docs/reproducibility.md)."""
    import llvmlite.binding as llvm
    import numba
    from numba.core import config

    return {
        "numba_version": numba.__version__,
        "numba_cpu": getattr(config, "CPU_NAME", None) or llvm.get_host_cpu_name(),
    }


def git_info(source: Path) -> dict[str, Any] | None:
    """The commit the code in ``source`` (a file) comes from, and whether it was changed.

    ``{"commit": sha, "dirty": bool, "diff_sha256": 16 hex digits or None}``: the hash
    covers ``git diff HEAD`` and the names of untracked files, so two runs with the same
    commit and hash ran the same tracked code. None when ``source`` is not a tracked file
    of a git checkout (an installed wheel, even one inside a checkout's ``.venv``), so that
    no run is labelled with a commit it did not run.
    """

    def git(*args: str, cwd: Path = source.parent) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.decode(errors="replace") if out.returncode == 0 else None

    if git("ls-files", "--error-unmatch", source.name) is None:
        return None
    top = git("rev-parse", "--show-toplevel")
    commit = git("rev-parse", "HEAD")
    if not top or not commit:
        return None
    root = Path(top.strip())
    diff = git("diff", "HEAD", "--binary", cwd=root) or ""
    untracked = git("ls-files", "--others", "--exclude-standard", cwd=root) or ""
    dirty = bool(diff or untracked)
    digest = hashlib.sha256(f"{diff}\0{untracked}".encode()).hexdigest()[:16]
    return {"commit": commit.strip(), "dirty": dirty, "diff_sha256": digest if dirty else None}
