"""The label-permuted stream (UPGD's protocol) end to end on tiny digits runs."""

import torch
from stream_helpers import (
    TINY,
    check_full_preset_pins_the_source,
    check_quick_preset_runs_shortened,
    check_resume_after_a_kill,
    check_rows_hold_every_key,
)

from plasticollapse.studies.label_permuted.config import SOURCE, Config
from plasticollapse.studies.label_permuted.run import LabelPermutedStream
from plasticollapse.studies.streams.stream import StreamData

STUDY = "label_permuted"


def test_rows_hold_every_key_with_finite_values(tmp_path):
    rows = check_rows_hold_every_key(STUDY, tmp_path)
    assert all(r["num_train"] == TINY[STUDY]["task_samples"] for r in rows)
    assert all(r["classes_seen"] == 10 and r["task_epochs"] == 1 for r in rows)


def test_killed_after_a_task_resumes_to_the_uninterrupted_rows(tmp_path):
    check_resume_after_a_kill(STUDY, tmp_path)


def test_the_quick_preset_runs_and_the_full_preset_pins_the_source(tmp_path, capsys):
    check_quick_preset_runs_shortened(STUDY, tmp_path, capsys, "--task-samples", "100")
    check_full_preset_pins_the_source(STUDY, SOURCE)


def test_protocol_constants_equal_the_source():
    # mohmdelsayed/upgd, core/task/label_permuted_emnist.py:
    #     def __init__(self, name="label_permuted_mnist", batch_size=1, change_freq=2500)
    #     self.dataset.targets = torch.randperm(self.n_outputs)[self.dataset.targets]
    #     transforms.Normalize((0.5,), (0.5,))
    # experiments/label_permuted_emnist.py: n_steps = 1000000; lr=[10 ** -i for i in range(2, 6)]
    # core/network/fcn_relu.py FullyConnectedReLU: n_hidden_units=300, linear_2 out
    #     n_hidden_units // 2; m.reset_parameters() for every nn.Linear
    source = {
        "task_samples": 2500,
        "batch_size": 1,
        "tasks": 1000000 // 2500,
        "hidden": (300, 300 // 2),
        "init": "pytorch",
        "inputs": "symmetric",
        "lr": 10**-2,
        "epochs_per_task": 1,
    }
    assert source == SOURCE
    defaults = Config()
    for name, value in source.items():
        assert getattr(defaults, name) == value, name


def stream_of(seed=0, n=50, classes=4, task_samples=20):
    g = torch.Generator().manual_seed(1)
    data = StreamData(
        torch.rand(n, 6, generator=g),
        torch.randint(0, classes, (n,), generator=g),
        torch.rand(30, 6, generator=g),
        torch.randint(0, classes, (30,), generator=g),
        classes,
    )
    config = Config(dataset="digits", seed=seed, task_samples=task_samples)
    return LabelPermutedStream(config, data), data


def test_each_task_maps_train_and_held_out_labels_through_one_fresh_permutation():
    stream, data = stream_of()
    perms = []
    for t in range(4):
        task = stream.task(t)
        pi = stream.labels(t)
        assert sorted(pi.tolist()) == [0, 1, 2, 3]  # a permutation of the classes
        assert torch.equal(task.y, pi[data.y]) and torch.equal(task.y_test, pi[data.y_test])
        assert task.x is data.x and len(task.train) == 20 == len(set(task.train.tolist()))
        assert len(task.test) == 30 and task.classes.tolist() == [0, 1, 2, 3]
        perms.append(tuple(pi.tolist()))
    assert len(set(perms)) > 1  # the labelling changes between tasks
    again, _ = stream_of()
    assert torch.equal(again.task(2).y, stream.task(2).y)  # a seed fixes the stream
    assert torch.equal(again.task(2).train, stream.task(2).train)
    other, _ = stream_of(seed=1)
    assert not torch.equal(other.task(2).train, stream.task(2).train)


def test_more_task_samples_than_the_data_is_a_clear_error():
    import pytest

    with pytest.raises(ValueError, match="task_samples 60 exceeds the 50 training samples"):
        stream_of(task_samples=60)
