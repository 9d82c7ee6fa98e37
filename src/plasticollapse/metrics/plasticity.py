"""Plasticity metrics: dormant and dead units, feature ranks and norm, weight size, drift,
gradients.

Conventions:

* **Units.** Activations are N x H (samples x units). For convolutional activations
  (N, C, *spatial) a unit is a channel: its |h| is averaged over the spatial positions
  (as ReDo does for conv layers), and ranks use the N x C matrix of position-averaged
  activations.
* **Ranks are of the uncentred matrix** (no mean subtracted), as Kumar et al. 2021 and
  Dohare et al. 2024 compute them on the feature matrix Phi.
* **Singular values** of a tall N x D matrix come from ``eigvalsh`` of the D x D gram in
  float64 (tiny negative eigenvalues clamped to 0): one matmul instead of an SVD of N x D.
  Singular values below ~1e-8 x the largest lose relative accuracy that way; effective rank
  and srank weight them by sigma itself, so they are unaffected.
* **Zero matrices** (every unit silent) have every rank 0.
* **Any activation.** Dormant and dead units are defined through |h|, so they apply to
  the outputs of any activation (ReLU, GELU, LeakyReLU, tanh, ...), not only to ReLUs.

:class:`UnitStatistics` streams batches (sum |h| per unit and the float64 gram) so the same
metrics work without keeping the activations; the functions are that class on one batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from plasticollapse.metrics.gram import SyrkGram
from plasticollapse.metrics.threads import on_one_thread

DORMANT_TAU = 0.025
SRANK_DELTA = 0.01


def _as_unit_matrix(activations) -> torch.Tensor:
    """N x H float64 matrix; (N, C, *spatial) is averaged over the spatial positions."""
    a = torch.as_tensor(activations).detach()
    if a.ndim == 1:
        raise ValueError("activations must be (samples, units[, *spatial]), got a 1-D tensor")
    if a.ndim > 2:
        a = a.flatten(2).mean(2) if a.is_floating_point() else a.flatten(2).double().mean(2)
    return a.to(torch.float64)


def _unit_abs_sum(activations) -> tuple[torch.Tensor, int]:
    """(sum over samples of |h_i| per unit, N); conv: |h| averaged over positions first."""
    a = torch.as_tensor(activations).detach().to(torch.float64)
    if a.ndim < 2:
        raise ValueError("activations must be (samples, units[, *spatial])")
    mean_abs = a.abs().flatten(2).mean(2) if a.ndim > 2 else a.abs()
    return mean_abs.sum(0), a.shape[0]


def dormant_mask_from_scores(mean_abs: torch.Tensor, tau: float) -> torch.Tensor:
    """tau-dormant units from E|h_i|: s_i = E|h_i| / ((1/H) sum_k E|h_k|) <= tau.

    If every unit is silent (the denominator is 0) all units are dormant.
    """
    layer_mean = mean_abs.mean()
    if float(layer_mean) == 0:
        return torch.ones_like(mean_abs, dtype=torch.bool)
    return mean_abs / layer_mean <= tau


def dormant_units(activations, tau: float = DORMANT_TAU) -> torch.Tensor:
    """Boolean mask (H,) of tau-dormant units (Sokar, Agarwal, Castro & Evci 2023, ReDo,
    ICML, Def. 3.1): s_i = E_x|h_i(x)| / ((1/H) sum_k E_x|h_k(x)|), dormant if s_i <= tau.

    ``activations`` is N x H (or N x C x *spatial: units are channels). Used by the ReDo
    remedy to pick the units to reset.
    """
    total, n = _unit_abs_sum(activations)
    return dormant_mask_from_scores(total / max(n, 1), tau)


def dormant_fraction(activations, tau: float = DORMANT_TAU) -> float:
    """Fraction of tau-dormant units (see :func:`dormant_units`; Sokar et al. 2023)."""
    return float(dormant_units(activations, tau).double().mean())


def dead_fraction(activations) -> float:
    """Fraction of dead units (Dohare et al. 2024, Nature): sum_x |h_i(x)| = 0 over the probe
    set, i.e. a ReLU unit that never fires on any of the N samples (they used 2,000)."""
    total, _ = _unit_abs_sum(activations)
    return float((total == 0).double().mean())


def _row_norm_sum(activations: torch.Tensor) -> torch.Tensor:
    """sum_n ||h_n||_2 in float64, each sample's activations flattened (all channels and
    positions of a conv activation)."""
    a = _at_least_float32(activations.flatten(1))
    return torch.linalg.vector_norm(a, dim=1).sum(dtype=torch.float64)


def _at_least_float32(a: torch.Tensor) -> torch.Tensor:
    """float32 or float64 as given; half precision and integers as float32. Per-sample
    reductions over one sample's values stay in float32 (relative error ~1e-7); sums over
    samples are float64."""
    return a if a.dtype in (torch.float32, torch.float64) else a.float()


def feature_norm(activations) -> float:
    """Mean L2 norm of a sample's activations, (1/N) sum_n ||h(x_n)||_2.

    ``activations`` is N x H, or N x C x *spatial, where h(x_n) is then the whole flattened
    C x *spatial tensor (not the position-averaged channels the unit metrics use). The
    "feature norm" that Plasticine (Yuan et al. 2025, "Plasticine: Accelerating Research
    in Plasticity-Motivated Deep Reinforcement Learning") logs beside dormancy and ranks;
    growing feature and parameter norms go with lost plasticity (Lyle et al. 2024,
    "Disentangling the Causes of Plasticity Loss in Neural Networks").
    """
    a = torch.as_tensor(activations).detach()
    if a.ndim < 2 or len(a) == 0:
        shape = tuple(a.shape)
        raise ValueError(f"activations must be (samples > 0, units[, *spatial]), got {shape}")
    return float(_row_norm_sum(a)) / len(a)


def singular_values_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """Singular values (descending) of A from its float64 gram A^T A (or A A^T):
    sqrt(max(eigvalsh, 0))."""
    evals = torch.linalg.eigvalsh(gram.to(torch.float64)).clamp_min(0)
    return evals.flip(0).sqrt()


def singular_values(matrix) -> torch.Tensor:
    """Singular values (descending, float64) of an N x D matrix via the smaller gram."""
    a = _as_unit_matrix(matrix)
    gram = a.T @ a if a.shape[0] >= a.shape[1] else a @ a.T
    return singular_values_from_gram(gram)


def effective_rank_from_sv(sv: torch.Tensor) -> float:
    """exp(-sum_i p_i log p_i), p_i = sigma_i / sum_k sigma_k, 0 log 0 = 0; 0 if all sigma = 0."""
    total = float(sv.sum())
    if total == 0:
        return 0.0
    p = sv[sv > 0] / total
    return math.exp(float(-(p * p.log()).sum()))


def srank_from_sv(sv: torch.Tensor, delta: float = SRANK_DELTA) -> float:
    """min k with sum_{i<=k} sigma_i / sum_i sigma_i >= 1 - delta (sigma descending); 0 if all
    sigma = 0. A 1e-12 relative slack absorbs rounding in the cumulative sum."""
    total = float(sv.sum())
    if total == 0:
        return 0.0
    fraction = torch.cumsum(sv, 0) / total
    return float(int((fraction < (1 - delta) - 1e-12).sum()) + 1)


def stable_rank_from_sv(sv: torch.Tensor) -> float:
    """||A||_F^2 / ||A||_2^2 = sum sigma_i^2 / sigma_1^2; 0 for the zero matrix."""
    top = float(sv[0]) if len(sv) else 0.0
    return float((sv**2).sum()) / top**2 if top > 0 else 0.0


def effective_rank(matrix) -> float:
    """Effective rank (Roy & Vetterli 2007, EUSIPCO): exp(H(p)), H(p) = -sum_i p_i log p_i,
    p_i = sigma_i / sum_k sigma_k over the singular values of the (uncentred) matrix."""
    return effective_rank_from_sv(singular_values(matrix))


def srank(matrix, delta: float = SRANK_DELTA) -> float:
    """srank_delta (Kumar, Agarwal, Ghosh & Levine 2021, "Implicit under-parameterization",
    ICLR): min k such that sum_{i<=k} sigma_i / sum_i sigma_i >= 1 - delta, delta = 0.01.
    Dohare et al. 2024 call this the "stable rank"; it is not :func:`stable_rank`."""
    return srank_from_sv(singular_values(matrix), delta)


def stable_rank(matrix) -> float:
    """Classical stable rank ||A||_F^2 / ||A||_2^2 (Rudelson & Vershynin 2007)."""
    return stable_rank_from_sv(singular_values(matrix))


class UnitStatistics:
    """Streams activation batches into sum_x |h_i(x)| per unit and the float64 gram A^T A.

    :meth:`compute` gives ``dormant_fraction``, ``dead_fraction``, ``effective_rank``,
    ``srank``, ``stable_rank`` and ``feature_norm`` of all rows seen, equal to the functions on the
    concatenated activations. Memory is H + H^2 floats whatever N.

    The gram streams through :class:`~plasticollapse.metrics.gram.SyrkGram` (BLAS ``dsyrk``
    on the CPU). ``gram=False`` keeps only the per-unit sums (``with_gram`` is False): the
    caller then sets :attr:`gram` to the float64 A^T A of the same rows before
    :meth:`compute`, e.g. from
    :meth:`~plasticollapse.metrics.collapse.CollapseAccumulator.uncentred_gram` when the
    activations are the features a collapse accumulator already streams; or calls
    :meth:`continue_gram` with the gram of the rows so far to stream the rest itself.
    """

    def __init__(self, tau: float = DORMANT_TAU, delta: float = SRANK_DELTA, gram: bool = True):
        self.tau, self.delta = tau, delta
        self.rows_gram: SyrkGram | None = SyrkGram() if gram else None
        self.abs_sum: torch.Tensor | None = None
        self.gram: torch.Tensor | None = None  # a gram given by the caller (gram=False)
        self.norm_sum: torch.Tensor | float = 0.0  # sum_n ||h_n||_2, for feature_norm
        self.count = 0

    @property
    def with_gram(self) -> bool:
        """Whether :meth:`update` streams the rows' gram."""
        return self.rows_gram is not None

    def continue_gram(self, start: torch.Tensor) -> None:
        """Stream the gram of the rows from now on, on top of ``start``, the float64 gram of
        the rows seen so far (computed elsewhere)."""
        self.rows_gram = SyrkGram(start)

    @on_one_thread
    def update(self, activations, nonnegative: bool = False) -> None:
        """Add a batch of activations (N x H, or N x C x *spatial). ``nonnegative=True``
        says the caller knows them >= 0 (a ReLU's outputs): |h| = h, so no |h| is taken."""
        raw = torch.as_tensor(activations).detach()
        a = None
        if raw.ndim != 2:  # conv: |h| is averaged over positions before summing, not h
            flat = _at_least_float32(raw.flatten(2))  # no float64 copy of every position
            mean = flat.mean(2) if nonnegative or self.with_gram else None
            # h >= 0: one pass (mean is computed whenever nonnegative)
            mean_abs = mean if nonnegative and mean is not None else flat.abs().mean(2)
            total, n = mean_abs.sum(0, dtype=torch.float64), len(raw)
            if self.with_gram:
                assert mean is not None  # computed when with_gram
                a = mean.to(torch.float64)
        elif self.with_gram:  # N x H: one float64 copy serves both
            a = raw.to(torch.float64)
            total, n = (a if nonnegative else a.abs()).sum(0), a.shape[0]
        else:
            total = (raw if nonnegative else raw.abs()).sum(0, dtype=torch.float64)
            n = raw.shape[0]
        if self.abs_sum is None:
            self.abs_sum = torch.zeros_like(total)
        self.abs_sum += total
        if a is not None:
            assert self.rows_gram is not None  # a is built only with_gram
            self.rows_gram.update(a)
        self.norm_sum = self.norm_sum + _row_norm_sum(raw)  # on the device: read once
        self.count += n

    @on_one_thread
    def compute(self) -> dict[str, float]:
        if self.abs_sum is None or self.count == 0:
            raise ValueError("no activations: call update() first")
        gram = self.rows_gram.gram() if self.rows_gram is not None else self.gram
        if gram is None:
            raise ValueError("no gram: with gram=False, set .gram before compute()")
        return unit_metrics_from_sums(
            self.abs_sum, float(self.norm_sum), self.count, gram, self.tau, self.delta
        )


def unit_metrics_from_sums(
    abs_sum: torch.Tensor,
    norm_sum: float,
    count: int,
    gram: torch.Tensor,
    tau: float = DORMANT_TAU,
    delta: float = SRANK_DELTA,
) -> dict[str, float]:
    """The unit metrics of ``count`` rows from their sufficient statistics: ``abs_sum`` =
    sum_x |h_i(x)| per unit (float64), ``norm_sum`` = sum_x ||h(x)||_2 and the float64 gram
    A^T A: ``dormant_fraction`` (ReDo's score s_i = mean|h_i| / mean_j mean|h_j| <= tau),
    ``dead_fraction`` (sum_x |h_i(x)| = 0), ``effective_rank``, ``srank`` (delta),
    ``stable_rank`` (from the gram's singular values) and ``feature_norm`` (mean ||h||_2).
    What :meth:`UnitStatistics.compute` returns, for callers that keep the sums themselves."""
    sv = singular_values_from_gram(gram)
    return {
        "dormant_fraction": float(dormant_mask_from_scores(abs_sum / count, tau).double().mean()),
        "dead_fraction": float((abs_sum == 0).double().mean()),
        "effective_rank": effective_rank_from_sv(sv),
        "srank": srank_from_sv(sv, delta),
        "stable_rank": stable_rank_from_sv(sv),
        "feature_norm": norm_sum / count,
    }


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------


def weight_magnitude(model: nn.Module) -> float:
    """Mean absolute value of all parameters (weights and biases), (1/P) sum_j |theta_j|:
    the "average weight magnitude" Dohare et al. 2024 track as weights grow."""
    params = [p.detach() for p in model.parameters()]
    count = sum(p.numel() for p in params)
    if count == 0:
        return 0.0
    return float(sum(p.abs().double().sum() for p in params)) / count


def _reference_tensors(reference) -> Mapping[str, torch.Tensor]:
    if isinstance(reference, nn.Module):
        return dict(reference.named_parameters())
    if isinstance(reference, Mapping):
        return reference
    raise ValueError("reference must be an nn.Module or a {name: tensor} mapping")


def drift(model: nn.Module, reference) -> float:
    """L2 distance ||theta - theta_0||_2 over all parameters, matched by name.

    ``reference`` is a model (e.g. a deepcopy taken at initialisation) or a mapping such as
    ``{n: p.detach().clone() for n, p in model.named_parameters()}``.
    """
    ref = _reference_tensors(reference)
    total = 0.0
    for name, p in model.named_parameters():
        if name not in ref:
            raise ValueError(f"reference has no parameter {name!r}; pass a copy of the model")
        r = ref[name].detach().to(p.device, torch.float64)
        total += float(((p.detach().double() - r) ** 2).sum())
    return math.sqrt(total)


def grad_norm(model: nn.Module) -> float:
    """Global L2 norm sqrt(sum_j ||grad_j||^2) of the parameters' .grad (None ones skipped)."""
    grads = [p.grad.detach() for p in model.parameters() if p.grad is not None]
    return math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))


