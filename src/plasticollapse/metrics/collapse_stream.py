"""The streaming CollapseAccumulator: float64 class statistics of features fed in batches.

:class:`CollapseAccumulator` takes (features, labels[, logits]) batches and turns them into
the :class:`~plasticollapse.metrics.collapse_formulas.ClassStatistics` that the NC formulas
need, so a whole training set is measured without holding its features. The checks of
every input (shapes, dtypes, label range, NaN/inf) are here too, at the top, since this is
where data enters.

Numerics
--------
The accumulator streams batches into float64 sufficient statistics whatever the input
dtype: per-class counts, per-class *shifted* sums and squared norms, and one D x D shifted
second moment. Each class c gets a shift s_c (its mean in the first batch where it
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
"""

from __future__ import annotations

import numpy as np
import torch

from plasticollapse.metrics.collapse_formulas import (
    ClassStatistics,
    metrics_from_statistics,
    nearest_and_linear,
    nearest_class_mean,
)
from plasticollapse.metrics.gram import SyrkGram
from plasticollapse.metrics.threads import on_one_thread

# ---------------------------------------------------------------------------------------------
# Input checking
# ---------------------------------------------------------------------------------------------


def to_tensor(x, name: str) -> torch.Tensor:
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


def check_features(features, dim: int | None = None, check_finite=True) -> torch.Tensor:
    x = to_tensor(features, "features")
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
    y = to_tensor(labels, "labels")
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
    z = to_tensor(logits, "logits")
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
    w = to_tensor(weight, "weight").to(device=device, dtype=torch.float64)
    if w.shape != (num_classes, dim):
        raise ValueError(
            f"weight must be (num_classes, dim) = ({num_classes}, {dim}) as nn.Linear stores it, "
            f"got {tuple(w.shape)}"
        )
    _check_finite(w, "classifier weight")
    b = None
    if bias is not None:
        b = to_tensor(bias, "bias").to(device=device, dtype=torch.float64)
        if b.shape != (num_classes,):
            raise ValueError(f"bias must have shape ({num_classes},), got {tuple(b.shape)}")
        _check_finite(b, "classifier bias")
    return w, b


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

    ``pinv_rtol`` is the cut-off of ``nc1_pinv`` relative to Sigma_B's largest eigenvalue
    (None: dim * eps_float32, ``torch.linalg.pinv``'s default on a float32 matrix; see
    :mod:`~plasticollapse.metrics.collapse_formulas`).

    Example::

        acc = CollapseAccumulator(num_classes=10, dim=512)
        for x, y in loader:
            acc.update(features_of(x), y, logits=model(x))
        metrics = acc.compute(model.fc.weight, model.fc.bias)
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        keep_features: bool = True,
        pinv_rtol: float | None = None,
    ):
        if num_classes < 1 or dim < 1:
            raise ValueError(f"num_classes and dim must be >= 1, got {num_classes}, {dim}")
        if pinv_rtol is not None and not 0 <= pinv_rtol < 1:
            raise ValueError(
                f"pinv_rtol must be in [0, 1) (a cut-off relative to Sigma_B's largest "
                f"eigenvalue), got {pinv_rtol}; None means dim * eps_float32"
            )
        self.pinv_rtol = pinv_rtol
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
        self._second_moment = SyrkGram()  # sum_i d_i d_i^T (float64; dsyrk on the CPU)

    @on_one_thread
    def update(self, features, labels, logits=None) -> None:
        """Add a batch: features (n x dim, any float dtype, torch or numpy), integer labels
        (n,), optionally the network's logits (n x num_classes) for NC4."""
        self._update(features, labels, logits, copy=True)

    def _update(self, features, labels, logits, copy: bool, row_offset: int = 0) -> None:
        if self._frozen is not None:
            raise ValueError("update() after update_agreement(): the first pass is over")
        x = check_features(features, self.dim, check_finite=False)  # checked below, cheaper
        if self.device is None:
            self._allocate(x.device)
        assert self.device is not None  # set by _allocate
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
        new = (counts > 0) & ~self.has_shift
        shift = self.shift
        if bool(new.any()):
            d = x.to(torch.float64, copy=True)  # a copy, so in-place work is safe
            class_sums = torch.zeros_like(self.shifted_sum).index_add_(0, y, d)
            means = class_sums / counts.clamp_min(1).to(d.dtype)[:, None]
            shift = torch.where(new[:, None], means, self.shift)
            d -= shift[y]
        else:  # the same float64 numbers, x - s_y, in one pass into the gathered shifts
            d = torch.index_select(shift, 0, y)  # (index_select: ~2x faster than shift[y])
            torch.sub(x, d, out=d)
        sums = torch.zeros_like(self.shifted_sum).index_add_(0, y, d)
        squares = torch.zeros_like(self.shifted_sq).index_add_(0, y, (d * d).sum(1))
        if not bool(torch.isfinite(squares).all()):
            _check_finite(x, "features", row_offset)
            raise ValueError("features are too large to square in float64; rescale them")
        self.shift = shift
        self.has_shift |= new
        self._second_moment.update(d)
        self.shifted_sum += sums
        self.shifted_sq += squares
        self.counts += counts

    @property
    def second_moment(self) -> torch.Tensor:
        """sum_i d_i d_i^T (D x D, float64) of the shifted rows d_i = h_i - s_{y_i} so far."""
        return self._second_moment.gram()

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

    @on_one_thread
    def update_agreement(self, features, logits) -> None:
        """Second pass for ``keep_features=False``: count NC4 agreement of a batch against the
        final class means (frozen at the first call; further ``update`` calls raise)."""
        if self._frozen is None:
            self._frozen = self.statistics()
        x = check_features(features, self.dim).to(self.device)
        predictions = _check_logits(logits, len(x), self.num_classes).argmax(1).to(self.device)
        self._agree += int((predictions == nearest_class_mean(x, self._frozen)).sum())
        self._agree_seen += len(x)

    @on_one_thread
    def compute(self, weight=None, bias=None) -> dict[str, float]:
        """All metrics as a flat dict of floats (see :func:`collapse_metrics` for the keys)."""
        stats = self.statistics() if self._frozen is None else self._frozen
        w, b = _check_classifier(weight, bias, self.num_classes, self.dim, self.device)
        out = metrics_from_statistics(stats, self.num_classes, w, self.pinv_rtol)
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
                nearest, predicted = nearest_and_linear(x, stats)[0], self._predictions[i]
            else:
                nearest, predicted = nearest_and_linear(x, stats, weight, bias)
            hits += int((predicted == nearest).sum())
        return hits / self.num_samples
