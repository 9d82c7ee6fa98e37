"""Neural-collapse metrics NC1-NC4 of penultimate features, streamed or on a whole matrix.

Notation (PAPER.md): N samples h_i in R^D with labels y_i, C classes, class means mu_c,
global mean mu_G, centred means M~ (rows mu_c - mu_G, C x D), classifier W (C x D, as
``nn.Linear.weight`` stores it) and bias b.

Conventions this module fixes (each metric's docstring below gives its formula and source):

* **Classes present.** A class with no sample is left out of the means, of Sigma_B and of
  every formula (never a zero vector), and the classifier rows of absent classes are left
  out too so that W and M~ stay aligned. ``C`` in the formulas is the number of classes
  present; ``num_classes_present`` / ``num_classes_absent`` report it.
* **Global mean** mu_G is the mean of the samples, (1/N) sum_i h_i, as in Papyan et al.'s
  code (rhubarbwu/neural-collapse centres on the mean of the class means instead; the two
  agree on balanced data, which is where the paper measures).
* **Undefined metrics are NaN.** A formula that would divide by zero (fewer than two classes
  present, Sigma_B = 0 for constant features, two identical class means in CDNV, a zero
  classifier) gives ``float('nan')`` instead of raising.
* **Bad input raises.** NaN/inf in features, logits or classifier, labels outside
  [0, num_classes) and shape mismatches raise ``ValueError`` saying what to do.

Numerics
--------
:class:`CollapseAccumulator` streams batches into float64 sufficient statistics whatever the
input dtype: per-class counts, per-class *shifted* sums and squared norms, and one D x D
shifted second moment. Each class c gets a shift s_c (its mean in the first batch where it
appears) and the statistics are of d_i = h_i - s_{y_i}. Since s_c is close to mu_c, the
within-class scatter is recovered as sum_i d_i d_i^T - sum_c n_c m_c m_c^T with m_c = mu_c - s_c
small, so nothing cancels catastrophically: collapsed float32 features (within-class std
1e-3 around means of size ~3) keep ~1e-12 relative accuracy, where raw second moments
(E[h h^T] - mu mu^T) would lose six digits. The heavy work is one float64 matmul per batch
(d^T d); all metrics on 60,000 x 512 features cost about 1.6x one float64 H^T H on one CPU
thread (benchmarks/collapse_speed.py).

NC4 (nearest-class-mean agreement) needs the final class means before any sample can be
classified. By default (``keep_features=True``) the accumulator keeps each batch's features
(float32 for float16/bfloat16/float32 input, float64 for float64 input: N*D*4 bytes for
float32, e.g. 123 MB for 60,000 x 512) and the argmax of the logits (N int64), on the device
they came from, and classifies them in :meth:`CollapseAccumulator.compute`. With
``keep_features=False`` nothing grows with N; then run a second pass over the same data with
:meth:`CollapseAccumulator.update_agreement` to get NC4, or go without it.

:func:`collapse_metrics` on a whole matrix is this same accumulator fed in row chunks, so
the two agree to rounding. :func:`nc1_loss` is the differentiable mini-batch NC1 for a
regulariser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

#: Eigen-directions of Sigma_B with eigenvalue <= EIGEN_RTOL * (largest eigenvalue) are treated
#: as zero: float64 rounding leaves the null directions near 1e-16 relative, genuine ones
#: are many orders above.
EIGEN_RTOL = 1e-10

#: Elements per row chunk when :func:`collapse_metrics` feeds a whole matrix to the
#: accumulator: 1024 rows at D = 512, so the float64 temporaries (4 MB) are reused from the
#: heap instead of being mapped and zeroed afresh each chunk (measured ~1.5x faster than 8192).
_CHUNK_ELEMENTS = 1 << 19


# ---------------------------------------------------------------------------------------------
# Input checking
# ---------------------------------------------------------------------------------------------


def _to_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a torch tensor or numpy array, got {type(x)}") from e


def _check_finite(x: torch.Tensor, name: str, row_offset: int = 0) -> None:
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        first = row_offset + int((~finite).reshape(len(x), -1).any(1).nonzero()[0])
        raise ValueError(
            f"{name} contain {bad} NaN/inf value(s) (first in row {first}); the model has "
            "probably diverged (lower the learning rate) or the batch is corrupt. Remove those "
            "samples or fix the model before measuring collapse."
        )


def _check_features(features, dim: int | None = None, check_finite=True) -> torch.Tensor:
    x = _to_tensor(features, "features")
    if x.ndim != 2:
        raise ValueError(
            f"features must be 2-D (samples x dimensions), got shape {tuple(x.shape)}; "
            "flatten them with features.flatten(1)"
        )
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"features have {x.shape[1]} dimensions but the accumulator has dim={dim}")
    if not x.is_floating_point():
        x = x.to(torch.float64)
    if check_finite:
        _check_finite(x, "features")
    return x


def _check_labels(labels, n: int, num_classes: int, device: torch.device) -> torch.Tensor:
    y = _to_tensor(labels, "labels")
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"labels must be 1-D with {n} entries (one per row), got {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    y = y.to(device=device, dtype=torch.int64)
    if n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, num_classes={num_classes}), got values in "
            f"[{int(y.min())}, {int(y.max())}]; pass the right num_classes or remap the labels"
        )
    return y


def _check_logits(logits, n: int, num_classes: int) -> torch.Tensor:
    z = _to_tensor(logits, "logits")
    if z.ndim != 2 or z.shape != (n, num_classes):
        raise ValueError(
            f"logits must have shape (samples, num_classes) = ({n}, {num_classes}), "
            f"got {tuple(z.shape)}"
        )
    _check_finite(z, "logits")
    return z


def _check_classifier(weight, bias, num_classes: int, dim: int, device):
    if weight is None:
        if bias is not None:
            raise ValueError("bias given without weight; pass the classifier's weight too")
        return None, None
    w = _to_tensor(weight, "weight").to(device=device, dtype=torch.float64)
    if w.shape != (num_classes, dim):
        raise ValueError(
            f"weight must be (num_classes, dim) = ({num_classes}, {dim}) as nn.Linear stores it, "
            f"got {tuple(w.shape)}"
        )
    _check_finite(w, "classifier weight")
    b = None
    if bias is not None:
        b = _to_tensor(bias, "bias").to(device=device, dtype=torch.float64)
        if b.shape != (num_classes,):
            raise ValueError(f"bias must have shape ({num_classes},), got {tuple(b.shape)}")
        _check_finite(b, "classifier bias")
    return w, b


# ---------------------------------------------------------------------------------------------
# Metrics from class statistics (all float64)
# ---------------------------------------------------------------------------------------------


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


def nc1_from_statistics(within: torch.Tensor, centred_means: torch.Tensor) -> float:
    """NC1 = Tr(Sigma_W Sigma_B^+) / C (Papyan, Han & Donoho 2020, PNAS, Fig. 6).

    Sigma_B^+ is the pseudo-inverse over the top C-1 eigen-directions of Sigma_B (as Papyan's
    code does with ``svds(Sb, k=C-1)``), also dropping eigenvalues below EIGEN_RTOL x the
    largest. With Mc = M~, K = Mc Mc^T / C = U diag(l) U^T, one has
    Sigma_B^+ = (1/C) Mc^T U diag(l^-2) U^T Mc, hence
    NC1 = (1/C^2) sum_k u_k^T (Mc Sigma_W Mc^T) u_k / l_k^2. NaN if Sigma_B = 0.
    """
    c = centred_means.shape[0]
    evals, evecs = between_class_spectrum(centred_means)
    if len(evals) == 0:
        return math.nan
    projected = evecs.T @ centred_means  # rows: sqrt(C l_k) v_k, v_k eigenvectors of Sigma_B
    quad = ((projected @ within) * projected).sum(1)
    return float((quad / evals**2).sum() / c**2)


def nc1_quotient(within: torch.Tensor, centred_means: torch.Tensor) -> float:
    """Tr(Sigma_W) / Tr(Sigma_B), the pseudo-inverse-free NC1 companion (PAPER.md). NaN if
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
    ratios = []
    for i in range(c - 1):
        dist2 = ((means[i + 1 :] - means[i]) ** 2).sum(1)
        if bool((dist2 == 0).any()):
            return math.nan
        ratios.append((variances[i] + variances[i + 1 :]) / (2 * dist2))
    return float(torch.cat(ratios).mean())


