"""Remedies for loss of plasticity, as objects with hooks that training loops call.

Each remedy is one module with one :class:`~plasticollapse.remedies.base.Remedy` subclass
(its parameters, the formula and the paper in its docstring), registered here by name:

- ``plain``: nothing (the baseline);
- ``shrink_perturb``: theta <- shrink * theta + perturb * theta_fresh at new data
  (Ash & Adams 2020);
- ``nc1_reg``: L = CE - lambda * min(NC1_batch, clip) (the paper's regulariser);
- ``weight_decay``: SGD weight decay;
- ``l2_init``: L = CE + lambda/2 * ||theta - theta_0||^2 (Kumar et al. 2023);
- ``redo``: recycle tau-dormant units (Sokar et al. 2023);
- ``cbp``: Continual Backprop, generate-and-test of hidden units (Dohare et al. 2024);
- ``reset_head`` / ``reset_all``: a fresh classifier / a fresh network at each new task;
- ``etf_head``: a fixed simplex-ETF classifier.

ReDo and Continual Backprop also work on any model in a user's own loop, its hidden
layers named as :class:`~plasticollapse.remedies.layer_pairs.LayerPair` s
(:func:`~plasticollapse.remedies.pair_remedies.redo_reset_pairs`,
:class:`~plasticollapse.remedies.pair_remedies.ContinualBackpropPairs`,
:func:`~plasticollapse.remedies.layer_pairs.find_layer_pairs`).

A run applies a list of them (``remedies = ["shrink_perturb", "l2_init"]``), with their
parameters as flat config fields (:class:`~plasticollapse.remedies.fields.RemedyFields`,
which both studies' configs inherit); the same objects work in both studies.

Adding a remedy is one module with a subclass, one line in :data:`REMEDIES`, and its
parameters as fields of ``RemedyFields``. The arithmetic lives in
:mod:`plasticollapse.remedies.functional`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from plasticollapse.remedies.base import Remedy, RemedyContext
from plasticollapse.remedies.cbp import ContinualBackprop
from plasticollapse.remedies.etf_head import ETFHead
from plasticollapse.remedies.l2_init import L2Init
from plasticollapse.remedies.layer_pairs import LayerPair, find_layer_pairs
from plasticollapse.remedies.nc1_reg import NC1Regulariser
from plasticollapse.remedies.pair_remedies import ContinualBackpropPairs, redo_reset_pairs
from plasticollapse.remedies.plain import Plain
from plasticollapse.remedies.redo import ReDo
from plasticollapse.remedies.reset import ResetAll, ResetHead
from plasticollapse.remedies.shrink_perturb import ShrinkPerturb
from plasticollapse.remedies.weight_decay import WeightDecay

#: Every remedy by its config name.
REMEDIES: dict[str, type[Remedy]] = {
    cls.name: cls
    for cls in (
        *(Plain, ShrinkPerturb, NC1Regulariser, WeightDecay, L2Init, ReDo),
        *(ContinualBackprop, ResetHead, ResetAll, ETFHead),
    )
}

__all__ = [
    "REMEDIES",
    "ContinualBackpropPairs",
    "LayerPair",
    "Remedy",
    "RemedyContext",
    "build_remedies",
    "find_layer_pairs",
    "redo_reset_pairs",
    "remedy_names",
    "weight_decay_of",
]


def remedy_names(config: Any) -> tuple[str, ...]:
    """The remedies a run applies, in order: the config's requested ones without ``plain``,
    plus ``weight_decay`` when the ``weight_decay`` field is set (> 0) but not requested:
    an explicit decay applies whatever the remedies (the warm start's long-standing rule).
    """
    names = tuple(n for n in config.requested_remedies() if n != "plain")
    if config.weight_decay and "weight_decay" not in names:
        names += ("weight_decay",)
    return names


def build_remedies(config: Any) -> list[Remedy]:
    """The run's remedy objects (unbound: call ``bind`` once the network exists)."""
    return [REMEDIES[name].from_config(config) for name in remedy_names(config)]


def weight_decay_of(remedies: Iterable[Remedy]) -> float:
    """The SGD weight decay the remedies ask for together (the sum; 0.0 for none)."""
    return sum((r.weight_decay() for r in remedies), 0.0)
