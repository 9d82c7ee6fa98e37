"""The warm-start study (the paper's Setup B): warm-starting CIFAR-10 with ResNet-18.

One folder: :mod:`.config` (the run's settings), :mod:`.run` (the warm-up loop and its
measurements), :mod:`.training` (data, SGD epochs, the plasticity probe), :mod:`.summary`
(summary.json and the sweep's text table), :mod:`.report` and :mod:`.figures` (its analyses,
figures and the paper's numbers).
"""

from plasticollapse.studies.base import FolderStudy

STUDY = FolderStudy(
    __name__,
    name="warmstart",
    title="warm-starting CIFAR-10 with ResNet-18 (the paper's Setup B)",
    step_key="epoch",
    setting_keys=("scheme",),
)
