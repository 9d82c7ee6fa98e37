"""bf16 training's effect on NC1, measured on a CPU: the warm start with ``--amp true``
trained under ``torch.autocast("cpu", dtype=torch.bfloat16)``.

    python docs/results/warmstart_fashion/bf16_check.py warmstart [warm-start options]

The package applies ``amp`` on CUDA only (bf16 is an option for GPU speed). This script
swaps in a CPU autocast for ``amp = true`` and then runs the ``plasticollapse`` command
line in this process (``--backend serial``, so that the swap reaches the runs). Training
then rounds to bf16 as on a GPU: the same format, with float32 accumulation in oneDNN's
bf16 kernels on CPUs with AVX512-BF16 as in CUDA's tensor cores. Collapse is measured in
float32 either way. Compare ``nc1`` per checkpoint of the ``amp`` true and false runs.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext

import torch

from plasticollapse.cli import main
from plasticollapse.studies.warmstart import training


def autocast_anywhere(config, device: torch.device):
    """bf16 autocast on any device when ``amp``."""
    if config.amp:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


if __name__ == "__main__":
    training.autocast = autocast_anywhere
    sys.exit(main(sys.argv[1:]))
