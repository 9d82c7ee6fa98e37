"""The fast engine: a fused, compiled per-sample SGD step for ReLU MLPs on the CPU.

With batch size 1 the reference loop (autograd + ``torch.optim.SGD``) spends nearly all of
its time in per-step overhead: about 3,000 steps/s for the 784-100-100-100-10 MLP, so the
paper's Permuted MNIST study (~409 million updates) would take ~40 CPU-hours. This engine
runs the whole prequential pass inside one Numba-compiled function (~110,000 steps/s on
one core of the development machine).

This module decides whether the engine applies (:func:`unsupported_reason`) and prepares
what the compiled pass reads: the inputs as CSR rows (cached across epochs and across
permutations of the inputs), the parameters as NumPy views, and the first layer's weight
transposed. The step itself, its formulas, where its time goes and why it matches
autograd to float32 rounding are in :mod:`plasticollapse.engines.fast_kernels`.

Shared parameters
-----------------
On the CPU, ``linear.weight.detach().numpy()`` is a NumPy view of the parameter's own
memory. The compiled step writes into these views, so the model is updated in place and
nothing is copied back (except the transposed W_1). Views are taken afresh at every
:meth:`FastEngine.train` call, so a parameter that was replaced in between (e.g.
``linear.weight.data = ...``) is picked up; each view is checked to be C-contiguous,
float32, writable and to start at the parameter's ``data_ptr()``; a parameter that is not
contiguous is trained on a contiguous copy that is written back at the end. After a pass
every parameter's autograd version counter is bumped, as an in-place torch op would do.

Remedies
--------
Given remedies (:mod:`plasticollapse.remedies`), the engine runs their per-step work in
the compiled step: weight decay and L2 Init's pull to theta_0 as each declares them
(:meth:`~plasticollapse.remedies.base.Remedy.step_terms`), Continual Backprop through the
engine's own compiled form of it (:mod:`plasticollapse.engines.fast_forms`, which also
holds the grouped arguments of the compiled passes;
:mod:`plasticollapse.engines.fast_remedy_kernels`), cuts a pass into segments for those
acting every k steps (Shrink & Perturb or ReDo with ``*_every``; between segments the
model is current and the remedy acts on it in PyTorch), and trains a frozen classifier
(``etf_head``) with learning rate 0. Without remedies the pass is the plain one, bit for
bit as before.

Threads
-------
The step is single-threaded (no ``parallel=True``, no BLAS) and releases the GIL
(``nogil=True``). A study runs one run per process with one thread each, so W workers use
exactly W cores. ``cache=True`` writes the compiled code to ``__pycache__`` (or
``NUMBA_CACHE_DIR``): compilation (a few seconds) is paid once per machine and network
depth, later processes load it in well under a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from plasticollapse.engines import fast_forms, fast_kernels, fast_plan
from plasticollapse.engines.stats import OnlineStats, add_counts, recent_samples
from plasticollapse.models import MLP

if TYPE_CHECKING:
    from plasticollapse.remedies.base import Remedy

__all__ = ["FastEngine", "unsupported_reason", "warmup"]

#: Above this fraction of nonzero inputs, the first layer reads ``x`` densely (skipping
#: exact zeros on the fly) instead of building CSR rows, which would take more memory than x.
DENSE_THRESHOLD = 0.5


# --------------------------------------------------------------------------------------
# Applicability
# --------------------------------------------------------------------------------------


def _sequential_linears(seq: nn.Sequential) -> list[nn.Linear] | str:
    """Linear layers of ``[Flatten] Linear (ReLU Linear)*``, or why it is not that shape."""
    mods = list(seq)
    if mods and isinstance(mods[0], nn.Flatten):
        if (mods[0].start_dim, mods[0].end_dim) != (1, -1):
            return "its Flatten does not flatten to (N, features)"
        mods = mods[1:]
    linears: list[nn.Linear] = []
    expect_linear = True
    for m in mods:
        # Exact types: a subclass (LoRA linear, ...) may compute something else.
        if expect_linear and type(m) is nn.Linear:
            linears.append(m)
        elif not expect_linear and type(m) is nn.ReLU:
            pass
        else:
            return f"it is not Linear, ReLU, Linear, ..., Linear (found {type(m).__name__})"
        expect_linear = not expect_linear
    if not linears or expect_linear:
        return "it does not end in a Linear layer"
    return linears


def _model_linears(model: nn.Module) -> list[nn.Linear] | str:
    """The linear layers in forward order, or why the model's forward is not a plain ReLU
    MLP that the engine reproduces."""
    if isinstance(model, MLP):
        # A subclass may change what forward computes; only the stock forward is known.
        if type(model).forward is not MLP.forward or type(model).features is not MLP.features:
            return f"{type(model).__name__} overrides MLP.forward/features"
        mods = list(model.body)
        for m in mods:
            if type(m) not in (nn.Linear, nn.ReLU):  # LayerNorm, CReLU, ...
                return f"its body holds a {type(m).__name__} (the fast engine runs Linear, ReLU)"
        if len(mods) % 2:
            return "its body is not (Linear, ReLU) pairs"
        for i, m in enumerate(mods):
            want = nn.Linear if i % 2 == 0 else nn.ReLU
            if type(m) is not want:  # a subclass may compute something else
                return f"its body holds a {type(m).__name__} where a {want.__name__} belongs"
        # Checked above: the even positions hold exactly nn.Linear.
        return [*(m for m in mods[::2] if isinstance(m, nn.Linear)), model.classifier]
    if isinstance(model, nn.Sequential):
        return _sequential_linears(model)
    return f"{type(model).__name__} is not a models.MLP or an nn.Sequential of Linear/ReLU"


def checked_order(order: torch.Tensor, n: int) -> np.ndarray | None:
    """A pass's ``order`` as an int64 NumPy array of indices into ``n`` samples, checked
    (None: an empty pass). The compiled loops do not bounds-check: indices are checked
    here, and negative ones wrapped as ``x[order]`` would."""
    order_np = np.ascontiguousarray(order.detach().cpu().numpy(), dtype=np.int64)
    if order_np.ndim != 1:
        raise ValueError(f"order must be 1-D, got shape {tuple(order.shape)}")
    if len(order_np) == 0:
        return None
    if order_np.min() < -n or order_np.max() >= n:
        raise IndexError(f"order indexes outside x's {n} samples")
    if order_np.min() < 0:
        order_np = order_np % n
    return order_np


def pass_arrays(
    x: torch.Tensor, y: torch.Tensor, order: torch.Tensor, n_cls: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """A pass's ``(order, y, y[order])`` as int64 NumPy arrays, checked (None: an empty
    pass): the order by :func:`checked_order`, and the labels it reads must lie in
    ``[0, n_cls)``."""
    n = int(x.shape[0])
    order_np = checked_order(order, n)
    if order_np is None:
        return None
    y_np = np.ascontiguousarray(y.detach().cpu().numpy(), dtype=np.int64)
    if y_np.shape != (n,):
        raise ValueError(f"y must have shape ({n},), got {tuple(y.shape)}")
    used = y_np[order_np]
    if used.min() < 0 or used.max() >= n_cls:
        raise ValueError(f"labels must lie in [0, {n_cls})")
    return order_np, y_np, used


def regression_array(y: torch.Tensor, n: int, n_out: int) -> np.ndarray:
    """Regression targets ``y`` as the float32 (n x n_out) array a pass reads, checked
    (the compiled loops do not bounds-check)."""
    if not y.is_floating_point():
        raise ValueError(f"squared-error targets must be floating point, got {y.dtype}")
    values = np.ascontiguousarray(y.detach().cpu().numpy(), dtype=np.float32)
    if values.ndim == 1 and n_out == 1:
        values = values.reshape(-1, 1)
    if values.shape != (n, n_out):
        raise ValueError(f"targets must have shape ({n}, {n_out}), got {tuple(y.shape)}")
    return values


def unsupported_reason(model: nn.Module, batch_size: int) -> str | None:
    """``None`` if :class:`FastEngine` reproduces the reference engine for this model and
    batch size; otherwise a short human-readable reason.

    Supported: a :class:`~plasticollapse.models.MLP` (without layer norm or CReLU), or an
    ``nn.Sequential`` of ``[Flatten,] Linear, ReLU, ..., Linear`` with at least one hidden
    layer, all parameters float32 on the CPU, trainable (the classifier may be frozen,
    weight and bias together: a fixed head), with biases, no hooks; batch size 1.
    """
    if batch_size != 1:
        return f"batch size is {batch_size} (the fast engine trains one sample per step)"
    linears = _model_linears(model)
    if isinstance(linears, str):
        return linears
    if len(linears) < 2:
        return "it has no hidden layer (the fast engine needs at least one)"
    params = list(model.parameters())
    n_expected = 2 * len(linears)
    if len({id(p) for p in params}) != n_expected or len(params) != n_expected:
        return "its parameters are not exactly one weight and one bias per Linear"
    for i, lin in enumerate(linears):
        if lin.bias is None:
            return f"Linear layer {i} has no bias"
        if i and lin.in_features != linears[i - 1].out_features:
            return f"Linear layer {i} does not chain to layer {i - 1}"
    head = linears[-1]
    if head.weight.requires_grad != head.bias.requires_grad:
        return "its classifier's weight and bias are not both trainable or both frozen"
    for p in params:
        if p.device.type != "cpu":
            return f"the model is on {p.device} (the fast engine runs on the CPU)"
        if p.dtype != torch.float32:
            return f"its parameters are {p.dtype}, not float32"
        if not p.requires_grad and p is not head.weight and p is not head.bias:
            return "some parameters are frozen (requires_grad=False; only a fixed head may be)"
    for m in model.modules():
        if (
            m._forward_hooks
            or m._forward_pre_hooks
            or m._backward_hooks
            or getattr(m, "_backward_pre_hooks", None)
        ):
            return "it has forward/backward hooks, which the fast engine would bypass"
    for p in params:
        if getattr(p, "_backward_hooks", None) or getattr(p, "_post_accumulate_grad_hooks", None):
            return "a parameter has gradient hooks, which the fast engine would bypass"
    return None


# --------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------


def _param_array(p: torch.Tensor) -> tuple[np.ndarray, bool]:
    """A writable C-contiguous float32 array for ``p``: its own memory where possible.

    Returns ``(array, is_view)``; when ``is_view`` is False the array is a copy that the
    caller must write back into ``p``.
    """
    arr = p.detach().numpy()
    is_view = (
        arr.dtype == np.float32
        and arr.flags.c_contiguous
        and arr.flags.writeable
        and arr.ctypes.data == p.data_ptr()
    )
    if is_view:
        return arr, True
    return np.ascontiguousarray(arr, dtype=np.float32).copy(), False


def write_back(params: list[torch.Tensor], arrays: list[tuple[np.ndarray, bool]]) -> None:
    """Copy each array of :func:`_param_array` that is not its parameter's own memory back
    into the parameter, and tell autograd the parameters changed in place, as
    ``optimizer.step()`` does. Call under ``torch.no_grad()``, also when a pass failed, so
    the model is current whenever anyone reads it."""
    for p, (arr, is_view) in zip(params, arrays, strict=True):
        if not is_view:
            p.copy_(torch.from_numpy(arr))
    torch.autograd.graph.increment_version(params)


class _SparseRows:
    """The inputs of one data tensor as CSR rows, or as dense rows when too dense."""

    __slots__ = ("density", "indices", "indptr", "sparse", "values", "xd")

    def __init__(self, x2: np.ndarray, dense_threshold: float):
        counts = fast_kernels.row_nonzeros(x2)
        nnz = int(counts.sum())
        self.density = nnz / max(x2.size, 1)
        self.sparse = self.density <= dense_threshold
        if self.sparse:
            self.indptr = np.zeros(len(counts) + 1, np.int64)
            np.cumsum(counts, out=self.indptr[1:])
            # One spare slot: fill_csr's branchless cursor may write one past the end.
            self.indices = np.empty(nnz + 1, np.int32)
            self.values = np.empty(nnz + 1, np.float32)
            fast_kernels.fill_csr(x2, self.indptr, self.indices, self.values)
            self.xd = np.empty((0, x2.shape[1]), np.float32)  # unused; keeps types fixed
        else:
            self.indptr = np.zeros(1, np.int64)
            self.indices = np.empty(0, np.int32)
            self.values = np.empty(0, np.float32)
            self.xd = x2


#: The rows of the last data tensor any engine or measurement built: ``(key, x, rows)``.
#: Measuring after a task (:func:`plasticollapse.engines.fast_measure.first_layer_outputs`)
#: reads the same data the engine trained on, so its rows are built once for both.
_SHARED: list = [None, None, None]


def shared_rows(
    x: torch.Tensor, n_in: int, dense_threshold: float = DENSE_THRESHOLD
) -> _SparseRows:
    """The CSR (or dense) rows of ``x`` as (N, ``n_in``) float32, from the one-entry cache
    shared by the engines and measuring (keyed as :func:`_cache_key`), built on a miss."""
    key = (_cache_key(x), dense_threshold)
    if _SHARED[0] == key:
        return _SHARED[2]
    _SHARED[:] = [None, None, None]  # drop the old rows first (peak memory)
    x2 = x.detach()
    if x2.device.type != "cpu":
        x2 = x2.cpu()
    x2 = x2.reshape(x2.shape[0], -1)
    if x2.shape[1] != n_in:
        raise ValueError(f"x has {x2.shape[1]} features per sample, the model takes {n_in}")
    if not x2.is_floating_point():
        raise TypeError(f"x must be floating point, got {x2.dtype}")
    x2 = x2.to(torch.float32).contiguous()
    rows = _SparseRows(x2.numpy(), dense_threshold)
    _SHARED[:] = [key, x, rows]
    return rows


def _permutation(columns: torch.Tensor, n_in: int) -> np.ndarray:
    """``columns`` as an int64 array, checked to be a permutation of ``range(n_in)``."""
    perm = np.ascontiguousarray(torch.as_tensor(columns).detach().cpu().numpy(), dtype=np.int64)
    if perm.shape != (n_in,) or not np.array_equal(np.sort(perm), np.arange(n_in)):
        raise ValueError(f"columns must be a permutation of range({n_in}) (the model's inputs)")
    return perm


def inverse_permutation(perm: np.ndarray) -> np.ndarray:
    """P^-1 of a permutation P of ``range(n)``: ``inverse[perm] = arange(n)``."""
    inverse = np.empty_like(perm)
    inverse[perm] = np.arange(len(perm))
    return inverse


def _cache_key(x: torch.Tensor) -> tuple:
    """What identifies the content of ``x`` as the engine reads it.

    The engine keeps a reference to the cached ``x``, so its memory cannot be freed and
    reused by another tensor while the entry lives: the same address, layout and dtype
    mean the same memory, and the version counter (shared by all views of a tensor and
    bumped by every in-place torch op) means the same content. A contiguous tensor is
    keyed by its flattened (N, features) layout, so any view of it (images or vectors,
    e.g. ``Dataset.flat()`` called anew each epoch) hits the same entry.
    """
    n = x.shape[0] if x.dim() else 0
    layout = (n, x.numel() // max(n, 1)) if x.is_contiguous() else (x.shape, x.stride())
    return (x.device, x.data_ptr(), layout, x.dtype, x._version)


class FastEngine:
    """Prequential SGD at batch size 1 through one compiled, fused per-sample step.

    Same contract as :class:`~plasticollapse.engines.reference.ReferenceEngine` with
    ``batch_size=1``: :meth:`train` makes one pass over ``x[order]``; each sample is scored
    (argmax of the logits) and its cross-entropy recorded *before* its SGD update, and the
    model's parameters are updated in place. With ``loss="squared_error"`` the targets are
    real-valued (N x outputs), the recorded loss is ``F.mse_loss``'s and no accuracy is
    counted, as the reference engine does for bitflip regression.

    Args:
        model: a ReLU MLP that :func:`unsupported_reason` accepts.
        lr: the SGD learning rate (no momentum).
        remedies: remedies whose per-step work has a compiled form (module docstring);
            :func:`fast_plan.merge_terms` says why others cannot run here.
        dense_threshold: inputs denser than this fraction are read densely, not as CSR.
        loss: ``"cross_entropy"`` (class labels) or ``"squared_error"`` (real targets).

    During a pass the first layer's weight is a transposed copy (in x out), written back
    into the model at the end of every pass; the deeper ones are trained in place through
    views of the parameters' memory (module docstring).

    The CSR form of the last ``x`` is cached (keyed by its memory, shape, strides, dtype
    and autograd version counter) and reused by the next call with the same data, e.g.
    the next epoch. The cache holds a reference to that ``x``. Writes that bypass torch's
    version counter (through ``x.numpy()`` or ``x.data``) are not seen: call
    :meth:`clear_cache` after such writes.
    """

    name = "fast"
    #: :meth:`train` takes ``columns`` (a permutation of the inputs) itself.
    permutes_inputs = True

    def __init__(
        self,
        model: nn.Module,
        lr: float,
        remedies: Sequence[Remedy] = (),
        *,
        dense_threshold: float = DENSE_THRESHOLD,
        loss: str = "cross_entropy",
    ):
        reason = unsupported_reason(model, 1)
        if reason is not None:
            raise ValueError(f"the fast engine does not apply: {reason}")
        if loss not in ("cross_entropy", "squared_error"):
            raise ValueError(f"loss must be cross_entropy or squared_error; got {loss!r}")
        self.loss = loss
        self.model = model
        self.lr = float(lr)
        self.remedies = list(remedies)
        linears = _model_linears(model)
        assert not isinstance(linears, str)
        self.plan = fast_plan.RemedyPlan(self.remedies, linears)
        self.batch_size = 1
        self.dense_threshold = float(dense_threshold)
        self._cached_x: torch.Tensor | None = None
        self._cached_key: tuple | None = None
        self._cached_rows: _SparseRows | None = None

    # How W_1 is laid out for the compiled pass, and the pass itself. Overridable as a
    # group: benchmarks/fast_layouts.py times another layout through the same preparation.

    #: The compiled pass; its arguments are those of :func:`fast_kernels.train_pass`.
    _train_pass = staticmethod(fast_kernels.train_pass)

    @staticmethod
    def _first_layer_in(w1: np.ndarray, perm: np.ndarray | None) -> np.ndarray:
        """W_1 (out x in) as the pass takes it: a transposed copy (in x out). With ``perm``
        = P its rows (W_1's columns) are permuted by P^-1, so that ``x`` reads as
        ``x[:, P]``."""
        if perm is None:
            return np.ascontiguousarray(w1.T)
        return w1.T[inverse_permutation(perm)]

    @staticmethod
    def _first_layer_out(first: np.ndarray, w1: np.ndarray, perm: np.ndarray | None) -> None:
        """Write the pass's copy of W_1 back into the parameter's array ``w1`` (out x in)."""
        w1[...] = first.T if perm is None else first[perm].T

    def clear_cache(self) -> None:
        """Forget the cached input rows (and the reference to their ``x``), here and in
        the cache shared with measuring when they are the same rows."""
        if self._cached_rows is not None and _SHARED[2] is self._cached_rows:
            _SHARED[:] = [None, None, None]
        self._cached_x = self._cached_key = self._cached_rows = None

    def _rows(self, x: torch.Tensor, n_in: int) -> _SparseRows:
        key = _cache_key(x)
        if self._cached_rows is not None and self._cached_key == key:
            return self._cached_rows
        self.clear_cache()  # drop the old rows before building new ones (peak memory)
        rows = shared_rows(x, n_in, self.dense_threshold)
        self._cached_x, self._cached_key, self._cached_rows = x, key, rows
        return rows

    def train(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        order: torch.Tensor,
        columns: torch.Tensor | None = None,
    ) -> OnlineStats:
        """One pass over ``x[order]``; returns online accuracy and mean loss over the pass.

        ``columns``, a permutation P of the input features, trains on ``x[:, P]`` without
        building it: since ``x[:, P] W^T = x (W[:, P^-1])^T``, the pass runs on ``x`` with
        the first layer's columns permuted by P^-1 (and permuted back when written into
        the model), an exact rewriting of every update. The CSR rows of ``x`` are then
        cached across permutations, e.g. across the tasks of Permuted MNIST. Only the
        first layer's summation order changes (a sample's nonzeros are visited in the
        order of ``x``'s columns, not of ``x[:, P]``'s): float32 rounding.
        """
        reason = unsupported_reason(self.model, 1)  # the model may have moved since __init__
        if reason is not None:
            raise ValueError(f"the fast engine does not apply: {reason}")
        self.model.train()  # parity with the reference (no layer here depends on the mode)
        linears = _model_linears(self.model)
        assert not isinstance(linears, str)
        n_in = linears[0].in_features
        n_cls = linears[-1].out_features

        if self.loss == "squared_error":
            order_np = checked_order(order, len(x))
            if order_np is None:
                return OnlineStats(correct=0, count=0, loss_sum=0.0)
            targets = fast_forms.regression_targets(regression_array(y, len(x), n_cls))
        else:
            checked = pass_arrays(x, y, order, n_cls)
            if checked is None:
                return OnlineStats(correct=0, count=0, loss_sum=0.0)
            order_np = checked[0]
            targets = fast_forms.class_targets(checked[1])

        perm = None if columns is None else _permutation(columns, n_in)
        rows = self._rows(x, n_in)
        head_lr = self.lr if linears[-1].weight.requires_grad else 0.0
        params = [p for lin in linears for p in (lin.weight, lin.bias)]
        correct, loss_sum = 0, 0.0
        extra: dict[str, float] = {}
        for start, stop, due in fast_plan.segments(len(order_np), self.remedies):
            c, loss = self._train_segment(
                params, perm, rows, targets, order_np[start:stop], head_lr
            )
            correct += c
            loss_sum += loss
            if due:  # the model is current between segments
                inputs = None
                if any(r.reads_interval_inputs for r in due):
                    span = max(r.interval() for r in due)
                    recent = torch.from_numpy(recent_samples(order_np, stop, span))
                    inputs = x[recent].reshape(len(recent), -1)
                    if perm is not None:
                        inputs = inputs.index_select(1, torch.from_numpy(perm))
                add_counts(extra, (r.at_interval(self.model, None, inputs) for r in due))
        add_counts(extra, (r.pass_summary() for r in self.remedies))
        return OnlineStats(
            correct=int(correct), count=len(order_np), loss_sum=float(loss_sum), extra=extra
        )

    def _train_segment(self, params, perm, rows, targets, order_np, head_lr) -> tuple[int, float]:
        """The compiled pass over ``order_np``, on the parameters' memory (module docstring),
        with the remedies' per-step work when there is any."""
        arrays = [_param_array(p) for p in params]
        # The kernel takes float32 C-contiguous arrays: views of the parameters where
        # possible, and W_1 as a private transposed (maybe column-permuted) copy.
        weights = [a for a, _ in arrays[0::2]]
        biases = tuple(a for a, _ in arrays[1::2])
        first = self._first_layer_in(weights[0], perm)
        net = fast_forms.Network(first, biases[0], tuple(weights[1:]), biases[1:])
        inputs = fast_forms.inputs_of(rows)
        try:
            if self.plan.active:
                sgd = fast_forms.Sgd(self.lr, head_lr, not params[-1].requires_grad)
                return self.plan.run(
                    net, inputs, targets, order_np, sgd, perm, self._first_layer_in, weights[0]
                )
            return self._train_pass(net, inputs, targets, order_np, self.lr, head_lr)
        finally:
            # Write back whatever is not the parameter's own memory (W_1's copy, copies of
            # non-contiguous parameters), even if the pass was interrupted, so the model
            # is current whenever anyone reads it.
            with torch.no_grad():
                self._first_layer_out(first, weights[0], perm)
                write_back(params, arrays)


def warmup(hidden_layers: int = 3) -> float:
    """Compile (or load from the cache) the kernels for MLPs with ``hidden_layers`` hidden
    layers (the paper's: 3) and return the seconds it took.

    The compiled step is specialised on the network's depth, not its widths: each depth
    compiles once per machine (a few seconds), later processes load it from the cache.
    Worth calling once in each worker process before timing anything.
    """
    import time

    start = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    model = MLP(16, (8,) * hidden_layers, 3)
    x = torch.rand(4, 16, generator=gen) * (torch.rand(4, 16, generator=gen) < 0.3)
    y = torch.tensor([0, 1, 2, 0])
    FastEngine(model, 0.01).train(x, y, torch.arange(4))
    return time.perf_counter() - start
