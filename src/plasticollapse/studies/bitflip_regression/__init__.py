"""The bit-flipping study: Dohare et al.'s slowly-changing regression, online, with
regression collapse (NRC1-NRC3) measured beside the plasticity metrics.

One folder: :mod:`.config` (the run's settings, pinned to the source), :mod:`.stream`
(the target network and the input stream), :mod:`.run` (online SGD on the squared error and
the measurements of each flip period), :mod:`.summary` (summary.json and the sweep's text
table) and :mod:`.report` (its table and figures).
"""

from plasticollapse.studies.base import FolderStudy

STUDY = FolderStudy(
    __name__,
    name="bitflip_regression",
    title="slowly-changing regression with flipping input bits (Dohare et al.)",
    step_key="task",
    setting_keys=("lr",),
)
