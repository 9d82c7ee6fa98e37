"""The random-label stream: a fixed subset of images with fresh random labels at every task
(Random Label MNIST of Kumar, Marklund & Van Roy 2023, after Lyle et al. 2023): a test of
trainability (memorisation) rather than generalisation.

One folder: :mod:`.config` (the source's constants), :mod:`.run` (the stream); the loop,
summary and report are the shared ones of :mod:`plasticollapse.studies.streams`.
"""

from plasticollapse.studies.base import FolderStudy

#: Registered with its name, title, step key ("task") and setting key (the remedies).
TITLE = "random-label memorisation stream (Kumar et al. 2023's Random Label MNIST)"
STUDY = FolderStudy(__name__, "random_labels", TITLE, "task", ("remedies",))
