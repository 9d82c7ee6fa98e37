"""The label-permuted study's report section: the streams' shared one, with its protocol."""

from functools import partial

from plasticollapse.studies.streams.report import stream_report

TITLE = "label_permuted: labels permuted at every task"
PROTOCOL = (
    "Label-permuted stream after UPGD (Elsayed & Mahmood 2024; mohmdelsayed/upgd, "
    "core/task/label_permuted_emnist.py): each task draws task_samples training images and "
    "maps every label through a fresh permutation of the classes; online SGD at batch size 1; "
    "held-out = the test split under the task's permutation. Source: EMNIST, 2,500 steps per "
    "task, 400 tasks, MLP 300-150; here the dataset and sizes of the runs' config."
)


#: The study's section: the streams' shared one with this title and protocol.
report = partial(stream_report, title=TITLE, protocol=PROTOCOL)
