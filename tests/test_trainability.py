"""The plasticity score 1 - L_after / L_before of a probe that trains a copy."""

import pytest
import torch
import torch.nn.functional as F

from plasticollapse.metrics.trainability import plasticity_score
from plasticollapse.models import MLP


def _batch(n=64, d=10, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_an_unchanged_network_on_an_unchanged_batch_scores_zero():
    torch.manual_seed(0)
    model = MLP(10, [16], 3)
    x, y = _batch()
    for out in (plasticity_score(model, x, y, steps=0), plasticity_score(model, x, y, lr=0.0)):
        assert out["plasticity_score"] == 0.0
        assert out["probe_loss_after"] == out["probe_loss_before"]


def test_the_score_is_the_relative_loss_drop_and_the_network_is_untouched():
    torch.manual_seed(0)
    model = MLP(10, [32], 3)
    x, y = _batch()
    weights = [p.detach().clone() for p in model.parameters()]
    out = plasticity_score(model, x, y, steps=50, lr=0.1)
    assert out["plasticity_score"] == pytest.approx(
        1 - out["probe_loss_after"] / out["probe_loss_before"]
    )
    assert 0.2 < out["plasticity_score"] < 1  # a fresh MLP fits 64 points readily
    with torch.no_grad():
        expected_before = F.cross_entropy(model(x), y).item()
    assert out["probe_loss_before"] == pytest.approx(expected_before)
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters(), strict=True))


def test_a_network_with_dead_units_scores_lower_than_a_fresh_one():
    torch.manual_seed(0)
    fresh = MLP(10, [32], 3)
    dead = MLP(10, [32], 3)
    with torch.no_grad():  # every hidden unit's pre-activation negative: no gradient flows
        dead.hidden_linears[0].bias.fill_(-100.0)
    x, y = _batch()
    assert plasticity_score(dead, x, y, 50, 0.1)["plasticity_score"] < 0.05
    assert plasticity_score(fresh, x, y, 50, 0.1)["plasticity_score"] > 0.2


def test_bad_arguments():
    with pytest.raises(ValueError, match="steps"):
        plasticity_score(MLP(2, [2], 2), *_batch(d=2, classes=2), steps=-1)
