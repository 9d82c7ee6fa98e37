"""The background Monitor's copy of a model: the model's values, none of its tensors or hooks."""

import torch
from torch import nn

from plasticollapse.metrics.snapshot import ModelSnapshot


class WithExtraBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU())
        self.register_buffer("scale", torch.ones(3), persistent=False)  # not in state_dict

    def forward(self, x):
        return self.body(x) * self.scale


def test_a_snapshot_follows_the_model_in_place_without_its_tensors_or_hooks():
    torch.manual_seed(0)
    model = WithExtraBuffer()
    calls = []
    model.body[0].register_forward_hook(lambda *_: calls.append(1))
    snapshot = ModelSnapshot(model)
    first = snapshot.take()
    model(torch.randn(8, 4)).sum().backward()  # moves BatchNorm's running statistics
    with torch.no_grad():
        model.body[0].weight.add_(1.0)
        model.scale.mul_(3.0)
    model.body[1].eval()
    taken = snapshot.take()
    assert taken is first and snapshot.copies == 1  # refreshed, not copied again
    for (name, mine), theirs in zip(
        list(taken.named_parameters()) + list(taken.named_buffers()),
        list(model.parameters()) + list(model.buffers()),
        strict=True,
    ):
        assert torch.equal(mine, theirs) and mine.data_ptr() != theirs.data_ptr(), name
    assert [m.training for m in taken.modules()] == [m.training for m in model.modules()]
    assert all(p.grad is None for p in taken.parameters())
    calls.clear()
    taken(torch.randn(8, 4))
    assert calls == []  # the model's hook stays on the model
    model.body[0] = nn.Linear(4, 3, bias=False)  # a replaced layer: copied anew
    assert snapshot.take() is not first and snapshot.copies == 2
