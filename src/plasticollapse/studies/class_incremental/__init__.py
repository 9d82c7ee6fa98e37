"""The class-incremental stream: classes arrive in groups and the network trains on all the
classes seen so far (the loss-of-plasticity code's incremental CIFAR protocol, Dohare et
al. 2024), on offline data; collapse is measured over the classes present.

One folder: :mod:`.config` (the source's constants), :mod:`.run` (the stream); the loop,
summary and report are the shared ones of :mod:`plasticollapse.studies.streams`.
"""

from plasticollapse.studies.base import FolderStudy

#: Registered with its name, title, step key ("task") and setting key (the remedies).
TITLE = "class-incremental stream (the loss-of-plasticity code's incremental CIFAR protocol)"
STUDY = FolderStudy(__name__, "class_incremental", TITLE, "task", ("remedies",))
