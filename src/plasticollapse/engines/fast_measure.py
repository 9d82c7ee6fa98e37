"""The fast engine's first layer for measuring: relu(W_1 x + b_1) of a whole data set.

Measuring collapse after a task runs the network over the task's training images (60,000
for Permuted MNIST). Its most expensive layer is the first, 784 inputs wide, but MNIST's
inputs are ~80% zeros: :func:`first_layer_outputs` computes it from the CSR rows the fast
engine already built for training (shared through :func:`~plasticollapse.engines.fast.
shared_rows`), with the training step's own compiled first layer
(:func:`~plasticollapse.engines.fast_kernels.first_layer_forward`): the same activations
as ``relu(x[:, P] @ W_1.T + b_1)`` up to float32 rounding (another summation order).

It pays where inputs are sparse: on one core, 60,000 MNIST-like images (19% nonzero) take
0.06 s against 0.11 s for PyTorch's dense layer, Fashion-MNIST (50% nonzero) 0.13 s
against 0.11 s. Above :data:`SPARSE_DENSITY` the dense layer is used
(:func:`first_layer_outputs` returns None).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeGuard

import numpy as np
import torch
from numba import njit

from plasticollapse.engines import fast
from plasticollapse.engines.fast_kernels import STEP_MATH, first_layer_forward

if TYPE_CHECKING:
    from plasticollapse.models import MLP

#: Inputs with at most this fraction of nonzeros go through the sparse first layer.
SPARSE_DENSITY = 0.4


@njit(cache=True, nogil=True, fastmath=STEP_MATH)
def first_layer_rows(w1t, b1, sparse, indptr, indices, values, xd, out):
    """``out[s] = relu(W_1 x_s + b_1)`` for every row s (``w1t``: W_1 transposed)."""
    for s in range(out.shape[0]):
        lo = indptr[s] if sparse else 0
        hi = indptr[s + 1] if sparse else 0
        first_layer_forward(w1t, b1, out[s : s + 1], sparse, indices, values, xd, s, lo, hi)


def applies(model: torch.nn.Module, x: torch.Tensor) -> TypeGuard[MLP]:
    """Whether :func:`first_layer_outputs` can compute ``model``'s first layer on ``x``: a
    plain ReLU MLP with float32 parameters on the CPU and float32 CPU inputs."""
    from plasticollapse.models import MLP

    if not (isinstance(model, MLP) and model.plain) or x.device.type != "cpu":
        return False
    first = model.hidden_linears[0]
    return first.weight.device.type == "cpu" and first.weight.dtype == torch.float32


@torch.no_grad()
def first_layer_outputs(
    model: MLP, x: torch.Tensor, columns: torch.Tensor | None = None
) -> torch.Tensor | None:
    """``relu(x[:, P] @ W_1.T + b_1)`` (P = ``columns``, or none) of the MLP ``model`` for
    every row of ``x``, as an (N, h1) float32 tensor, without building ``x[:, P]``; None
    when ``x`` is denser than :data:`SPARSE_DENSITY` (a dense layer is then faster)."""
    first = model.hidden_linears[0]
    n_in = first.in_features
    rows = fast.shared_rows(x, n_in)
    if rows.density > SPARSE_DENSITY:
        return None
    w1 = first.weight.detach().numpy()
    if columns is None:
        w1t = np.ascontiguousarray(w1.T)
    else:
        perm = np.ascontiguousarray(columns.detach().cpu().numpy(), dtype=np.int64)
        w1t = np.ascontiguousarray(w1.T[fast.inverse_permutation(perm)])
    b1 = np.ascontiguousarray(first.bias.detach().numpy())
    out = np.empty((len(x), first.out_features), np.float32)
    first_layer_rows(w1t, b1, rows.sparse, rows.indptr, rows.indices, rows.values, rows.xd, out)
    return torch.from_numpy(out)
