"""The differentiable mini-batch NC1, for the NC1 regulariser (docs/paper.md).

:func:`nc1_loss` computes the same NC1 = Tr(Sigma_W Sigma_B^+)/C as
:func:`~plasticollapse.metrics.collapse.collapse_metrics`, but on one mini-batch and with a
gradient, so that a training loss can include it
(:func:`plasticollapse.remedies.functional.nc1_regularised_loss`).
"""

from __future__ import annotations

import torch

from plasticollapse.metrics.collapse_formulas import EIGEN_RTOL


def nc1_loss(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Differentiable NC1 = Tr(Sigma_W Sigma_B^+)/C of one mini-batch (a 0-d tensor).

    Same definition as :func:`~plasticollapse.metrics.collapse.collapse_metrics` over the
    classes present in the batch (C = their number; mu_G = batch sample mean), computed in
    float64 and returned in the features' dtype. Used by the paper's regulariser
    L = CE - lambda min(NC1_batch, 200). Returns 0 (not NaN, so a training step survives)
    when fewer than two classes are present or Sigma_B = 0. Mini-batch NC1 is biased low
    against the full-data value.

    Sigma_B^+ needs the range of K = (1/C) M~ M~^T. Its null vector is known exactly: with
    mu_G the sample mean, sum_c n_c mu~_c = 0, so u = n/||n|| spans K's kernel whenever
    rank K = C-1 (the usual case, D >= C-1). Then the top-(C-1) pseudo-inverse is
    K^+ = (K + a u u^T)^{-1} - u u^T / a (any a > 0; a = Tr K/(C-1) keeps it well scaled), a
    smooth function whose gradient stays finite even at an exact simplex ETF, where all
    nonzero eigenvalues coincide and ``eigh``'s backward divides by their gaps. Eigenvalues
    from ``eigvalsh`` (no gradient) decide the rank; when it is below C-1 (D < C-1, or
    coinciding means) the eigh-truncated form over the kept directions is used instead.
    NC1 = (1/C^2) Tr(P K^+ K^+) with P = M~ Sigma_W M~^T
    (see :func:`~plasticollapse.metrics.collapse_formulas.nc1_from_statistics`).
    """
    if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels):
        raise ValueError("nc1_loss needs features (n x D) and labels (n,) of the same length")
    out_dtype = features.dtype
    features = features.to(torch.float64)  # float32 Sigma_B inverts noise (docs/paper.md)
    labels = labels.to(features.device, torch.int64)
    present = torch.unique(labels)
    c = len(present)
    if c < 2:
        return (features.sum() * 0.0).to(out_dtype)
    index = torch.searchsorted(present, labels)
    onehot = torch.nn.functional.one_hot(index, c).to(features.dtype)
    counts = onehot.sum(0)
    means = onehot.T @ features / counts[:, None]
    centred = means - features.mean(0)
    deviations = features - means[index]
    projected = deviations @ centred.T  # n x C: M~ (h - mu_y), so P = projected^T projected / n
    p = projected.T @ projected / len(features)
    k = centred @ centred.T / c
    with torch.no_grad():
        evals = torch.linalg.eigvalsh(k).flip(0)[: c - 1]
        top = float(evals[0])
        rank = int((evals > EIGEN_RTOL * top).sum()) if top > 0 else 0
    if rank == 0:
        return (features.sum() * 0.0).to(out_dtype)
    if rank == c - 1:
        u = (counts / counts.norm()).detach()[:, None]
        scale = (torch.trace(k) / (c - 1)).detach()
        k_pinv = torch.linalg.inv(k + scale * (u @ u.T)) - (u @ u.T) / scale
        return (torch.trace(k_pinv @ p @ k_pinv) / c**2).to(out_dtype)
    evals, evecs = torch.linalg.eigh(k)
    evals, evecs = evals.flip(0)[:rank], evecs.flip(1)[:, :rank]
    return (((evecs * (p @ evecs)).sum(0) / evals**2).sum() / c**2).to(out_dtype)
