"""NC1-NC4 formulas from float64 class statistics: the mathematics of neural collapse.

Everything here takes the statistics of the classes present (:class:`ClassStatistics`:
counts, means, per-class variances, within-class covariance Sigma_W and global mean mu_G)
and returns plain floats; nothing here sees a sample. The streaming
:class:`~plasticollapse.metrics.collapse_stream.CollapseAccumulator` produces the statistics,
and :func:`~plasticollapse.metrics.collapse.collapse_metrics` is the entry point on a whole
feature matrix. The notation and conventions (classes present, mu_G, NaN for undefined
metrics) are in :mod:`plasticollapse.metrics.collapse`; each function's docstring gives
its formula and source.

Two NC1 conventions (docs/metrics.md says which to trust when):

* ``nc1``: Tr(Sigma_W Sigma_B^+)/C with Sigma_B^+ the exact float64 inverse on the top C-1
  eigen-directions of Sigma_B (only directions below :data:`EIGEN_RTOL` x the largest,
  rounding noise, are dropped). Every between-class direction counts, however weak, so
  when two class means nearly merge the within-class spread along their difference is
  divided by a tiny eigenvalue and NC1 spikes (10 to 1e6 on late Permuted Fashion-MNIST
  tasks).
* ``nc1_pinv``: the authors' convention (docs/paper.md, "Collapse metrics"): float32
  covariances inverted by ``torch.linalg.pinv`` with its default tolerance, which zeroes
  the singular values of Sigma_B at or below D * eps_float32 x the largest (D the feature
  dimension). That is the default of the torch they pinned, 1.11.0, not torch <= 1.10's
  rcond = 1e-15 (:func:`default_pinv_rtol` cites the source). Computed here in float64
  from the same statistics, keeping only the eigen-directions above ``rtol`` x the largest,
  so it does not depend on float32 rounding away from the cut-off.

``sigma_b_condition`` (smallest kept eigenvalue of Sigma_B over the largest) and the
closest pair of class means (:func:`closest_pair`) tell, row by row, when the two differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: Eigen-directions of Sigma_B with eigenvalue <= EIGEN_RTOL * (largest eigenvalue) are treated
#: as zero: float64 rounding leaves the null directions near 1e-16 relative, genuine ones
#: are many orders above.
EIGEN_RTOL = 1e-10

#: Machine epsilon of float32 (2^-23): ``torch.linalg.pinv``'s default tolerance on a float32
#: D x D matrix is D times this, relative to the largest singular value.
FLOAT32_EPS = float(torch.finfo(torch.float32).eps)


def default_pinv_rtol(dim: int) -> float:
    """The authors' cut-off for ``nc1_pinv``: ``torch.linalg.pinv``'s default relative
    tolerance for a float32 D x D matrix, rtol = max(D, D) * eps_float32 = D * 2^-23.

    Pinned to the authors' torch: their code calls ``torch.linalg.pinv(Sigma_B)`` with no
    tolerance (gianhess/dl_project, experiments/continual_experiments/lop/utils/
    neural_collapse.py, line 120) and pins torch==1.11.0 (experiments/continual_experiments/
    requirements.txt; their wandb runs record the same). At tag v1.11.0 (commit bc2c6ed),
    torch/linalg/__init__.py lines 1748-1752 document that an unspecified ``rtol`` is
    max(m, n) * eps of A's dtype for an m x n matrix A, and the generated
    ATen/ops/linalg_pinv.h gives the positional ``rcond`` overload no default, so ``pinv(A)``
    takes ``linalg_pinv.atol_rtol_tensor`` with atol = rtol = None.
    torch 1.10.0 instead documents ``pinv(A, rcond=1e-15, ...)``; that older default is not
    the authors'. The released torch 1.11.0 wheel, run on the test in tests/test_collapse.py
    (``test_default_pinv_rtol_is_torch_1_11s_default``), drops a direction at 2.9e-6
    relative for D = 100 (cut 1.2e-5) and keeps it for D = 10 (cut 1.2e-6), as here
    (docs/metrics.md, "The cut-off is the one the authors' torch used")."""
    return dim * FLOAT32_EPS


@dataclass
class ClassStatistics:
    """Float64 statistics of the classes present (C' of them), enough for NC1-NC3.

    ``present`` holds their indices into the full label range; ``within`` is Sigma_W (D x D);
    ``variances`` holds var_c = (1/n_c) sum_{y_i=c} ||h_i - mu_c||^2.
    """

    present: torch.Tensor
    counts: torch.Tensor
    means: torch.Tensor
    variances: torch.Tensor
    within: torch.Tensor
    global_mean: torch.Tensor

    @property
    def centred_means(self) -> torch.Tensor:
        return self.means - self.global_mean


def between_class_spectrum(centred_means: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nonzero eigenvalues of Sigma_B = (1/C) M~^T M~ and their eigenvectors in class space.

    Computed from the C x C matrix K = (1/C) M~ M~^T (same nonzero eigenvalues, cheap for
    D >> C). Kept: at most the top C-1 (Sigma_B has rank <= C-1 because the centred means
    are linearly dependent) and only eigenvalues above EIGEN_RTOL x the largest, so a
    rank-deficient Sigma_B (D < C-1, or coinciding means) never inverts rounding noise.
    Returns (eigenvalues descending, U with the matching eigenvectors of K as columns).
    """
    c = centred_means.shape[0]
    if c < 2:
        return centred_means.new_zeros(0), centred_means.new_zeros(c, 0)
    k = centred_means @ centred_means.T / c
    evals, evecs = torch.linalg.eigh(k)
    evals, evecs = evals.flip(0)[: c - 1], evecs.flip(1)[:, : c - 1]
    top = float(evals[0])
    keep = evals > EIGEN_RTOL * top if top > 0 else torch.zeros_like(evals, dtype=torch.bool)
    return evals[keep], evecs[:, keep]


def nc1_from_statistics(
    within: torch.Tensor, centred_means: torch.Tensor, rtol: float | None = None
) -> float:
    """NC1 = Tr(Sigma_W Sigma_B^+) / C (Papyan, Han & Donoho 2020, PNAS, Fig. 6).

    Sigma_B^+ is the pseudo-inverse over the top C-1 eigen-directions of Sigma_B (as Papyan's
    code does with ``svds(Sb, k=C-1)``), also dropping eigenvalues below EIGEN_RTOL x the
    largest. With Mc = M~, K = Mc Mc^T / C = U diag(l) U^T, one has
    Sigma_B^+ = (1/C) Mc^T U diag(l^-2) U^T Mc, hence
    NC1 = (1/C^2) sum_k u_k^T (Mc Sigma_W Mc^T) u_k / l_k^2. NaN if Sigma_B = 0.

    ``rtol`` (the ``nc1_pinv`` convention) also drops the directions with
    l_k <= rtol * l_max, as ``torch.linalg.pinv(Sigma_B, rtol=rtol)`` does.
    """
    c = centred_means.shape[0]
    evals, evecs = between_class_spectrum(centred_means)
    if len(evals) == 0:
        return math.nan
    if rtol is not None:
        keep = evals > rtol * evals[0]
        evals, evecs = evals[keep], evecs[:, keep]
    projected = evecs.T @ centred_means  # rows: sqrt(C l_k) v_k, v_k eigenvectors of Sigma_B
    quad = ((projected @ within) * projected).sum(1)
    return float((quad / evals**2).sum() / c**2)


def sigma_b_condition(evals: torch.Tensor) -> float:
    """Conditioning of Sigma_B: its smallest kept eigenvalue over its largest (1 for one
    direction, NaN for none), from :func:`between_class_spectrum`'s eigenvalues. Near
    1 / ``nc1``'s blow-up factor: NC1's terms are divided by the eigenvalues, so a value
    below :func:`default_pinv_rtol` means ``nc1`` and ``nc1_pinv`` differ."""
    return float(evals[-1] / evals[0]) if len(evals) else math.nan


def pair_distances(means: torch.Tensor) -> torch.Tensor:
    """||mu_c - mu_c'||^2 for c < c' in row order (0,1), (0,2), ..., (1,2), ...: from
    explicit differences, one row at a time, never ||a||^2 + ||b||^2 - 2ab (which would
    cancel for close means)."""
    c = means.shape[0]
    rows = [((means[i + 1 :] - means[i]) ** 2).sum(1) for i in range(c - 1)]
    return torch.cat(rows) if rows else means.new_zeros(0)


def closest_pair(means: torch.Tensor, present: torch.Tensor) -> dict[str, float]:
    """The two class means nearest each other, as the row that holds an NC1 spike shows it.

    ``closest_pair_ratio`` = min_{c<c'} ||mu_c - mu_c'|| / mean_{c<c'} ||mu_c - mu_c'||
    (1 for a simplex ETF, where all pairs are equally far; near 0 when two classes merge),
    and their labels ``closest_pair_a`` < ``closest_pair_b``. NaN with < 2 classes or when
    all means coincide.
    """
    nan = {"closest_pair_ratio": math.nan, "closest_pair_a": math.nan, "closest_pair_b": math.nan}
    c = means.shape[0]
    if c < 2:
        return nan
    dist = pair_distances(means).sqrt()
    mean = float(dist.mean())
    if mean == 0:
        return nan
    k = int(dist.argmin())
    i, j = torch.triu_indices(c, c, offset=1, device=means.device)[:, k].tolist()
    return {
        "closest_pair_ratio": float(dist[k]) / mean,
        "closest_pair_a": float(present[i]),
        "closest_pair_b": float(present[j]),
    }


def nc1_quotient(within: torch.Tensor, centred_means: torch.Tensor) -> float:
    """Tr(Sigma_W) / Tr(Sigma_B), the pseudo-inverse-free NC1 companion (docs/paper.md). NaN if
    Tr Sigma_B = 0."""
    trace_b = float((centred_means**2).sum()) / max(centred_means.shape[0], 1)
    return float(torch.trace(within)) / trace_b if trace_b > 0 else math.nan


def cdnv(means: torch.Tensor, variances: torch.Tensor) -> float:
    """Class-distance normalised variance (Galanti, Gyorgy & Hutter 2022, ICLR):
    mean over pairs c < c' of (var_c + var_c') / (2 ||mu_c - mu_c'||^2), with
    var_c = (1/n_c) sum_{y_i=c} ||h_i - mu_c||^2. NaN with < 2 classes or coinciding means.

    Pairwise distances are taken from explicit differences (one row at a time, C x D memory),
    not from ||a||^2 + ||b||^2 - 2ab, which would cancel for close means.
    """
    c = means.shape[0]
    if c < 2:
        return math.nan
    dist2 = pair_distances(means)
    if bool((dist2 == 0).any()):
        return math.nan
    i, j = torch.triu_indices(c, c, offset=1, device=means.device)
    return float(((variances[i] + variances[j]) / (2 * dist2)).mean())


def coefficient_of_variation(norms: torch.Tensor) -> float:
    """std/mean of a vector of norms, std with Bessel's correction (ddof=1) as
    ``torch.std`` in Papyan et al.'s code. NaN with < 2 entries or zero mean."""
    mean = float(norms.mean()) if len(norms) else 0.0
    if len(norms) < 2 or mean == 0:
        return math.nan
    return float(norms.std(unbiased=True)) / mean


def equiangularity(centred_means: torch.Tensor) -> float:
    """NC2 equiangularity = mean over c != c' of |cos(mu~_c, mu~_c') + 1/(C-1)| (docs/paper.md;
    Papyan et al. 2020 plot the spread of these cosines and their distance to -1/(C-1)).
    0 for a simplex ETF. NaN with < 2 classes or a zero centred mean."""
    c = centred_means.shape[0]
    norms = centred_means.norm(dim=1)
    if c < 2 or bool((norms == 0).any()):
        return math.nan
    unit = centred_means / norms[:, None]
    cos = unit @ unit.T
    off = ~torch.eye(c, dtype=torch.bool, device=cos.device)
    return float((cos[off] + 1.0 / (c - 1)).abs().mean())


def simplex_etf(c: int, device=None) -> torch.Tensor:
    """The normalised simplex-ETF Gram (I - 11^T/C) / sqrt(C-1) (unit Frobenius norm)."""
    eye = torch.eye(c, dtype=torch.float64, device=device)
    return (eye - 1.0 / c) / math.sqrt(c - 1)


def etf_distance(a: torch.Tensor) -> float:
    """|| A/||A||_F - (I - 11^T/C)/sqrt(C-1) ||_F for a C x C matrix A (Zhu et al. 2021,
    NeurIPS, code ``compute_ETF`` / ``compute_W_H_relation``). NaN if A = 0 or C < 2."""
    c = a.shape[0]
    norm = float(torch.linalg.matrix_norm(a))
    if c < 2 or norm == 0:
        return math.nan
    return float(torch.linalg.matrix_norm(a / norm - simplex_etf(c, a.device)))


def etf_error(g: torch.Tensor) -> float:
    """Simplex-ETF error of the rows of G (C x D): etf_distance(G G^T). With G = W this is
    Zhu et al. 2021's NC2 (the authors' NC2); with G = M~ it is the same test on the means."""
    return etf_distance(g @ g.T)


def nc3_papyan(weight: torch.Tensor, centred_means: torch.Tensor) -> float:
    """Self-duality || W/||W||_F - M~/||M~||_F ||_F^2 (Papyan et al. 2020, Fig. 5), W rows
    against centred-mean rows (docs/paper.md writes the transposes). NaN if W or M~ is zero."""
    nw = float(torch.linalg.matrix_norm(weight))
    nm = float(torch.linalg.matrix_norm(centred_means))
    if nw == 0 or nm == 0:
        return math.nan
    return float(((weight / nw - centred_means / nm) ** 2).sum())


def nc3_zhu(weight: torch.Tensor, centred_means: torch.Tensor) -> float:
    """Self-duality as Zhu et al. 2021 (the authors' NC3): etf_distance(W M~^T), the C x C
    matrix W M~^T normalised by its Frobenius norm against (I - 11^T/C)/sqrt(C-1).

    Note this is 0 when W and M~ are the *same* simplex ETF (W M~^T = the ETF Gram); a
    W proportional to M~ that is not equiangular is not 0 here, unlike :func:`nc3_papyan`.
    """
    return etf_distance(weight @ centred_means.T)


def metrics_from_statistics(
    stats: ClassStatistics,
    num_classes: int,
    weight: torch.Tensor | None = None,
    pinv_rtol: float | None = None,
) -> dict[str, float]:
    """Every NC1-NC3 key from class statistics; ``weight`` is the full (num_classes x D)
    float64 classifier or None. NC4 needs the samples and is added by the accumulator.
    ``pinv_rtol`` is ``nc1_pinv``'s cut-off (default :func:`default_pinv_rtol` of D)."""
    mc = stats.centred_means
    c = len(stats.present)
    evals, _ = between_class_spectrum(mc)
    rtol = default_pinv_rtol(mc.shape[1]) if pinv_rtol is None else pinv_rtol
    out = {
        "num_classes_present": float(c),
        "num_classes_absent": float(num_classes - c),
        "nc1": nc1_from_statistics(stats.within, mc),
        "nc1_pinv": nc1_from_statistics(stats.within, mc, rtol),
        "nc1_quotient": nc1_quotient(stats.within, mc),
        "cdnv": cdnv(stats.means, stats.variances),
        "sigma_b_rank": float(len(evals)),
        "sigma_b_condition": sigma_b_condition(evals),
        **closest_pair(stats.means, stats.present),
        "nc2_equinorm_means": coefficient_of_variation(mc.norm(dim=1)),
        "nc2_equiangularity": equiangularity(mc),
        "nc2_etf_error_means": etf_error(mc),
    }
    if weight is not None:
        w = weight[stats.present]
        out["nc2_equinorm_weights"] = coefficient_of_variation(w.norm(dim=1))
        out["nc2_etf_error_weights"] = etf_error(w)
        out["nc3_papyan"] = nc3_papyan(w, mc)
        out["nc3_zhu"] = nc3_zhu(w, mc)
    return out


def nearest_class_mean(features: torch.Tensor, stats: ClassStatistics) -> torch.Tensor:
    """argmin_c ||h - mu_c|| over the classes present, as label indices (one matmul)."""
    return nearest_and_linear(features, stats)[0]


def nearest_and_linear(features, stats: ClassStatistics, weight=None, bias=None):
    """(nearest class mean, argmax of W h + b or None), sharing one float64 matmul.

    ||h - mu_c||^2 = ||h - mu_G||^2 - 2 h.mu~_c + (2 mu_G.mu~_c + ||mu~_c||^2): the first term
    is the same for every c, so the nearest mean is argmin of the rest, a matmul against the
    centred means (differences between classes are O(||mu~||^2), far above rounding).
    """
    mc = stats.centred_means
    rows = mc if weight is None else torch.cat([mc, weight])
    products = features.to(torch.float64) @ rows.T
    c = len(mc)
    scores = (mc**2).sum(1) + 2 * (mc @ stats.global_mean) - 2 * products[:, :c]
    nearest = stats.present[scores.argmin(1)]
    if weight is None:
        return nearest, None
    logits = products[:, c:] if bias is None else products[:, c:] + bias
    return nearest, logits.argmax(1)
