"""Neural-collapse metrics NC1-NC4 of penultimate features, streamed or on a whole matrix.

Notation (docs/paper.md): N samples h_i in R^D with labels y_i, C classes, class means mu_c,
global mean mu_G, centred means M~ (rows mu_c - mu_G, C x D), classifier W (C x D, as
``nn.Linear.weight`` stores it) and bias b.

Conventions every collapse module follows (each metric's docstring gives its formula and
source):

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

Where the pieces live (all importable from here):

* :mod:`~plasticollapse.metrics.collapse_formulas`: the NC1-NC4 formulas on float64 class
  statistics (:class:`ClassStatistics`, :data:`EIGEN_RTOL`);
* :mod:`~plasticollapse.metrics.collapse_stream`: :class:`CollapseAccumulator`, which
  streams batches into those statistics (its docstring explains the shifted float64
  numerics and the memory NC4 takes);
* :mod:`~plasticollapse.metrics.collapse_loss`: :func:`nc1_loss`, the differentiable
  mini-batch NC1 for a regulariser;
* this module: :func:`collapse_metrics` on a whole feature matrix, which is the
  accumulator fed in row chunks, so the two agree to rounding.
"""

from __future__ import annotations

from plasticollapse.metrics.collapse_formulas import (
    EIGEN_RTOL,
    FLOAT32_EPS,
    ClassStatistics,
    between_class_spectrum,
    cdnv,
    closest_pair,
    coefficient_of_variation,
    default_pinv_rtol,
    equiangularity,
    etf_distance,
    etf_error,
    metrics_from_statistics,
    nc1_from_statistics,
    nc1_quotient,
    nc3_papyan,
    nc3_zhu,
    nearest_class_mean,
    pair_distances,
    sigma_b_condition,
    simplex_etf,
)
from plasticollapse.metrics.collapse_loss import nc1_loss
from plasticollapse.metrics.collapse_stream import CollapseAccumulator, check_features, to_tensor
from plasticollapse.metrics.threads import on_one_thread

__all__ = [
    "EIGEN_RTOL",
    "FLOAT32_EPS",
    "ClassStatistics",
    "CollapseAccumulator",
    "between_class_spectrum",
    "cdnv",
    "closest_pair",
    "coefficient_of_variation",
    "collapse_metrics",
    "default_pinv_rtol",
    "equiangularity",
    "etf_distance",
    "etf_error",
    "metrics_from_statistics",
    "nc1_from_statistics",
    "nc1_loss",
    "nc1_quotient",
    "nc3_papyan",
    "nc3_zhu",
    "nearest_class_mean",
    "pair_distances",
    "sigma_b_condition",
    "simplex_etf",
]

#: Elements per row chunk when :func:`collapse_metrics` feeds a whole matrix to the
#: accumulator: 1024 rows at D = 512, so the float64 temporaries (4 MB) are reused from the
#: heap instead of being mapped and zeroed afresh each chunk (measured ~1.5x faster than 8192).
_CHUNK_ELEMENTS = 1 << 19


@on_one_thread
def collapse_metrics(
    features,
    labels,
    num_classes: int,
    weight=None,
    bias=None,
    logits=None,
    pinv_rtol: float | None = None,
) -> dict[str, float]:
    """Neural-collapse metrics of a whole feature matrix (N x D, torch or numpy, any float).

    ``weight`` (C x D, as ``nn.Linear`` stores it) and ``bias`` (C,) are the classifier;
    ``logits`` (N x C) the network's outputs. Keys (C = classes present, see module doc):

    * ``nc1`` Tr(Sigma_W Sigma_B^+)/C with the exact rank-(C-1) inverse, ``nc1_pinv`` the
      same with the directions of Sigma_B at or below ``pinv_rtol`` x its largest
      eigenvalue dropped (the authors' ``torch.linalg.pinv`` convention; default
      ``pinv_rtol`` = D * eps_float32), ``nc1_quotient`` Tr Sigma_W / Tr Sigma_B, ``cdnv``,
      ``sigma_b_rank`` (eigen-directions of Sigma_B kept), ``sigma_b_condition`` (smallest
      kept eigenvalue / largest), ``closest_pair_ratio`` (closest pair of class means'
      distance / the mean pairwise distance) with the pair's labels ``closest_pair_a``,
      ``closest_pair_b``, ``num_classes_present``, ``num_classes_absent``;
    * ``nc2_equinorm_means``, ``nc2_equiangularity``, ``nc2_etf_error_means``;
    * with ``weight``: ``nc2_equinorm_weights``, ``nc2_etf_error_weights``, ``nc3_papyan``,
      ``nc3_zhu``;
    * with ``logits`` or ``weight``: ``nc4_agreement`` (fraction of samples whose predicted
      class, argmax of the logits or of W h + b, is the nearest class mean
      argmin_c ||h - mu_c||; Bonifazi et al. report this) and ``nc4_mismatch`` = 1 - agreement
      (Papyan et al.'s NCC mismatch). Given logits win over the classifier.

    Same code path as :class:`CollapseAccumulator` (fed in row chunks), so they agree.
    Runs on one thread whatever torch's setting (:mod:`~plasticollapse.metrics.threads`
    says why: it is faster).
    """
    x = check_features(features, check_finite=False)  # the accumulator checks
    acc = CollapseAccumulator(num_classes, x.shape[1], pinv_rtol=pinv_rtol)
    y = to_tensor(labels, "labels")
    z = None if logits is None else to_tensor(logits, "logits")
    if len(y) != len(x) or (z is not None and len(z) != len(x)):
        raise ValueError("features, labels and logits must have the same number of rows")
    step = max(1, _CHUNK_ELEMENTS // max(x.shape[1], 1))
    for start in range(0, max(len(x), 1), step):
        part = slice(start, start + step)
        # The accumulator's inner update: the chunks are views of x, which outlives the
        # accumulator, so NC4 keeps them uncopied; errors name rows of x, not of the chunk.
        acc._update(x[part], y[part], None if z is None else z[part], False, start)
    return acc.compute(weight, bias)
