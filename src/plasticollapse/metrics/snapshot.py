"""A copy of a model to measure while the model itself goes on training (the Monitor's
background mode): its own tensors, none of the model's hooks, refreshed in place.

Why a kept copy refreshed by ``copy_`` rather than a ``copy.deepcopy`` per snapshot: the
copy's tensors are allocated once, and ``.grad`` and everything else a module carries is
not copied again (on the digits CNN of benchmarks/monitor_overhead.py, see
docs/own_loop.md for the figures). Parameters and buffers are matched by name, the
non-persistent buffers that ``state_dict()`` leaves out included (a ``load_state_dict``
refresh would miss them); a model whose tensors changed name, shape, dtype or device (a
layer replaced or grown) is copied anew.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def hookless_copy(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)`` with every module's hook dictionaries empty.

    The copy would otherwise carry the model's hooks (a user's logging hook would fire
    on the measuring thread; a bound method's owner would be deep-copied with it): each
    ``_*hooks*`` dict of each module is mapped, in deepcopy's memo, to a new empty one.
    """
    memo: dict[int, object] = {}
    for module in model.modules():
        for name, value in vars(module).items():
            if "hooks" in name and isinstance(value, dict):
                memo[id(value)] = type(value)()
    return copy.deepcopy(model, memo)


def _tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) of every parameter and buffer, non-persistent buffers included."""
    return list(model.named_parameters()) + list(model.named_buffers())


def _layout(tensors: list[tuple[str, torch.Tensor]]) -> list[tuple]:
    return [(name, t.shape, t.dtype, t.device) for name, t in tensors]


class ModelSnapshot:
    """One copy of ``model``; :meth:`take` makes it equal to the model as it is now.

    The copy shares no tensor with the model and carries none of its hooks; it gets the
    model's parameters, buffers (BatchNorm's running statistics: the copy's own) and each
    module's train/eval mode. Not to be refreshed while it is being measured.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.copy: nn.Module | None = None
        self.copies = 0  # how many times the model was deep-copied (1 unless it changed)

    def take(self) -> nn.Module:
        """The copy, now equal to the model (values, not the same tensors)."""
        source = _tensors(self.model)
        if self.copy is None or _layout(_tensors(self.copy)) != _layout(source):
            self.copy = hookless_copy(self.model)
            self.copies += 1
        else:
            with torch.no_grad():
                for (_, mine), (_, theirs) in zip(_tensors(self.copy), source, strict=True):
                    mine.copy_(theirs)
        for module, original in zip(self.copy.modules(), self.model.modules(), strict=True):
            module.training = original.training
        return self.copy
