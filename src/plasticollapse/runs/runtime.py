"""Where and how a run executes: device choice, seeding, thread counts."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else is checked and returned."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device


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
    """Pin torch's intra-op threads (0 keeps torch's default)."""
    if threads and threads > 0:
        torch.set_num_threads(threads)


def derived_seed(seed: int, *keys: Any) -> int:
    """A 63-bit seed from ``(seed, *keys)``: independent streams per purpose, task and epoch."""
    text = ":".join(str(k) for k in (seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator_for(seed: int, *keys: Any) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(seed, *keys))


def fixed_subset(seed: int, what: str, n: int, size: int) -> torch.Tensor | None:
    """A seeded random subset of ``size`` of ``range(n)`` (sorted), or None for all."""
    if size <= 0 or size >= n:
        return None
    return torch.randperm(n, generator=generator_for(seed, what))[:size].sort().values
