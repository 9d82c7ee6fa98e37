"""The random-label stream (Kumar et al. 2023's Random Label MNIST) end to end, tiny."""

import pytest
import torch
from stream_helpers import (
    TINY,
    check_full_preset_pins_the_source,
    check_quick_preset_runs_shortened,
    check_resume_after_a_kill,
    check_rows_hold_every_key,
)

from plasticollapse.studies.random_labels.config import SOURCE, Config
from plasticollapse.studies.random_labels.run import RandomLabelStream
from plasticollapse.studies.streams.stream import StreamData

STUDY = "random_labels"


def test_rows_hold_every_key_with_finite_values(tmp_path):
    rows = check_rows_hold_every_key(STUDY, tmp_path)
    tiny = TINY[STUDY]
    assert all(r["num_train"] == tiny["subset_size"] for r in rows)
    assert [r["epoch"] for r in rows] == [3, 6, 9]
    assert all(r["task_epochs"] == tiny["epochs_per_task"] for r in rows)


def test_killed_after_a_task_resumes_to_the_uninterrupted_rows(tmp_path):
    check_resume_after_a_kill(STUDY, tmp_path)


def test_the_quick_preset_runs_and_the_full_preset_pins_the_source(tmp_path, capsys):
    check_quick_preset_runs_shortened(STUDY, tmp_path, capsys, "--epochs-per-task", "2")
    check_full_preset_pins_the_source(STUDY, SOURCE)


def test_protocol_constants_equal_the_source():
    # Kumar, Marklund & Van Roy, arXiv 2308.11958, Appendix Table 1, "Random Label MNIST":
    # dataset size per task 1200 samples; batch size 16; task duration 30,000 timesteps
    # (400 epochs); number of tasks 50. A.1.3: "two hidden layers of width 100". Sec. 5:
    # PyTorch default initialisation. Table 3, Random Label MNIST: Baseline, SGD, alpha = 1e-3.
    source = {
        "subset_size": 1200,
        "batch_size": 16,
        "epochs_per_task": 400,
        "tasks": 50,
        "hidden": (100, 100),
        "init": "pytorch",
        "lr": 1e-3,
    }
    assert 30000 * 16 == 400 * 1200  # the table's timesteps are its epochs
    assert source == SOURCE
    defaults = Config()
    for name, value in source.items():
        assert getattr(defaults, name) == value, name


def stream_of(seed=0, n=60, subset=25):
    g = torch.Generator().manual_seed(1)
    data = StreamData(
        torch.rand(n, 5, generator=g),
        torch.randint(0, 3, (n,), generator=g),
        torch.rand(40, 5, generator=g),
        torch.randint(0, 3, (40,), generator=g),
        3,
    )
    return RandomLabelStream(Config(dataset="digits", seed=seed, subset_size=subset), data), data


def test_every_task_has_the_same_images_and_fresh_random_labels():
    stream, data = stream_of()
    first = stream.task(0)
    assert len(first.train) == 25 and first.x.shape == (25, 5)
    rows = [tuple(r.tolist()) for r in first.x]
    assert len(set(rows)) == 25 and all(any(torch.equal(r, d) for d in data.x) for r in first.x)
    labels = []
    for t in range(6):
        task = stream.task(t)
        assert task.x is first.x and torch.equal(task.train, first.train)
        assert set(task.y.tolist()) <= {0, 1, 2} and len(task.y_test) == 40
        labels.append(task.y)
    assert all(not torch.equal(labels[0], y) for y in labels[1:])
    counts = torch.bincount(torch.cat(labels), minlength=3)
    assert counts.min() > 25  # every class drawn (expected 50 each)
    again, _ = stream_of()
    assert torch.equal(again.task(3).y, stream.task(3).y)


def test_a_subset_larger_than_the_data_is_a_clear_error():
    with pytest.raises(ValueError, match="subset_size 70 exceeds the 60 training samples"):
        stream_of(subset=70)
