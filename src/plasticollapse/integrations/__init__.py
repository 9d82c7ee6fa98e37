"""Adapters of :class:`~plasticollapse.metrics.monitor.Monitor` to other training frameworks.

Each lives in its own module and needs its framework, an optional extra:

- :mod:`plasticollapse.integrations.lightning`: ``PlasticityCallback``, a PyTorch Lightning
  callback (``pip install 'plasticollapse[lightning]'``);
- :mod:`plasticollapse.integrations.avalanche`: ``PlasticityMetric``, an Avalanche
  ``PluginMetric`` for its ``EvaluationPlugin`` (``pip install 'plasticollapse[avalanche]'``).

Importing this package imports no framework; ``from plasticollapse.integrations import
PlasticityCallback`` imports Lightning then, ``PlasticityMetric`` Avalanche (and each says
which extra to install without it).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PlasticityCallback": "plasticollapse.integrations.lightning",
    "PlasticityMetric": "plasticollapse.integrations.avalanche",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'plasticollapse.integrations' has no attribute {name!r}")
