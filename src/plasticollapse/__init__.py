"""plasticollapse: neural collapse and loss of plasticity, measured on any PyTorch model.

The public entry points most users need::

    from plasticollapse import collapse_metrics, CollapseAccumulator, measure_model
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
