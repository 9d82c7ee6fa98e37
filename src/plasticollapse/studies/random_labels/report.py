"""The random-label study's report section: the streams' shared one, with its protocol."""

from functools import partial

from plasticollapse.studies.streams.report import stream_report

TITLE = "random_labels: fresh random labels at every task"
PROTOCOL = (
    "Random-label stream after Kumar, Marklund & Van Roy 2023 (Random Label MNIST, Sec. 4.2 "
    "and Table 1): a fixed subset of training images gets fresh uniformly random labels at "
    "every task, trained for many epochs, so online accuracy measures memorisation "
    "(trainability). Source: MNIST, 1,200 images, 400 epochs per task at batch 16, 50 tasks, "
    "MLP 100-100; here the dataset and sizes of the runs' config. Held-out images carry "
    "their own random labels: held-out accuracy is chance by construction."
)


#: The study's section: the streams' shared one with this title and protocol.
report = partial(stream_report, title=TITLE, protocol=PROTOCOL)
