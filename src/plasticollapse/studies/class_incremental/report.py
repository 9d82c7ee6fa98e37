"""The class-incremental study's report section: the streams' shared one, with its protocol."""

from functools import partial

from plasticollapse.studies.streams.report import stream_report

TITLE = "class_incremental: classes arrive in groups"
PROTOCOL = (
    "Class-incremental stream after the loss-of-plasticity code's incremental CIFAR "
    "(Dohare et al. 2024; shibhansh/loss-of-plasticity, "
    "lop/incremental_cifar/incremental_cifar_experiment.py): classes arrive in groups in a "
    "seeded order, each task trains on every image of the classes seen so far with the "
    "head masked to them, and collapse and held-out accuracy are measured over those "
    "classes. Source: CIFAR-100, 5 + 5 classes every 200 epochs, ResNet-18, SGD 0.1 with "
    "momentum; here an MLP with plain SGD on the dataset and sizes of the runs' config. "
    "Later tasks hold more classes, so accuracy and PL across tasks mix plasticity with "
    "difficulty; the retrained baseline (when run) separates them."
)


#: The study's section: the streams' shared one with this title and protocol.
report = partial(stream_report, title=TITLE, protocol=PROTOCOL)
