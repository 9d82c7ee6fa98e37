"""The label-permuted stream: the same images, labels permuted by a fresh permutation at
each task (UPGD's label-permuted EMNIST; Elsayed & Mahmood 2024), on offline data.

One folder: :mod:`.config` (the source's constants), :mod:`.run` (the stream); the loop,
summary and report are the shared ones of :mod:`plasticollapse.studies.streams`.
"""

from plasticollapse.studies.base import FolderStudy

#: Registered with its name, title, step key ("task") and setting key (the remedies).
TITLE = "label-permuted stream (UPGD's protocol, offline data)"
STUDY = FolderStudy(__name__, "label_permuted", TITLE, "task", ("remedies",))
