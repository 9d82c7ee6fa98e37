"""The fixed-batch steps (engines/fixed_batch.py: the plasticity probe's full-batch SGD, the
first layer kept in the batch's span) against autograd's ``torch.optim.SGD`` steps."""

from __future__ import annotations

import copy

import pytest
import torch

from plasticollapse.engines.fixed_batch import fixed_batch_steps
from plasticollapse.metrics.trainability import sgd_steps
from plasticollapse.models import MLP, MaskedLinear


def _case(seed: int, masked: bool = False, frozen: bool = False):
    """An MLP 20-16-12-6 (nn.Linear's default init) and a batch of 48 samples."""
    torch.manual_seed(seed)
    model = MLP(20, (16, 12), 6)
    for linear in model.linears:
        linear.reset_parameters()
    y = torch.randint(0, 6, (48,))
    if masked:  # classes 0, 2, 3 present (labels among them)
        head = MaskedLinear(12, 6)
        head.load_state_dict(model.classifier.state_dict(), strict=False)
        model.classifier = head
        head.set_classes(torch.tensor([0, 2, 3]))
        y = torch.tensor([0, 2, 3])[torch.randint(0, 3, (48,))]
    if frozen:
        model.classifier.requires_grad_(False)
    x = torch.randn(48, 20)
    return model, x, y


def _largest_relative_gap(a: torch.nn.Module, b: torch.nn.Module) -> float:
    with torch.no_grad():
        return max(
            float((p - q).abs().max() / q.abs().max())
            for p, q in zip(a.parameters(), b.parameters(), strict=True)
        )


def test_one_step_is_sgds_step_on_the_float64_twin():
    """One step from the same weights: every parameter within float32 rounding of
    autograd's step on a float64 copy (the exact formula), and it moved every parameter."""
    model, x, y = _case(0)
    twin = copy.deepcopy(model).double()
    start = copy.deepcopy(model)
    fixed_batch_steps(model, x, y, 1, 0.1)
    sgd_steps(twin, x.double(), y, 1, 0.1)
    assert _largest_relative_gap(model, twin) < 1e-6
    assert all(
        not torch.equal(p, q) for p, q in zip(model.parameters(), start.parameters(), strict=True)
    )


@pytest.mark.parametrize(
    ("masked", "frozen"), [(False, False), (True, False), (False, True)],
    ids=["plain", "masked-head", "frozen-head"],
)  # fmt: skip
def test_ten_steps_are_autograds_steps(masked, frozen):
    """Ten steps at a rate that moves the loss: every parameter within float32 rounding of
    autograd's ten steps (no ReLU near zero flips in so few: checked against the float64
    twin, which agrees with autograd as closely); a masked head's absent classes and a
    frozen head stay exactly as they were."""
    model, x, y = _case(1, masked, frozen)
    reference, twin = copy.deepcopy(model), copy.deepcopy(model).double()
    head_before = model.classifier.weight.detach().clone()
    fixed_batch_steps(model, x, y, 10, 0.2)
    sgd_steps(reference, x, y, 10, 0.2)
    sgd_steps(twin, x.double(), y, 10, 0.2)
    assert _largest_relative_gap(model, twin) < 2e-6
    assert _largest_relative_gap(reference, twin) < 2e-6
    moved = model.classifier.weight.detach() != head_before
    if frozen:
        assert not moved.any()
    elif masked:
        assert moved[[0, 2, 3]].any() and not moved[[1, 4, 5]].any()
    else:
        assert moved.any()


def test_the_probe_loss_falls_as_autograds_does():
    """100 steps (the probe's count): the batch's loss after them is autograd's to 1e-5
    relative, and well below the loss before."""
    import torch.nn.functional as F

    model, x, y = _case(2)
    reference = copy.deepcopy(model)
    with torch.no_grad():
        before = float(F.cross_entropy(model(x), y))
    fixed_batch_steps(model, x, y, 100, 0.1)
    sgd_steps(reference, x, y, 100, 0.1)
    with torch.no_grad():
        after, want = float(F.cross_entropy(model(x), y)), float(F.cross_entropy(reference(x), y))
    assert after < 0.8 * before
    assert after == pytest.approx(want, rel=1e-5)


def test_bad_batches_are_refused_with_the_reason():
    model, x, y = _case(3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 6\)"):
        fixed_batch_steps(model, x, torch.full((48,), 6), 1, 0.1)
    with pytest.raises(ValueError, match="21 features per sample, the model takes 20"):
        fixed_batch_steps(model, torch.randn(48, 21), y, 1, 0.1)
    masked, x, _ = _case(3, masked=True)
    with pytest.raises(ValueError, match="not among the masked head's classes"):
        fixed_batch_steps(masked, x, torch.ones(48, dtype=torch.long), 1, 0.1)
    with pytest.raises(ValueError, match="do not apply"):
        fixed_batch_steps(MLP(20, (16,), 6, layer_norm=True), x, y, 1, 0.1)


def test_full_batch_steps_take_the_kernel_below_twice_the_inputs(monkeypatch):
    """training.full_batch picks the fixed-batch kernel for B < 2d samples (its B x B
    product is then the smaller work) and the mini-batch engine's pass from B = 2d; both
    take autograd's steps within float32 rounding."""
    from plasticollapse.engines import fixed_batch
    from plasticollapse.training import full_batch

    calls: list[int] = []
    real = fixed_batch.fixed_batch_steps
    monkeypatch.setattr(
        fixed_batch, "fixed_batch_steps", lambda m, x, *a: calls.append(len(x)) or real(m, x, *a)
    )
    for samples in (39, 40):
        model, x, y = _case(4)
        x, y = x[:samples], y[:samples]
        reference = copy.deepcopy(model)
        full_batch.full_batch_steps(model, x, y, 5, 0.2)
        sgd_steps(reference, x, y, 5, 0.2)
        assert _largest_relative_gap(model, reference) < 2e-6
    assert calls == [39]
