"""Neural regression collapse (NRC1-NRC3): collapse metrics for networks that regress.

Andriopoulos, Dong, Guo, Zhao, Ross, "The Prevalence of Neural Collapse in Neural
Multivariate Regression" (NeurIPS 2024). With M samples, penultimate features h_i in R^d,
the last layer's weight W in R^{n x d} (n targets) and targets y_i in R^n:

- NRC1 (features collapse onto n principal directions)::

      NRC1 = (1/M) sum_i || h^_i - P_PCA_n h^_i ||^2,      h^_i = h_i / ||h_i||

  with P_PCA_n the orthogonal projection onto the span of the first n principal
  components of the (centred) features.
- NRC2 (features collapse onto the row space of W, "self-duality")::

      NRC2 = (1/M) sum_i || h^_i - P_W h^_i ||^2

  with P_W the orthogonal projection onto the span of W's rows.
- NRC3 (W W^T takes the shape that the targets' covariance dictates)::

      NRC3 = min_{gamma in [0, lambda_min(Sigma)]}
             || W W^T / ||W W^T||_F - A_gamma / ||A_gamma||_F ||_F^2,
      A_gamma = Sigma^{1/2} - sqrt(gamma) I_n

  with Sigma the covariance of the targets and Sigma^{1/2} its principal square root.

All three are 0 under exact collapse. NRC1 and NRC2 lie in [0, 1] (squared distances of unit
vectors to a subspace), NRC3 in [0, 4] (the squared distance of two unit-norm matrices). The
authors' public code (nc_toolbox) minimises NRC3 over gamma in [0, 1] with a Cholesky factor
in place of Sigma^{1/2}; here gamma ranges over the interval the paper's theorem gives and
Sigma^{1/2} is the symmetric square root, so the minimum is 0 exactly when W W^T has the
paper's form. Everything is computed in float64.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize_scalar

__all__ = ["nrc1", "nrc2", "nrc3", "regression_collapse_metrics"]


def _float64(a: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    array = np.asarray(a, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError("regression collapse metrics need finite inputs; got NaN or inf")
    return array


def _unit_rows(h: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(h, axis=1, keepdims=True)
    # A zero feature vector (every unit dead on that sample) has no direction: it counts as
    # lying in every subspace, i.e. adds 0, rather than poisoning the mean with NaN.
    return np.divide(h, norms, out=np.zeros_like(h), where=norms > 0)


def _residual_to_span(h_unit: np.ndarray, basis: np.ndarray) -> float:
    """(1/M) sum_i ||h_i - Q Q^T h_i||^2 for the orthonormal basis Q of span(basis columns)."""
    q, r = np.linalg.qr(basis)
    keep = np.abs(np.diag(r)) > 1e-12 * max(1.0, float(np.abs(r).max(initial=0.0)))
    q = q[:, keep]
    residual = h_unit - (h_unit @ q) @ q.T
    return float(np.mean(np.sum(residual**2, axis=1)))


def nrc1(features: torch.Tensor | np.ndarray, n_targets: int) -> float:
    """NRC1: mean squared distance of the unit features to their top-``n_targets`` principal
    subspace (see the module docstring)."""
    h = _float64(features)
    if h.ndim != 2 or not 1 <= n_targets <= h.shape[1]:
        raise ValueError(f"features must be (M, d) with 1 <= n_targets <= d; got {h.shape}")
    centred = h - h.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return _residual_to_span(_unit_rows(h), vt[:n_targets].T)


def nrc2(features: torch.Tensor | np.ndarray, weight: torch.Tensor | np.ndarray) -> float:
    """NRC2: mean squared distance of the unit features to the row space of ``weight``."""
    h, w = _float64(features), _float64(weight)
    if w.ndim != 2 or h.ndim != 2 or w.shape[1] != h.shape[1]:
        raise ValueError(f"weight must be (n, d) for features (M, d); got {w.shape}, {h.shape}")
    return _residual_to_span(_unit_rows(h), w.T)


def _normalised(a: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(a)
    return a / norm if norm > 0 else a


def nrc3(weight: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray) -> float:
    """NRC3: distance of the normalised W W^T to the closest normalised Sigma^{1/2} - sqrt(g) I,
    g in [0, lambda_min(Sigma)], Sigma the covariance of ``targets`` (M, n)."""
    w, y = _float64(weight), _float64(targets)
    if y.ndim == 1:
        y = y[:, None]
    if w.shape[0] != y.shape[1]:
        raise ValueError(f"weight has {w.shape[0]} rows for {y.shape[1]} targets")
    sigma = np.atleast_2d(np.cov(y, rowvar=False, bias=True))
    eigenvalues, vectors = np.linalg.eigh(sigma)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    root = (vectors * np.sqrt(eigenvalues)) @ vectors.T
    gram = _normalised(w @ w.T)
    identity = np.eye(len(sigma))

    def distance(gamma: float) -> float:
        shape = _normalised(root - np.sqrt(gamma) * identity)
        return float(np.sum((gram - shape) ** 2))

    upper = float(eigenvalues.min())
    if upper <= 0:
        return distance(0.0)
    best = minimize_scalar(distance, bounds=(0.0, upper), method="bounded")
    return min(float(best.fun), distance(0.0), distance(upper))


def regression_collapse_metrics(
    features: torch.Tensor | np.ndarray,
    weight: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray,
) -> dict[str, float]:
    """``{"nrc1", "nrc2", "nrc3"}`` of one set of features, the head's weight and the targets."""
    w = _float64(weight)
    return {
        "nrc1": nrc1(features, w.shape[0]),
        "nrc2": nrc2(features, w),
        "nrc3": nrc3(w, targets),
    }
