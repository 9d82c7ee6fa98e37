"""Where and how a run executes: device choice (and its name), seeding, thread counts."""

from __future__ import annotations

import hashlib
import platform
import random
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else is checked and returned.

    Raises :class:`~plasticollapse.runs.config.ConfigError` (one line, naming the value) for
    a name torch does not know, and for ``cuda``/``cuda:N``/``mps`` this machine lacks.
    """
    from plasticollapse.runs.config import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(
            f"device {name!r} is not a device torch knows; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {name!r}: this torch ({torch.__version__}) sees no CUDA GPU; "
                "use --device cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {name!r}: there are {torch.cuda.device_count()} CUDA device(s), "
                f"numbered from 0; use --device cuda:0 or auto"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r}: MPS is not available here; use --device cpu")
    return device


def device_used(device: str) -> dict[str, str]:
    """What config.json records of the device: ``{"device": "cuda:0", "device_name":
    "NVIDIA H100 80GB HBM3", "device_requested": "auto"}``, the config's ``device`` resolved
    as the run resolves it (:func:`resolve_device`). A device this machine lacks is a
    ConfigError, as in the run itself."""
    resolved = resolve_device(device)
    return {
        "device": device_label(resolved),
        "device_name": device_model(resolved),
        "device_requested": device,
    }


def device_label(device: torch.device) -> str:
    """The device as config.json records it: ``cpu``, ``mps``, or a GPU with its index
    (``cuda`` alone computes on the current GPU, so it is recorded as ``cuda:<that one>``)."""
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def device_model(device: torch.device) -> str:
    """The hardware behind ``device``: the GPU's name (``NVIDIA H100 80GB HBM3``), else the
    CPU's model (``AMD EPYC 7B13``; on Apple silicon, whose GPU serves ``mps``, the chip's)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "xpu":
        return torch.xpu.get_device_name(device)
    return cpu_model()


def cpu_model() -> str:
    """The CPU's model name: /proc/cpuinfo's ``model name`` (Linux), ``sysctl`` (macOS),
    else what :mod:`platform` knows (``x86_64`` at worst)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, timeout=5
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.decode(errors="replace").strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for the run's own random draws.

    Runs draw their data order, permutations and splits from the returned generator (never
    from global state), so a seed fixes them regardless of what else ran in the process.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def set_threads(threads: int) -> None:
    """Pin torch's intra-op threads and the BLAS pools' (0 keeps the defaults).

    SciPy's OpenBLAS (the measuring's ``dsyrk``, :mod:`plasticollapse.metrics.gram`) has its
    own pool, sized by the machine's cores when it loads: it is loaded here and limited with
    ``threadpoolctl``, so that a one-thread run is one thread (two BLAS threads per worker
    on a machine full of workers made a gram 4x slower in CPU time, measured)."""
    if threads and threads > 0:
        torch.set_num_threads(threads)
        import scipy.linalg.blas  # noqa: F401 - load OpenBLAS so that the limit reaches it
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")


def derived_seed(seed: int, *keys: Any) -> int:
    """A 63-bit seed from ``(seed, *keys)``: independent streams per purpose, task and epoch."""
    text = ":".join(str(k) for k in (seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator_for(seed: int, *keys: Any) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(seed, *keys))


def fixed_subset(seed: int, what: str, n: int, size: int) -> torch.Tensor | None:
    """A seeded random subset of ``size`` of ``range(n)`` (sorted), or None for all.

    ``size`` 0 (or ``n``) means all; a ``size`` above ``n`` is a
    :class:`~plasticollapse.runs.config.ConfigError` naming the field ``what``, not a silent
    "all".
    """
    if size > n:
        from plasticollapse.runs.config import ConfigError

        raise ConfigError(
            f"{what} = {size} exceeds the {n} samples available; use at most {n}, or 0 for all"
        )
    if size <= 0 or size >= n:
        return None
    return torch.randperm(n, generator=generator_for(seed, what))[:size].sort().values


def check_classes(labels: torch.Tensor, num_classes: int, what: str) -> None:
    """Raise a ConfigError naming ``what`` when some of the ``num_classes`` classes have no
    sample in ``labels``: collapse metrics need every class's mean."""
    present = set(torch.unique(labels).tolist())
    missing = [c for c in range(num_classes) if c not in present]
    if missing:
        from plasticollapse.runs.config import ConfigError

        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise ConfigError(
            f"{what} leaves {len(missing)} of {num_classes} classes without a sample "
            f"(class {shown}); use more samples, or 0 for all"
        )
