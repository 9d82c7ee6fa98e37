"""Remedies: shrink & perturb, the NC1 regulariser, L2 Init and ReDo, each against its formula."""

import pytest
import torch

from plasticollapse.models import MLP, ResNet18
from plasticollapse.remedies.functional import (
    fresh_like,
    l2_init_penalty,
    nc1_regularised_loss,
    redo_reset,
    shrink_perturb,
)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_shrink_perturb_is_exactly_shrink_theta_plus_perturb_fresh():
    torch.manual_seed(0)
    model, fresh = MLP(16, (8, 8), 3), MLP(16, (8, 8), 3)
    before = snapshot(model)
    shrink_perturb(model, shrink=0.6, perturb=0.01, fresh=fresh)
    for name, param in model.named_parameters():
        expected = 0.6 * before[name] + 0.01 * dict(fresh.named_parameters())[name]
        torch.testing.assert_close(param, expected, rtol=0, atol=1e-7)


def test_shrink_perturb_shrinks_batchnorm_affine_but_not_running_stats():
    torch.manual_seed(0)
    model = ResNet18(num_classes=3, in_channels=1, width=4, maxpool=False)
    model(torch.rand(8, 1, 8, 8))  # train mode: moves the running statistics off 0/1
    before = snapshot(model)
    shrink_perturb(model, 0.5, 0.0, generator=torch.Generator().manual_seed(1))
    bn = model.stem[1]
    torch.testing.assert_close(bn.weight, 0.5 * before["stem.1.weight"])
    assert torch.equal(bn.running_mean, before["stem.1.running_mean"])
    assert torch.equal(bn.running_var, before["stem.1.running_var"])


def test_fresh_like_is_seeded_uses_the_model_init_and_spares_the_global_rng():
    model = MLP(16, (8,), 3)
    state = torch.random.get_rng_state()
    a = fresh_like(model, torch.Generator().manual_seed(5))
    b = fresh_like(model, torch.Generator().manual_seed(5))
    c = fresh_like(model, torch.Generator().manual_seed(6))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.linears[0].weight, b.linears[0].weight)
    assert not torch.equal(a.linears[0].weight, c.linears[0].weight)
    assert all(torch.count_nonzero(layer.bias) == 0 for layer in a.linears)  # the MLP's init
    assert type(a) is MLP and a.linears[0].weight.shape == (8, 16)


def _nc1_setup(seed=0):
    torch.manual_seed(seed)
    features = torch.randn(24, 5, requires_grad=True)
    labels = torch.arange(24) % 3
    weight = torch.randn(3, 5)
    return features, labels, weight


def _grad(value, features):
    (g,) = torch.autograd.grad(value, features, retain_graph=True)
    return g


def test_nc1_regulariser_gradient_reaches_the_features_below_the_clip():
    from plasticollapse.metrics.collapse import nc1_loss

    features, labels, weight = _nc1_setup()
    lam = 0.05
    logits = features @ weight.T
    loss, ce, nc1 = nc1_regularised_loss(logits, features, labels, 3, lam=lam, clip=1e6)
    assert nc1.item() < 1e6
    torch.testing.assert_close(nc1, nc1_loss(features, labels, 3))
    d_loss, d_ce, d_nc1 = (_grad(v, features) for v in (loss, ce, nc1))
    assert d_loss.abs().sum() > 0 and d_nc1.abs().sum() > 0
    torch.testing.assert_close(d_loss - d_ce, -lam * d_nc1)


def test_nc1_regulariser_passes_no_gradient_above_the_clip():
    features, labels, weight = _nc1_setup()
    logits = features @ weight.T
    loss, ce, nc1 = nc1_regularised_loss(logits, features, labels, 3, lam=0.05, clip=1e-6)
    assert nc1.item() > 1e-6
    torch.testing.assert_close(loss, ce - 0.05 * 1e-6)
    torch.testing.assert_close(_grad(loss, features), _grad(ce, features))


def test_l2_init_penalty_value_and_gradient():
    torch.manual_seed(0)
    model = MLP(6, (4,), 2)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    lam = 0.3
    penalty = l2_init_penalty(model, initial, lam)
    expected = sum(((p - initial[n]) ** 2).sum() for n, p in model.named_parameters())
    torch.testing.assert_close(penalty, 0.5 * lam * expected)
    penalty.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, lam * (p.detach() - initial[n]))
    # a list in parameters() order is the same
    as_list = l2_init_penalty(model, list(initial.values()), lam)
    torch.testing.assert_close(as_list, penalty.detach())


def test_redo_resets_exactly_the_dormant_units():
    torch.manual_seed(0)
    model = MLP(10, (12, 12), 4)
    inputs = torch.randn(256, 10)  # centred inputs: every other unit fires on about half
    dormant = {0: [1, 5], 1: [0, 7, 11]}
    with torch.no_grad():  # a zero incoming row and a negative bias: the unit never fires
        for layer, units in dormant.items():
            model.hidden_linears[layer].weight[units] = 0.0
            model.hidden_linears[layer].bias[units] = -1.0
    # A momentum buffer, to check the recycled weights' buffers are cleared.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    model(inputs).sum().backward()
    optimizer.step()
    for p in model.parameters():
        optimizer.state[p]["momentum_buffer"].fill_(1.0)
    before = snapshot(model)

    counts = redo_reset(
        model, inputs, tau=0.01, generator=torch.Generator().manual_seed(3), optimizer=optimizer
    )

    assert counts == [2, 3]
    fresh = fresh_like(model, torch.Generator().manual_seed(3))  # the same draw
    layers, fresh_layers = model.linears, fresh.linears
    for l, units in dormant.items():
        keep = [i for i in range(12) if i not in units]
        w, b, out = layers[l].weight, layers[l].bias, layers[l + 1].weight
        fresh_rows = fresh_layers[l].weight[units]
        if l == 1:  # columns from layer 0's recycled units are zero (outgoing zeros win)
            fresh_rows[:, dormant[0]] = 0.0
        assert torch.equal(w[units], fresh_rows)
        assert torch.equal(b[units], fresh_layers[l].bias[units])
        assert torch.count_nonzero(out[:, units]) == 0
        # everything else untouched
        untouched = before[f"body.{2 * l}.weight"][keep]
        if l == 1:
            untouched[:, dormant[0]] = 0.0
        assert torch.equal(w[keep], untouched)
        assert torch.equal(b[keep], before[f"body.{2 * l}.bias"][keep])
        buffer = optimizer.state[layers[l].weight]["momentum_buffer"]
        expected = torch.ones_like(buffer)
        expected[units] = 0.0
        if l == 1:
            expected[:, dormant[0]] = 0.0
        assert torch.equal(buffer, expected)
    # the classifier's rows other than the dormant units' columns, and its bias, are unchanged
    keep = [i for i in range(12) if i not in dormant[1]]
    assert torch.equal(model.classifier.weight[:, keep], before["classifier.weight"][:, keep])
    assert torch.equal(model.classifier.bias, before["classifier.bias"])


def test_redo_rejects_models_it_cannot_reset():
    with pytest.raises(TypeError, match="MLP"):
        redo_reset(ResNet18(3, 1, width=4), torch.rand(2, 1, 8, 8), 0.1)
