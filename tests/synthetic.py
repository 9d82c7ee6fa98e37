"""Synthetic data for tests and benchmarks: MNIST-like sparsity without a download.

Importable as ``synthetic`` from the tests (pytest's default "prepend" import mode puts the
folder of a test module on ``sys.path``, as ``tests/`` has no ``__init__.py``) and from
``benchmarks/online_speed.py``, which puts this folder on ``sys.path`` itself. Not part of
the package: no study uses it.
"""

from __future__ import annotations

import torch


def mnist_like(
    n: int, dim: int = 784, classes: int = 10, density: float = 0.2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse, learnable MNIST-like data: each class has a random "stroke" pattern of about
    ``density / 0.8`` of the pixels; a sample keeps 70% of its class's pixels, borrows 15%
    of another class's and adds a little noise, with intensities uniform in (0, 1].

    Returns x (n, dim) float32 and y (n,) int64. For tests and benchmarks that need
    MNIST-like sparsity without a download."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(classes, dim, generator=g) < density / 0.8
    y = torch.randint(0, classes, (n,), generator=g)
    other = torch.randint(0, classes, (n,), generator=g)
    on = (protos[y] & (torch.rand(n, dim, generator=g) < 0.7)) | (
        protos[other] & (torch.rand(n, dim, generator=g) < 0.15)
    )
    on |= torch.rand(n, dim, generator=g) < 0.02
    x = (1.0 - torch.rand(n, dim, generator=g)) * on
    return x.contiguous(), y
