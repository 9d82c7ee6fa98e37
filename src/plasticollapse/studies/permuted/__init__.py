"""The Permuted study (the paper's Setup A): online Permuted MNIST with an MLP.

One folder: :mod:`.config` (the run's settings), :mod:`.run` (the task stream and the
training loop), :mod:`.summary` (summary.json and the sweep's text table) and
:mod:`.report` (its analyses, figures and the paper's numbers).
"""

from plasticollapse.studies.base import FolderStudy

STUDY = FolderStudy(
    __name__,
    name="permuted",
    title="online Permuted MNIST (the paper's Setup A)",
    step_key="task",
    setting_keys=("first_task_epochs",),
)