def coefficient_of_variation(norms: torch.Tensor) -> float:
    """std/mean of a vector of norms, std with Bessel's correction (ddof=1) as
    ``torch.std`` in Papyan et al.'s code. NaN with < 2 entries or zero mean."""
    mean = float(norms.mean()) if len(norms) else 0.0
    if len(norms) < 2 or mean == 0:
        return math.nan
    return float(norms.std(unbiased=True)) / mean


def equiangularity(centred_means: torch.Tensor) -> float:
    """NC2 equiangularity = mean over c != c' of |cos(mu~_c, mu~_c') + 1/(C-1)| (PAPER.md;
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
    against centred-mean rows (PAPER.md writes the transposes). NaN if W or M~ is zero."""
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
    stats: ClassStatistics, num_classes: int, weight: torch.Tensor | None = None
) -> dict[str, float]:
    """Every NC1-NC3 key from class statistics; ``weight`` is the full (num_classes x D)
    float64 classifier or None. NC4 needs the samples and is added by the accumulator."""
    mc = stats.centred_means
    c = len(stats.present)
    evals, _ = between_class_spectrum(mc)
    out = {
        "num_classes_present": float(c),
        "num_classes_absent": float(num_classes - c),
        "nc1": nc1_from_statistics(stats.within, mc),
        "nc1_quotient": nc1_quotient(stats.within, mc),
        "cdnv": cdnv(stats.means, stats.variances),
        "sigma_b_rank": float(len(evals)),
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
    return _nearest_and_linear(features, stats)[0]


def _nearest_and_linear(features, stats: ClassStatistics, weight=None, bias=None):
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


# ---------------------------------------------------------------------------------------------
# Streaming accumulator
# ---------------------------------------------------------------------------------------------


class CollapseAccumulator:
    """Streams (features, labels[, logits]) batches; :meth:`compute` gives every NC metric.

    ``update`` adds a batch; ``compute(weight, bias)`` returns the same dict as
    :func:`collapse_metrics` on the concatenated data. State is float64 on the device of the
    first batch: counts (C), shifts, shifted sums (C x D), shifted squared norms (C) and one
    shifted second moment (D x D); see the module docstring for why shifts.

    NC4 (``nc4_agreement``, ``nc4_mismatch``): with ``keep_features=True`` (default) the
    features are kept (N*D*4 bytes for float32 input) and classified by nearest class mean in
    ``compute``. The network's prediction is argmax of the logits passed to ``update`` (all
    batches or none) or, without logits, argmax of ``weight @ h + bias`` given to
    ``compute``. The prediction ranges over all num_classes, the nearest mean over the
    classes present. With ``keep_features=False``, call :meth:`update_agreement` on every batch
    again after the first pass (the class means are then final).

    Example::

        acc = CollapseAccumulator(num_classes=10, dim=512)
        for x, y in loader:
            acc.update(features_of(x), y, logits=model(x))
        metrics = acc.compute(model.fc.weight, model.fc.bias)
    """

    def __init__(self, num_classes: int, dim: int, keep_features: bool = True):
        if num_classes < 1 or dim < 1:
            raise ValueError(f"num_classes and dim must be >= 1, got {num_classes}, {dim}")
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.keep_features = keep_features
        self.device: torch.device | None = None
        self._kept: list[torch.Tensor] = []
        self._predictions: list[torch.Tensor] = []
        self._batches_with_logits = 0
        self._batches = 0
        self._agree = 0
        self._agree_seen = 0
        self._frozen: ClassStatistics | None = None

    @property
    def num_samples(self) -> int:
        return 0 if self.device is None else int(self.counts.sum())

    def _allocate(self, device: torch.device) -> None:
        c, d, f64 = self.num_classes, self.dim, torch.float64
        self.device = device
        self.counts = torch.zeros(c, dtype=torch.int64, device=device)
        self.has_shift = torch.zeros(c, dtype=torch.bool, device=device)
        self.shift = torch.zeros(c, d, dtype=f64, device=device)
        self.shifted_sum = torch.zeros(c, d, dtype=f64, device=device)
        self.shifted_sq = torch.zeros(c, dtype=f64, device=device)
        self.second_moment = torch.zeros(d, d, dtype=f64, device=device)

    def update(self, features, labels, logits=None) -> None:
        """Add a batch: features (n x dim, any float dtype, torch or numpy), integer labels
        (n,), optionally the network's logits (n x num_classes) for NC4."""
        self._update(features, labels, logits, copy=True)

    def _update(self, features, labels, logits, copy: bool, row_offset: int = 0) -> None:
        if self._frozen is not None:
            raise ValueError("update() after update_agreement(): the first pass is over")
        x = _check_features(features, self.dim, check_finite=False)  # checked below, cheaper
        if self.device is None:
            self._allocate(x.device)
        x = x.to(self.device)
        y = _check_labels(labels, len(x), self.num_classes, self.device)
        predictions = None
        if logits is not None:
            predictions = _check_logits(logits, len(x), self.num_classes).argmax(1)
        if self._batches and (predictions is None) != (self._batches_with_logits == 0):
            raise ValueError("pass logits with every batch or with none")
        if len(x):
            self._accumulate(x, y, row_offset)
        self._batches += 1
        self._batches_with_logits += predictions is not None
        if self.keep_features and len(x):
            kept = x if x.dtype == torch.float64 else x.to(torch.float32)
            self._kept.append(kept.clone() if copy and kept is x else kept)
            if predictions is not None:
                self._predictions.append(predictions.to(self.device))

    def _accumulate(self, x: torch.Tensor, y: torch.Tensor, row_offset: int) -> None:
        """Add one batch to the shifted statistics.

        One float64 copy d of the batch has each row's class shift subtracted in place; the
        per-class sums and squared norms are scatter-adds over the labels, leaving one BLAS
        call (d^T d) as the only O(n D^2) work, and a fixed number of tensor ops per batch
        whatever the number of classes. New classes are shifted by their mean in this batch.
        Everything is checked finite (via the squared norms, which any NaN/inf reaches)
        before the state changes.
        """
        counts = torch.bincount(y, minlength=self.num_classes)
        d = x.to(torch.float64, copy=True)  # a copy, so in-place work is safe
        new = (counts > 0) & ~self.has_shift
        shift = self.shift
        if bool(new.any()):
            class_sums = torch.zeros_like(self.shifted_sum).index_add_(0, y, d)
            means = class_sums / counts.clamp_min(1).to(d.dtype)[:, None]
            shift = torch.where(new[:, None], means, self.shift)
        d -= shift[y]
        sums = torch.zeros_like(self.shifted_sum).index_add_(0, y, d)
        squares = torch.zeros_like(self.shifted_sq).index_add_(0, y, (d * d).sum(1))
        if not bool(torch.isfinite(squares).all()):
            _check_finite(x, "features", row_offset)
            raise ValueError("features are too large to square in float64; rescale them")
        self.shift = shift
        self.has_shift |= new
        self.second_moment.addmm_(d.T, d)
        self.shifted_sum += sums
        self.shifted_sq += squares
        self.counts += counts

    def statistics(self) -> ClassStatistics:
        """Float64 class statistics of the data so far (classes present only)."""
        if self.num_samples == 0:
            raise ValueError("no samples: call update() with at least one batch first")
        present = (self.counts > 0).nonzero().flatten()
        n = self.counts[present].to(torch.float64)
        offset = self.shifted_sum[present] / n[:, None]  # m_c = mu_c - s_c, small
        means = self.shift[present] + offset
        variances = self.shifted_sq[present] / n - (offset**2).sum(1)
        scaled = offset * n.sqrt()[:, None]
        within = (self.second_moment - scaled.T @ scaled) / n.sum()
        global_mean = (n[:, None] * means).sum(0) / n.sum()
        return ClassStatistics(
            present=present,
            counts=n,
            means=means,
            variances=variances.clamp_min(0),
            within=within,
            global_mean=global_mean,
        )

    def uncentred_gram(self) -> torch.Tensor:
        """sum_i h_i h_i^T (D x D, float64) of the samples so far, the gram that ranks of the
        (uncentred) feature matrix need, recovered from the shifted statistics without
        another pass: with d_i = h_i - s_{y_i} and t_c = sum_{y_i = c} d_i,
        sum_i h_i h_i^T = sum_i d_i d_i^T + sum_c (s_c t_c^T + t_c s_c^T + n_c s_c s_c^T).
        No term is much larger than the result (the shifts are class means), so the
        rounding is that of a direct float64 H^T H."""
        if self.num_samples == 0:
            raise ValueError("no samples: call update() with at least one batch first")
        s, t = self.shift, self.shifted_sum
        cross = s.T @ t
        return self.second_moment + (cross + cross.T) + (s.T * self.counts.to(s.dtype)) @ s

    def update_agreement(self, features, logits) -> None:
        """Second pass for ``keep_features=False``: count NC4 agreement of a batch against the
        final class means (frozen at the first call; further ``update`` calls raise)."""
        if self._frozen is None:
            self._frozen = self.statistics()
        x = _check_features(features, self.dim).to(self.device)
        predictions = _check_logits(logits, len(x), self.num_classes).argmax(1).to(self.device)
        self._agree += int((predictions == nearest_class_mean(x, self._frozen)).sum())
        self._agree_seen += len(x)

    def compute(self, weight=None, bias=None) -> dict[str, float]:
        """All metrics as a flat dict of floats (see :func:`collapse_metrics` for the keys)."""
        stats = self.statistics() if self._frozen is None else self._frozen
        w, b = _check_classifier(weight, bias, self.num_classes, self.dim, self.device)
        out = metrics_from_statistics(stats, self.num_classes, w)
        agreement = self._agreement(stats, w, b)
        if agreement is not None:
            out["nc4_agreement"] = agreement
            out["nc4_mismatch"] = 1.0 - agreement
        return out

    def _agreement(self, stats, weight, bias) -> float | None:
        if self._agree_seen:
            if self._agree_seen != self.num_samples:
                raise ValueError(
                    f"update_agreement saw {self._agree_seen} samples but update saw "
                    f"{self.num_samples}; run the second pass over exactly the same data"
                )
            return self._agree / self._agree_seen
        if not self._kept:
            return None
        have_logits = self._batches_with_logits > 0
        if not have_logits and weight is None:
            return None
        hits = 0
        for i, x in enumerate(self._kept):
            if have_logits:
                nearest, predicted = _nearest_and_linear(x, stats)[0], self._predictions[i]
            else:
                nearest, predicted = _nearest_and_linear(x, stats, weight, bias)
            hits += int((predicted == nearest).sum())
        return hits / self.num_samples


def collapse_metrics(
    features, labels, num_classes: int, weight=None, bias=None, logits=None
) -> dict[str, float]:
    """Neural-collapse metrics of a whole feature matrix (N x D, torch or numpy, any float).

    ``weight`` (C x D, as ``nn.Linear`` stores it) and ``bias`` (C,) are the classifier;
    ``logits`` (N x C) the network's outputs. Keys (C = classes present, see module doc):

    * ``nc1`` Tr(Sigma_W Sigma_B^+)/C, ``nc1_quotient`` Tr Sigma_W / Tr Sigma_B, ``cdnv``,
      ``sigma_b_rank`` (eigen-directions of Sigma_B kept), ``num_classes_present``,
      ``num_classes_absent``;
    * ``nc2_equinorm_means``, ``nc2_equiangularity``, ``nc2_etf_error_means``;
    * with ``weight``: ``nc2_equinorm_weights``, ``nc2_etf_error_weights``, ``nc3_papyan``,
      ``nc3_zhu``;
    * with ``logits`` or ``weight``: ``nc4_agreement`` (fraction of samples whose predicted
      class, argmax of the logits or of W h + b, is the nearest class mean
      argmin_c ||h - mu_c||; Bonifazi et al. report this) and ``nc4_mismatch`` = 1 - agreement
      (Papyan et al.'s NCC mismatch). Given logits win over the classifier.

    Same code path as :class:`CollapseAccumulator` (fed in row chunks), so they agree.
    """
    x = _check_features(features, check_finite=False)  # the accumulator checks
    acc = CollapseAccumulator(num_classes, x.shape[1])
    y = _to_tensor(labels, "labels")
    z = None if logits is None else _to_tensor(logits, "logits")
    if len(y) != len(x) or (z is not None and len(z) != len(x)):
        raise ValueError("features, labels and logits must have the same number of rows")
    step = max(1, _CHUNK_ELEMENTS // max(x.shape[1], 1))
    for start in range(0, max(len(x), 1), step):
        part = slice(start, start + step)
        acc._update(x[part], y[part], None if z is None else z[part], False, start)
    return acc.compute(weight, bias)


# ---------------------------------------------------------------------------------------------
# Differentiable mini-batch NC1
# ---------------------------------------------------------------------------------------------


def nc1_loss(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Differentiable NC1 = Tr(Sigma_W Sigma_B^+)/C of one mini-batch (a 0-d tensor).

    Same definition as :func:`collapse_metrics` over the classes present in the batch
    (C = their number; mu_G = batch sample mean), computed in float64 and returned in the
    features' dtype. Used by the paper's regulariser L = CE - lambda min(NC1_batch, 200).
    Returns 0 (not NaN, so a training step survives) when fewer than two classes are present
    or Sigma_B = 0. Mini-batch NC1 is biased low against the full-data value.

    Sigma_B^+ needs the range of K = (1/C) M~ M~^T. Its null vector is known exactly: with
    mu_G the sample mean, sum_c n_c mu~_c = 0, so u = n/||n|| spans K's kernel whenever
    rank K = C-1 (the usual case, D >= C-1). Then the top-(C-1) pseudo-inverse is
    K^+ = (K + a u u^T)^{-1} - u u^T / a (any a > 0; a = Tr K/(C-1) keeps it well scaled), a
    smooth function whose gradient stays finite even at an exact simplex ETF, where all
    nonzero eigenvalues coincide and ``eigh``'s backward divides by their gaps. Eigenvalues
    from ``eigvalsh`` (no gradient) decide the rank; when it is below C-1 (D < C-1, or
    coinciding means) the eigh-truncated form over the kept directions is used instead.
    NC1 = (1/C^2) Tr(P K^+ K^+) with P = M~ Sigma_W M~^T (see :func:`nc1_from_statistics`).
    """
    if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels):
        raise ValueError("nc1_loss needs features (n x D) and labels (n,) of the same length")
    out_dtype = features.dtype
    features = features.to(torch.float64)  # float32 Sigma_B inverts noise (PAPER.md)
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