# ---------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a parameter-free model)."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Every submodule in eval mode inside; each one's own previous mode restored after
    (a model that was partly in eval mode stays so)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def has_batchnorm(model: nn.Module) -> bool:
    """Whether any BatchNorm layer keeps running statistics (the mode then matters)."""
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        for m in model.modules()
    )


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Inside, every BatchNorm layer normalises each batch by its own mean and (biased)
    variance, in any mode, and its running statistics are neither read nor updated.

    PyTorch's BatchNorm uses batch statistics whenever its running buffers are None (and
    then has nothing to update), so they are set aside here and put back on exit, untouched.
    """
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            saved.append((m, m.running_mean, m.running_var))
            m.running_mean, m.running_var = None, None
    try:
        yield
    finally:
        for m, mean, var in saved:
            m.running_mean, m.running_var = mean, var


def _resolve_modules(model: nn.Module, modules) -> list[nn.Module] | None:
    if modules is None:
        return None
    named = dict(model.named_modules())
    out = []
    for m in modules:
        if isinstance(m, str):
            if m not in named:
                raise ValueError(f"model has no module named {m!r}; choose from {list(named)}")
            m = named[m]
        out.append(m)
    return out


def capture_activations(
    model: nn.Module,
    inputs: torch.Tensor,
    modules: Sequence[nn.Module | str] | None = None,
    batch_size: int = 1024,
) -> list[torch.Tensor]:
    """Outputs of the model's ReLUs (or of ``modules``) on ``inputs``, one tensor per layer.

    Forward hooks record each call of an ``nn.ReLU`` in forward order (a ReLU module applied
    twice in one forward gives two layers); ``modules`` (modules or names from
    ``named_modules()``) replaces the ReLUs, in the order they run. Runs in eval mode (each
    module's mode restored after) under ``torch.no_grad`` in batches of ``batch_size``,
    moving batches to the model's device; returns (N, ...) CPU tensors, cloned so in-place
    ops later in the forward cannot change them.
    """
    chosen = _resolve_modules(model, modules)
    targets = (
        chosen if chosen is not None else [m for m in model.modules() if isinstance(m, nn.ReLU)]
    )
    if not targets:
        raise ValueError("no modules to capture: the model has no nn.ReLU; pass modules=[...]")
    per_batch: list[list[torch.Tensor]] = []

    def hook(_module, _inputs, output):
        per_batch[-1].append(output.detach().to("cpu", copy=True))

    handles = [m.register_forward_hook(hook) for m in set(targets)]
    device = model_device(model)
    try:
        with eval_mode(model), torch.no_grad():
            for batch in _batches(inputs, batch_size):
                per_batch.append([])
                model(batch.to(device))
    finally:
        for h in handles:
            h.remove()
    if not per_batch:
        return []
    return [torch.cat(layer) for layer in zip(*per_batch, strict=True)]


def _batches(inputs: torch.Tensor, batch_size: int) -> Iterable[torch.Tensor]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(inputs), batch_size):
        yield inputs[start : start + batch_size]
