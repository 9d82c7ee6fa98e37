"""Plasticity metrics on hand-computed cases."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from plasticollapse.metrics.plasticity import (
    UnitStatistics,
    capture_activations,
    dead_fraction,
    dormant_fraction,
    dormant_units,
    drift,
    effective_rank,
    eval_mode,
    grad_norm,
    singular_values,
    srank,
    stable_rank,
    weight_magnitude,
)


def tall_diagonal(values, rows=7):
    a = torch.zeros(rows, len(values), dtype=torch.float64)
    a[range(len(values)), range(len(values))] = torch.tensor(values, dtype=torch.float64)
    return a


# ---------------------------------------------------------------------------------------------
# Ranks
# ---------------------------------------------------------------------------------------------


def test_ranks_of_a_diagonal_matrix():
    a = tall_diagonal([3.0, 2.0, 1.0])
    assert singular_values(a).tolist() == pytest.approx([3, 2, 1], rel=1e-12)
    p = np.array([3, 2, 1]) / 6
    assert effective_rank(a) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-12)
    assert srank(a) == 3  # 5/6 < 0.99 <= 1
    assert srank(a, delta=0.2) == 2  # 3/6 < 0.8 <= 5/6
    assert srank(a, delta=0.5) == 1  # 3/6 >= 0.5, exactly at the threshold
    assert stable_rank(a) == pytest.approx((9 + 4 + 1) / 9, rel=1e-12)


def test_ranks_of_identity_rank_one_and_zero():
    eye = torch.eye(5)
    assert effective_rank(eye) == pytest.approx(5, rel=1e-12)
    assert srank(eye) == 5 and stable_rank(eye) == pytest.approx(5)
    one = torch.outer(torch.arange(1.0, 9.0), torch.tensor([1.0, -2.0, 0.5]))
    assert effective_rank(one) == pytest.approx(1, rel=1e-6)
    assert srank(one) == 1 and stable_rank(one) == pytest.approx(1, rel=1e-9)
    zero = torch.zeros(4, 3)
    assert effective_rank(zero) == srank(zero) == stable_rank(zero) == 0


@pytest.mark.parametrize("shape", [(40, 6), (6, 40)])
def test_singular_values_match_svd_on_tall_and_wide(shape):
    a = np.random.default_rng(0).normal(size=shape)
    want = np.linalg.svd(a, compute_uv=False)
    got = singular_values(torch.tensor(a, dtype=torch.float32)).numpy()[: len(want)]
    np.testing.assert_allclose(got, want, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Units
# ---------------------------------------------------------------------------------------------


def test_dormant_and_dead_units():
    # E|h| per unit: 1, 2, 0.01, 0 -> layer mean 0.7525; s = 1.33, 2.66, 0.0133, 0
    a = torch.tensor([[1.0, 2.0, 0.01, 0.0], [-1.0, 2.0, -0.01, 0.0]])
    assert dormant_units(a).tolist() == [False, False, True, True]
    assert dormant_fraction(a) == 0.5
    assert dormant_fraction(a, tau=0.0) == 0.25  # only the silent unit has s = 0
    assert dead_fraction(a) == 0.25


def test_dormant_threshold_is_inclusive():
    a = torch.tensor([[2.0, 0.0, 1.0, -1.0]])  # layer mean 1, so s = (2, 0, 1, 1) exactly
    assert dormant_units(a, tau=1.0).tolist() == [False, True, True, True]
    assert dormant_units(a, tau=0.999).tolist() == [False, True, False, False]


def test_unit_that_fires_once_is_not_dead():
    a = torch.zeros(100, 3)
    a[57, 1] = 1e-6
    assert dead_fraction(a) == pytest.approx(2 / 3)


def test_all_silent_layer_is_all_dormant():
    assert dormant_fraction(torch.zeros(5, 4)) == 1.0


def test_conv_units_are_channels():
    a = torch.ones(3, 4, 5, 5)
    a[:, 2] = 0  # channel 2 silent everywhere
    a[0, 1, 0, 0] = 0  # channel 1 zero at one position only: alive
    assert dead_fraction(a) == 0.25
    assert dormant_units(a).tolist() == [False, False, True, False]
    assert srank(a) == 1  # every sample's channel averages are equal up to one entry


def test_unit_statistics_streamed_equals_functions():
    a = torch.relu(torch.randn(50, 6, dtype=torch.float64) - 0.5)
    a[:, 4] = 0
    stats = UnitStatistics()
    for part in a.split(13):
        stats.update(part)
    got = stats.compute()
    assert got["dormant_fraction"] == dormant_fraction(a)
    assert got["dead_fraction"] == dead_fraction(a) == pytest.approx(1 / 6)
    assert got["effective_rank"] == pytest.approx(effective_rank(a), rel=1e-12)
    assert got["srank"] == srank(a)
    assert got["stable_rank"] == pytest.approx(stable_rank(a), rel=1e-12)


@pytest.mark.parametrize("gram", [True, False])
def test_unit_statistics_of_relu_outputs_skip_abs_with_the_same_result(gram):
    # a ReLU's outputs: nonnegative=True sums h instead of |h|, the same numbers; a unit
    # active in a few rows only keeps dormant and dead apart
    a = torch.relu(torch.randn(60, 5, dtype=torch.float32) - 1.0)
    a[:, 1] = 0
    a[3, 2], a[5:, 2] = 1e-3, 0
    plain, known = UnitStatistics(gram=gram), UnitStatistics(gram=gram)
    for part in a.split(17):
        plain.update(part)
        known.update(part, nonnegative=True)
    for stats in (plain, known):
        stats.gram = None if gram else a.double().T @ a.double()
    assert torch.equal(known.abs_sum, plain.abs_sum)
    assert known.abs_sum.tolist() == pytest.approx(a.double().sum(0).tolist(), rel=1e-12)
    assert known.compute() == plain.compute()
    assert known.compute()["dead_fraction"] == 0.2  # unit 1; unit 2 fired once


@pytest.mark.parametrize("gram", [True, False])
def test_unit_statistics_of_conv_relu_outputs_take_one_mean_per_channel(gram):
    # conv: one mean over positions serves |h| and the gram's h when h >= 0 is known; the
    # numbers are those of the |h| path (float64 reference: sum_n mean_positions h)
    torch.manual_seed(0)
    a = torch.relu(torch.randn(40, 3, 4, 4) - 0.5)
    a[:, 1] = 0
    plain, known = UnitStatistics(gram=gram), UnitStatistics(gram=gram)
    for part in a.split(15):
        plain.update(part)
        known.update(part, nonnegative=True)
    means = a.double().flatten(2).mean(2)
    for stats in (plain, known):
        stats.gram = None if gram else means.T @ means
    assert torch.equal(known.abs_sum, plain.abs_sum)
    assert known.abs_sum.tolist() == pytest.approx(means.sum(0).tolist(), rel=1e-6)
    assert known.compute() == plain.compute()
    assert known.compute()["dead_fraction"] == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------


def test_weight_magnitude_is_mean_absolute_parameter():
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.fill_(-2.0)
        layer.bias.fill_(1.0)
    assert weight_magnitude(layer) == pytest.approx((6 * 2 + 2 * 1) / 8)


def test_drift_from_a_model_or_a_mapping():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    start = copy.deepcopy(model)
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert drift(model, start) == 0
    with torch.no_grad():
        model[0].weight.add_(0.5)  # 4 entries moved by 0.5 -> sqrt(4 * 0.25) = 1
        model[2].bias.sub_(1.0)
    assert drift(model, start) == pytest.approx(math.sqrt(2))
    assert drift(model, snapshot) == pytest.approx(math.sqrt(2))
    with pytest.raises(ValueError, match="no parameter"):
        drift(model, {})


def test_grad_norm_is_global_l2():
    model = nn.Sequential(nn.Linear(1, 1), nn.Linear(1, 1))
    assert grad_norm(model) == 0
    model[0].weight.grad = torch.tensor([[3.0]])
    model[1].bias.grad = torch.tensor([4.0])
    assert grad_norm(model) == pytest.approx(5.0)


# ---------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------


class Reused(nn.Module):
    """One ReLU module called twice, and dropout that eval mode must switch off."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.9)

    def forward(self, x):
        first = self.relu(self.a(x))
        return self.relu(self.b(self.drop(first)))


def test_capture_activations_in_forward_order_batched_eval_mode():
    torch.manual_seed(0)
    model = Reused()
    model.train()
    x = torch.randn(10, 3)
    layers = capture_activations(model, x, batch_size=3)
    assert model.training and model.drop.training  # restored
    assert [tuple(t.shape) for t in layers] == [(10, 4), (10, 2)]
    with torch.no_grad():
        first = torch.relu(model.a(x))
        torch.testing.assert_close(layers[0], first)
        torch.testing.assert_close(layers[1], torch.relu(model.b(first)))


def test_capture_named_modules():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x = torch.randn(5, 3)
    (tanh,) = capture_activations(model, x, modules=["1"])
    torch.testing.assert_close(tanh, torch.tanh(model[0](x)).detach())
    with pytest.raises(ValueError, match="no nn.ReLU"):
        capture_activations(model, x)
    with pytest.raises(ValueError, match="no module named"):
        capture_activations(model, x, modules=["9"])


def test_eval_mode_keeps_mixed_modes():
    model = nn.Sequential(nn.Dropout(), nn.BatchNorm1d(2))
    model[1].eval()
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert model.training and model[0].training and not model[1].training
