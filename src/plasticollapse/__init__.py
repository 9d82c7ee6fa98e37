"""plasticollapse: neural collapse and loss of plasticity, measured on any PyTorch model.

The public entry points most users need::

    from plasticollapse import collapse_metrics, CollapseAccumulator, measure_model
    from plasticollapse import feature_norm, drift, grad_norm, plasticity_score
    from plasticollapse import Monitor   # your own loop: metrics per named layer, every k steps
    from plasticollapse import CsvLogger, TensorBoardLogger, WandbLogger   # where rows go
    from plasticollapse import redo_reset_pairs, ContinualBackpropPairs   # ReDo, CBP: any model
    from plasticollapse import load_results   # run folders -> the tidy pandas table
    from plasticollapse import load_runs, load_summaries, wide   # runs; summaries; pivots

They are imported lazily, so ``import plasticollapse`` (and the command line's ``--version``)
stays fast and loads neither torch nor pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "collapse_metrics": "plasticollapse.metrics.collapse",
    "CollapseAccumulator": "plasticollapse.metrics.collapse",
    "nc1_loss": "plasticollapse.metrics.collapse",
    "measure_model": "plasticollapse.metrics.measure",
    "feature_norm": "plasticollapse.metrics.plasticity",
    "drift": "plasticollapse.metrics.plasticity",
    "grad_norm": "plasticollapse.metrics.plasticity",
    "plasticity_score": "plasticollapse.metrics.trainability",
    "Monitor": "plasticollapse.metrics.monitor",
    "CsvLogger": "plasticollapse.metrics.monitor",
    "TensorBoardLogger": "plasticollapse.runs.loggers",
    "WandbLogger": "plasticollapse.runs.loggers",
    "load_dataset": "plasticollapse.data",
    "LayerPair": "plasticollapse.remedies.layer_pairs",
    "find_layer_pairs": "plasticollapse.remedies.layer_pairs",
    "redo_reset_pairs": "plasticollapse.remedies.pair_remedies",
    "ContinualBackpropPairs": "plasticollapse.remedies.pair_remedies",
    "load_results": "plasticollapse.analysis",
    "load_summaries": "plasticollapse.analysis",
    "load_runs": "plasticollapse.analysis",
    "wide": "plasticollapse.analysis",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'plasticollapse' has no attribute {name!r}")
