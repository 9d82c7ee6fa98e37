"""The grouped arguments of the fast engine's compiled passes, and the compiled form of
each remedy that has one.

A compiled pass reads a few typed groups instead of dozens of positional arguments:
Numba compiles a :class:`typing.NamedTuple` into a struct whose fields are read by name
(``net.w1t``, ``cbp.utils``) at no cost, and a field holding None compiles a version
without it. Each group is built here, on the engine's side, from plain Python and torch
objects:

- :class:`Network`: the pass's parameter arrays (W_1 transposed, the deeper layers as
  views of the parameters);
- :class:`Inputs`: a data tensor's rows (CSR or dense; :class:`~plasticollapse.engines.
  fast._SparseRows`);
- :class:`Targets`: what the pass trains toward (class labels, or real-valued targets);
- :class:`Sgd`: the learning rates;
- :class:`DecayPull`: weight decay and L2 Init's pull to theta_0, in the pass's layout;
- :class:`CbpState`: Continual Backprop's settings and state (:func:`compiled_cbp` from a
  :class:`~plasticollapse.remedies.cbp.ContinualBackprop`), and :class:`CbpPass`, what
  its generate-and-test needs of the pass (fresh W_1 rows' input order, the row sums of
  |W_1|, the uniform numbers).

The remedies (``remedies/``) hold their parameters and state as plain Python and torch
and know nothing of this module; the dependency runs from the engine to the remedy.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from plasticollapse.remedies.cbp import ContinualBackprop


class Network(NamedTuple):
    """The parameters as a pass trains them, in place: ``w1t`` the first layer's weight
    transposed (in x h1; the scaled first layer with decay, see :mod:`~plasticollapse.
    engines.fast_remedy_kernels`), ``b1`` its bias, ``ws``/``bs`` the deeper layers'
    weights (out x in) and biases, the classifier last."""

    w1t: np.ndarray
    b1: np.ndarray
    ws: tuple[np.ndarray, ...]
    bs: tuple[np.ndarray, ...]


class Inputs(NamedTuple):
    """A data tensor's rows: CSR (``indptr``, ``indices``, ``values``) when ``sparse``,
    else the dense rows ``xd``."""

    sparse: bool
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    xd: np.ndarray


def inputs_of(rows: Any) -> Inputs:
    """The :class:`Inputs` of a :class:`~plasticollapse.engines.fast._SparseRows`."""
    return Inputs(bool(rows.sparse), rows.indptr, rows.indices, rows.values, rows.xd)


class Targets(NamedTuple):
    """What a pass trains toward: the class ``labels`` (int64, N: the cross-entropy) or,
    when ``squared``, the real-valued ``values`` (float32, N x outputs: the mean squared
    error, bitflip regression's loss). The unused one is an empty array, so that one
    compiled pass serves both."""

    squared: bool
    labels: np.ndarray
    values: np.ndarray


def class_targets(labels: np.ndarray) -> Targets:
    """The :class:`Targets` of int64 class labels."""
    return Targets(False, labels, np.zeros((0, 0), np.float32))


def regression_targets(values: np.ndarray) -> Targets:
    """The :class:`Targets` of float32 regression targets (N x outputs)."""
    return Targets(True, np.zeros(0, np.int64), values)


class Sgd(NamedTuple):
    """The SGD step: ``lr``, and the classifier's ``head_lr`` (0 when ``head_frozen``, a
    fixed head)."""

    lr: float
    head_lr: float
    head_frozen: bool


class DecayPull(NamedTuple):
    """Weight decay and the pull to an anchor A (L2 Init: theta_0), merged over the
    remedies: ``theta <- theta - lr (g + pull (theta - A) + decay theta)``.

    ``a1t``/``ab1``: the first layer's anchor in the pass's layout (transposed and
    column-permuted like ``Network.w1t``; zeros without an anchor); ``aws``/``abs_``: the
    deeper layers' (None without an anchor: the kernel compiles without them);
    ``scales``: the scaled first layer's float64 row scales; ``anchored``: whether the
    scaled first layer has the fixed point's rows stacked below the deviations'."""

    decay: float
    pull: float
    a1t: np.ndarray
    ab1: np.ndarray
    aws: tuple[np.ndarray, ...] | None
    abs_: tuple[np.ndarray, ...] | None
    scales: np.ndarray
    anchored: bool


class CbpState(NamedTuple):
    """Continual Backprop as the compiled step runs it (:mod:`~plasticollapse.engines.
    fast_cbp_kernels`): its settings, then its state as NumPy views of the remedy's
    tensors (updated in place), one entry per hidden layer.

    ``on`` is False for the placeholder of a pass without it (same types, so the pass
    compiles once); ``adaptable``: the ``adaptable_contribution`` utility (else
    ``contribution``); ``powers``: d^age (float64); ``accs``: the replacement
    accumulators (float64); ``replaced``: counts; ``bounds``: Kaiming-uniform bounds of
    fresh incoming weights."""

    on: bool
    adaptable: bool
    decay: float
    rate: float
    maturity: int
    utils: tuple[np.ndarray, ...]
    means: tuple[np.ndarray, ...]
    powers: tuple[np.ndarray, ...]
    ages: tuple[np.ndarray, ...]
    accs: np.ndarray
    replaced: np.ndarray
    bounds: np.ndarray


class CbpPass(NamedTuple):
    """What generate-and-test needs of the pass: ``inv`` maps a row of ``Network.w1t``
    to the model's input column (P^-1; unused unless ``has_perm``), ``in_abs1`` the
    float64 row sums ``sum_k |W_1[i, k]|`` kept up to date by the first layer's update,
    ``buffer`` the remedy's uniform numbers and ``need`` the most one step consumes (the
    pass stops before a step that might run short)."""

    inv: np.ndarray
    has_perm: bool
    in_abs1: np.ndarray
    buffer: np.ndarray
    need: int


def compiled_cbp(remedy: ContinualBackprop) -> CbpState:
    """The :class:`CbpState` of a bound ``remedy``: views of its tensors' memory, so the
    compiled step updates the remedy itself."""
    return CbpState(
        on=True,
        adaptable=remedy.cbp_utility == "adaptable_contribution",
        decay=float(remedy.cbp_decay_rate),
        rate=float(remedy.cbp_replacement_rate),
        maturity=int(remedy.cbp_maturity),
        utils=tuple(t.numpy() for t in remedy.util),
        means=tuple(t.numpy() for t in remedy.mean),
        powers=tuple(t.numpy() for t in remedy.power),
        ages=tuple(t.numpy() for t in remedy.age),
        accs=remedy.accumulated.numpy(),
        replaced=remedy.replaced.numpy(),
        bounds=remedy.bounds,
    )


def no_cbp(widths: list[int]) -> CbpState:
    """The placeholder :class:`CbpState` of a pass without Continual Backprop, for hidden
    layers of ``widths`` (the same types as :func:`compiled_cbp`'s)."""
    n = len(widths)
    return CbpState(
        on=False,
        adaptable=False,
        decay=0.0,
        rate=0.0,
        maturity=0,
        utils=tuple(np.zeros(w, np.float32) for w in widths),
        means=tuple(np.zeros(w, np.float32) for w in widths),
        powers=tuple(np.ones(w, np.float64) for w in widths),
        ages=tuple(np.zeros(w, np.int64) for w in widths),
        accs=np.zeros(n, np.float64),
        replaced=np.zeros(n, np.int64),
        bounds=np.zeros(n, np.float32),
    )
