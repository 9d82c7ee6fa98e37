"""The class-incremental stream (the loss-of-plasticity code's incremental CIFAR protocol)
end to end on tiny digits runs, and its masked head."""

import pytest
import torch
import torch.nn.functional as F
from stream_helpers import (
    check_full_preset_pins_the_source,
    check_quick_preset_runs_shortened,
    check_resume_after_a_kill,
    check_rows_hold_every_key,
)

from plasticollapse.metrics.collapse import collapse_metrics
from plasticollapse.metrics.measure import measure_model
from plasticollapse.studies.class_incremental.config import SOURCE, Config
from plasticollapse.studies.class_incremental.run import ClassIncrementalStream
from plasticollapse.studies.streams.model import MaskedLinear, build_model, set_classes
from plasticollapse.studies.streams.stream import StreamData

STUDY = "class_incremental"
UNSCALED = ("epochs_per_task", "batch_size", "lr", "class_order")


def test_rows_hold_every_key_with_finite_values(tmp_path):
    rows = check_rows_hold_every_key(STUDY, tmp_path)
    assert [r["classes_seen"] for r in rows] == [2, 4, 6]
    # Collapse is measured over the classes present, on training and held-out data.
    assert [r["num_classes_present"] for r in rows] == [2, 4, 6]
    assert [r["test_num_classes_present"] for r in rows] == [2, 4, 6]
    assert [r["num_classes_absent"] for r in rows] == [8, 6, 4]
    assert rows[0]["num_train"] < rows[1]["num_train"] < rows[2]["num_train"]


def test_killed_after_a_task_resumes_to_the_uninterrupted_rows(tmp_path):
    check_resume_after_a_kill(STUDY, tmp_path)


def test_the_quick_preset_runs_and_the_full_preset_pins_the_source(tmp_path, capsys):
    check_quick_preset_runs_shortened(STUDY, tmp_path, capsys, "--epochs-per-task", "1")
    # The class groups are scaled from 100 classes to 10 (test below); the rest is pinned.
    check_full_preset_pins_the_source(STUDY, SOURCE, UNSCALED)


def test_protocol_constants_equal_the_source():
    # shibhansh/loss-of-plasticity, lop/incremental_cifar/incremental_cifar_experiment.py:
    #     self.current_num_classes = 5; increase = 5 (extend_classes); self.num_classes = 100
    #     self.class_increase_frequency = 200; self.batch_sizes = {"train": 90, ...}
    #     self.all_classes = np.random.permutation(self.num_classes)
    # lop/incremental_cifar/cfg/base_deep_learning_system.json: "stepsize": 0.1
    source = {
        "initial_classes": 5,
        "classes_per_task": 5,
        "num_classes": 100,
        "epochs_per_task": 200,
        "batch_size": 90,
        "lr": 0.1,
        "class_order": "random",
    }
    assert source == SOURCE
    defaults = Config()
    for name in UNSCALED:
        assert getattr(defaults, name) == source[name], name
    # Equal groups, the last task presenting every class, as the source's 5 + 19 x 5 = 100
    # (a 5 % share of 10 classes is half a class: groups of 2 give 5 tasks).
    assert source["initial_classes"] + 19 * source["classes_per_task"] == source["num_classes"]
    assert defaults.initial_classes == defaults.classes_per_task == 2
    assert defaults.classes_at(defaults.tasks - 1) == 10


def stream_of(seed=0, order="random", tasks=3):
    g = torch.Generator().manual_seed(1)
    data = StreamData(
        torch.rand(80, 5, generator=g),
        torch.arange(80) % 6,
        torch.rand(30, 5, generator=g),
        torch.arange(30) % 6,
        6,
    )
    config = Config(dataset="digits", seed=seed, class_order=order, tasks=tasks)
    return ClassIncrementalStream(config, data), data


def test_classes_arrive_in_groups_and_tasks_hold_every_sample_of_them():
    stream, data = stream_of()
    seen = []
    for t in range(3):
        task = stream.task(t)
        present = task.classes.tolist()
        assert len(present) == 2 * (t + 1) and set(seen) <= set(present)
        seen = present
        assert torch.equal(task.train, torch.isin(data.y, task.classes).nonzero().flatten())
        assert set(task.y[task.train].tolist()) == set(present)
        assert set(task.held_out()[1].tolist()) == set(present)
        assert torch.equal(task.y, data.y)  # true labels
    assert sorted(stream.order.tolist()) == list(range(6))
    fixed, _ = stream_of(order="fixed")
    assert fixed.task(1).classes.tolist() == [0, 1, 2, 3]
    assert stream_of(seed=0)[0].order.tolist() == stream.order.tolist()


def test_more_tasks_than_classes_is_a_clear_error():
    with pytest.raises(ValueError, match="tasks 4 need 8 classes .* has 6; lower tasks"):
        stream_of(tasks=4)
    assert Config(engine="fast", batch_size=1).engine == "fast"  # the mini-batch engine masks


def test_the_masked_head_equals_slicing_the_logits_as_the_source_does():
    torch.manual_seed(0)
    head = MaskedLinear(4, 5)
    present = torch.tensor([1, 3])
    head.set_classes(present)
    h = torch.randn(7, 4, requires_grad=True)
    y = present[torch.tensor([0, 1, 1, 0, 1, 0, 0])]
    masked = F.cross_entropy(head(h), y)
    # The source: net(x)[:, all_classes[:current]], labels re-indexed among those columns.
    sliced_logits = F.linear(h, head.weight, head.bias)[:, present]
    sliced = F.cross_entropy(sliced_logits, torch.searchsorted(present, y))
    assert torch.allclose(masked, sliced, atol=1e-6, rtol=0)
    masked.backward()
    grad_masked = head.weight.grad.clone()
    head.weight.grad = None
    F.cross_entropy(
        F.linear(h, head.weight, head.bias)[:, present], torch.searchsorted(present, y)
    ).backward()
    assert torch.allclose(grad_masked, head.weight.grad, atol=1e-6, rtol=0)
    assert grad_masked[[0, 2, 4]].abs().sum() == 0  # absent classes' rows learn nothing
    assert set(head(torch.randn(100, 4)).argmax(1).tolist()) <= {1, 3}


def test_a_masked_network_is_measured_over_the_classes_present():
    config = Config(dataset="digits", hidden=(8,))
    torch.manual_seed(0)
    model = build_model(config, 5, 6, masked=True)
    assert isinstance(model.classifier, MaskedLinear)
    set_classes(model, torch.tensor([0, 2, 5]))
    assert "classifier.present" in model.state_dict()  # checkpoints restore the mask
    x = torch.randn(60, 5)
    y = torch.tensor([0, 2, 5])[torch.arange(60) % 3]
    got = measure_model(model, x, y, 6)
    with torch.no_grad():
        h, logits = model.features(x), model(x)
    want = collapse_metrics(h, y, 6, model.classifier.weight, model.classifier.bias, logits)
    assert got["num_classes_present"] == 3 and got["num_classes_absent"] == 3
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-6, nan_ok=True), key
    assert set(logits.argmax(1).tolist()) <= {0, 2, 5}
