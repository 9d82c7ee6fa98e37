"""The compiled mini-batch engine reproduces the reference engine (autograd + SGD, batch B).

As for the batch-1 engine (tests/test_fast_engine.py), the comparisons are posed where two
float32 implementations cannot part chaotically:

- one step from the same weights, against a hand-written float64 NumPy step (forward,
  masked mean cross-entropy, backward, SGD with weight decay and L2 Init's pull), at batch
  1, 16 and 90, with and without a masked head;
- thousands of steps *shadowed* (tests/shadow.py): before each segment the float64
  reference engine at the same batch size is reset to the compiled engine's parameters;
  all but a few segments must agree to ``SEGMENT_RTOL``, and a 1%-wrong learning rate
  parts them;
- prequential scoring on a hand case (zero weights: every logit 0, loss log C, before the
  update that changes them) and the reference's last partial batch.

These tests run under the host's Numba target and ``NUMBA_CPU_NAME=generic`` (Makefile).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from shadow import segments_of, shadow
from synthetic import mnist_like
from torch import nn

from plasticollapse.engines.fast import FastEngine
from plasticollapse.engines.minibatch import MiniBatchEngine, minibatch_supports
from plasticollapse.engines.reference import ReferenceEngine
from plasticollapse.models import MLP
from plasticollapse.remedies import REMEDIES
from plasticollapse.studies.streams.model import MaskedLinear
from plasticollapse.training import make_engine

PRESENT = [0, 2, 3]  # a masked head's classes in these tests (of 5)


def tiny(seed: int = 0, masked: bool = False, hidden=(16, 12), n_in=20, n_cls=5) -> MLP:
    torch.manual_seed(seed)
    model = MLP(n_in, hidden, n_cls)
    if masked:
        head = MaskedLinear(hidden[-1], n_cls)
        head.load_state_dict(model.classifier.state_dict(), strict=False)
        model.classifier = head
        head.set_classes(torch.tensor(PRESENT))
    for lin in model.linears:  # nonzero biases, so that their updates are checked too
        with torch.no_grad():
            lin.bias.uniform_(-0.1, 0.1)
    return model


def data(n: int, n_in: int = 20, n_cls: int = 5, masked: bool = False, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, n_in, generator=g) * (torch.rand(n, n_in, generator=g) < 0.4)
    classes = torch.tensor(PRESENT) if masked else torch.arange(n_cls)
    y = classes[torch.randint(0, len(classes), (n,), generator=g)]
    return x, y


def float64_step(model: MLP, x, y, lr, decay=0.0, pull=0.0, anchor=None, hidden=None):
    """One SGD step on the batch (x, y) in float64 NumPy, written from the formulas of
    engines/minibatch_kernels.py: returns (new parameters, correct, mean loss); the hidden
    layers' activations are appended to ``hidden`` if given."""
    params = [p.detach().double().numpy().copy() for p in model.parameters()]
    ws, bs = params[0::2], params[1::2]
    present = getattr(model.classifier, "present", torch.ones(ws[-1].shape[0], dtype=bool))
    present = present.numpy()
    a = [x.double().numpy()]
    for l, (w, b) in enumerate(zip(ws, bs, strict=True)):
        z = a[-1] @ w.T + b
        a.append(np.maximum(z, 0) if l < len(ws) - 1 else z)
    if hidden is not None:
        hidden.extend(a[1:-1])
    z = np.where(present, a[-1], np.finfo(np.float32).min)
    m = z.max(1, keepdims=True)
    logp = z - m - np.log(np.exp(z - m).sum(1, keepdims=True))
    yb = y.numpy()
    batch = len(yb)
    loss = -logp[np.arange(batch), yb].mean()
    correct = int((z.argmax(1) == yb).sum())
    delta = np.exp(logp)
    delta[np.arange(batch), yb] -= 1
    delta /= batch
    grads = []
    for l in range(len(ws) - 1, -1, -1):
        grads.append((delta.T @ a[l], delta.sum(0)))
        delta = (delta @ ws[l]) * (a[l] > 0)
    grads = [g for pair in reversed(grads) for g in pair]
    anchor = anchor or [np.zeros_like(p) for p in params]
    new = [
        p - lr * ((g + pull * (p - np.asarray(a0, np.float64))) + decay * p)
        for p, g, a0 in zip(params, grads, anchor, strict=True)
    ]
    return new, correct, loss


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "masked"])
@pytest.mark.parametrize("batch", [1, 16, 90])
def test_one_step_matches_the_float64_update(batch, masked):
    model = tiny(1, masked)
    x, y = data(batch, masked=masked, seed=batch)
    want, correct, loss = float64_step(model, x, y, lr=0.5)
    stats = MiniBatchEngine(model, 0.5, batch).train(x, y, torch.arange(batch))
    assert stats.count == batch and stats.correct == correct
    assert stats.loss == pytest.approx(loss, rel=1e-6)
    for p, q in zip(model.parameters(), want, strict=True):
        moved = np.abs(q - p.detach().double().numpy()).max() / np.abs(q).max()
        assert moved < 1e-6
    if masked:  # the absent classes' rows of the head get no gradient at all
        before = tiny(1, masked).classifier
        absent = [c for c in range(5) if c not in PRESENT]
        assert torch.equal(model.classifier.weight[absent], before.weight[absent])
        assert torch.equal(model.classifier.bias[absent], before.bias[absent])


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "masked"])
def test_one_step_with_weight_decay_and_l2_init_matches_float64(masked):
    model = tiny(2, masked)
    anchor = [p.detach().numpy() * 0.5 for p in model.parameters()]  # theta_0 != theta
    decay, l2 = REMEDIES["weight_decay"](0.03), REMEDIES["l2_init"](0.2)
    l2.initial = [torch.from_numpy(a.copy()) for a in anchor]
    x, y = data(16, masked=masked, seed=3)
    want, _, _ = float64_step(model, x, y, 0.5, decay=0.03, pull=0.2, anchor=anchor)
    MiniBatchEngine(model, 0.5, 16, [decay, l2]).train(x, y, torch.arange(16))
    for p, q in zip(model.parameters(), want, strict=True):
        assert np.abs(q - p.detach().double().numpy()).max() / np.abs(q).max() < 1e-6


def test_a_frozen_head_is_neither_trained_nor_decayed():
    model = tiny(3)
    etf = REMEDIES["etf_head"](1.0)
    from plasticollapse.remedies import RemedyContext

    etf.bind(model, RemedyContext(seed=0, num_classes=5))
    head = model.classifier.weight.detach().clone()
    first = model.linears[0].weight.detach().clone()
    x, y = data(64, seed=4)
    MiniBatchEngine(model, 0.5, 16, [etf, REMEDIES["weight_decay"](0.1)]).train(
        x, y, torch.arange(64)
    )
    assert torch.equal(model.classifier.weight, head)
    assert not torch.equal(model.linears[0].weight, first)


def test_scored_before_the_update_it_causes():
    """Zero weights: every logit is 0, so each sample's loss is log C and the prediction is
    class 0 (the first maximum), whatever the update then does. One batch of 8: its loss
    is exactly log 5 and its hits those labelled 0, though the step moved the head."""
    model = tiny(0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    x, y = data(8, seed=5)
    stats = MiniBatchEngine(model, 1.0, 8).train(x, y, torch.arange(8))
    assert stats.loss == pytest.approx(math.log(5), rel=1e-7)
    assert stats.correct == int((y == 0).sum())
    assert model.classifier.bias.abs().max() > 0.01  # the update did happen
    # the second pass scores the updated network: its loss is lower on the same batch
    again = MiniBatchEngine(model, 1.0, 8).train(x, y, torch.arange(8))
    assert again.loss < stats.loss - 0.01


def test_the_last_partial_batch_is_its_own_mean_as_in_the_reference():
    model = tiny(4)
    x, y = data(37, seed=6)
    order = torch.randperm(37, generator=torch.Generator().manual_seed(1))
    ref_model = copy.deepcopy(model).double()
    got = MiniBatchEngine(model, 0.3, 16).train(x, y, order)  # 16 + 16 + 5
    want = ReferenceEngine(ref_model, 0.3, 16).train(x.double(), y, order)
    assert (got.correct, got.count) == (want.correct, want.count)
    assert got.loss_sum == pytest.approx(want.loss_sum, rel=1e-6)
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        assert (p.double() - q).abs().max() / q.abs().max() < 1e-5


def test_columns_train_on_permuted_inputs():
    model = tiny(5)
    twin = copy.deepcopy(model)
    x, y = data(64, seed=7)
    columns = torch.randperm(20, generator=torch.Generator().manual_seed(2))
    order = torch.arange(64)
    a = MiniBatchEngine(model, 0.3, 16).train(x, y, order, columns=columns)
    b = MiniBatchEngine(twin, 0.3, 16).train(x[:, columns].contiguous(), y, order)
    assert a.correct == b.correct and a.loss_sum == pytest.approx(b.loss_sum, rel=1e-6)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- Continual Backprop


def float64_generate_and_test(params, hidden, state, cbp):
    """Continual Backprop after the update (remedies/cbp.py's formulas) in float64 NumPy on
    the new parameters ``params`` (weights out x in, in the model's column order) and the
    batch's hidden activations; ``state`` (util, mean, power, age, accumulated lists) is
    updated in place. Returns the units replaced per layer and the smallest gap between a
    replaced unit's score and a kept eligible one's (the test's margin)."""
    d, ws, bs = cbp.cbp_decay_rate, params[0::2], params[1::2]
    chosen, margin = [], np.inf
    for l, h in enumerate(hidden):
        state["age"][l] += 1
        state["power"][l] *= d
        c = 1 - state["power"][l]
        state["mean"][l] = d * state["mean"][l] + (1 - d) * h.mean(0)
        out = np.abs(ws[l + 1]).mean(0)
        if cbp.cbp_utility == "adaptable_contribution":
            new = out * np.abs(h - state["mean"][l] / c).mean(0) / np.abs(ws[l]).mean(1)
        else:
            new = out * np.abs(h).mean(0)
        state["util"][l] = d * state["util"][l] + (1 - d) * new
        eligible = np.flatnonzero(state["age"][l] > cbp.cbp_maturity)
        state["accumulated"][l] += cbp.cbp_replacement_rate * len(eligible)
        count = int(state["accumulated"][l])
        state["accumulated"][l] -= count
        score = state["util"][l][eligible] / c[eligible]
        ranked = np.argsort(score, kind="stable")
        if 0 < count < len(eligible):
            margin = min(margin, score[ranked[count]] - score[ranked[count - 1]])
        units = eligible[ranked[:count]]
        state["util"][l][units] = state["mean"][l][units] = 0
        chosen.append(units)
    for l, units in enumerate(chosen):
        fan_in = ws[l].shape[1]
        fresh = cbp.stream.take(len(units) * fan_in).reshape(len(units), fan_in)
        ws[l][units] = cbp.bounds[l] * fresh  # float32 products, as both engines draw
        bs[l][units] = 0
        ws[l + 1][:, units] = 0
        state["age"][l][units] = 0
        state["power"][l][units] = 1
    return chosen, margin


@pytest.mark.parametrize("utility", ["contribution", "adaptable_contribution"])
@pytest.mark.parametrize("masked", [False, True], ids=["plain", "masked"])
def test_one_step_with_continual_backprop_matches_float64(masked, utility):
    from plasticollapse.remedies import RemedyContext

    model = tiny(3, masked)
    x, y = data(16, masked=masked, seed=4)
    columns = torch.randperm(20, generator=torch.Generator().manual_seed(5))
    cbp = REMEDIES["cbp"](0.15, 0.9, 2, utility)  # 0.15 per eligible unit: 1-2 due a layer
    cbp.bind(model, RemedyContext(seed=3, num_classes=5))
    g = torch.Generator().manual_seed(6)
    for l in range(2):  # a state mid-run: mature and young units, utilities that differ
        cbp.age[l].copy_(torch.randint(0, 6, cbp.age[l].shape, generator=g))
        cbp.power[l].copy_(0.9 ** cbp.age[l].double())
        cbp.util[l].copy_(torch.rand(cbp.util[l].shape, generator=g))
        cbp.mean[l].copy_(torch.rand(cbp.mean[l].shape, generator=g))
        cbp.accumulated[l] = 0.5
    state = {k: [t.double().numpy().copy() for t in getattr(cbp, k)] for k in
             ("util", "mean", "power", "age")}  # fmt: skip
    state["accumulated"] = cbp.accumulated.numpy().copy()
    twin_stream = copy.deepcopy(cbp.stream)
    hidden: list = []
    want, correct, loss = float64_step(model, x[:, columns], y, lr=0.5, hidden=hidden)
    twin = copy.copy(cbp)
    twin.stream = twin_stream
    chosen, margin = float64_generate_and_test(want, hidden, state, twin)
    assert all(len(units) > 0 for units in chosen)  # a replacement in every layer
    assert margin > 1e-4  # the choice is not a float32 near-tie

    stats = MiniBatchEngine(model, 0.5, 16, [cbp]).train(x, y, torch.arange(16), columns)
    assert stats.correct == correct and stats.loss == pytest.approx(loss, rel=1e-6)
    assert stats.extra == {"cbp_units_replaced": sum(len(u) for u in chosen)}
    for p, q in zip(model.parameters(), want, strict=True):
        assert np.abs(q - p.detach().double().numpy()).max() / np.abs(q).max() < 1e-6
    for l, units in enumerate(chosen):
        assert cbp.age[l][units].eq(0).all() and cbp.util[l][units].eq(0).all()
        for key in ("util", "mean", "power"):
            got = getattr(cbp, key)[l].double().numpy()
            assert np.abs(got - state[key][l]).max() <= 1e-6 * max(np.abs(state[key][l]).max(), 1)
        assert np.array_equal(cbp.age[l].numpy(), state["age"][l])
    assert np.allclose(cbp.accumulated.numpy(), state["accumulated"], rtol=0, atol=1e-12)
    assert cbp.stream.consumed == twin_stream.consumed > 0


# --------------------------------------------------------------------------- shadowing

#: case -> (batch, masked head, remedies (name, args), steps)
SHADOW_CASES = {
    "b16": (16, False, [], 1500),
    "b90 masked": (90, True, [], 500),
    "b16 weight_decay+l2_init": (16, False, [("weight_decay", (0.01,)), ("l2_init", (0.01,))], 800),
    "b8 masked etf_head": (8, True, [("etf_head", (1.0,))], 1000),
    # replacement rates high enough for dozens of units replaced in each run
    "b16 cbp": (16, False, [("cbp", (2e-3, 0.99, 50, "adaptable_contribution"))], 1000),
    "b90 masked cbp(contribution)+weight_decay": (
        90,
        True,
        [("cbp", (2e-3, 0.9, 20, "contribution")), ("weight_decay", (0.01,))],
        500,
    ),
    "b8 masked etf_head+cbp": (
        8,
        True,
        [("etf_head", (1.0,)), ("cbp", (2e-3, 0.99, 50, "adaptable_contribution"))],
        1000,
    ),
    "b16 shrink_perturb+redo every k": (
        16,
        False,
        [("shrink_perturb", (0.98, 0.001, 25)), ("redo", (0.1, 50))],
        1000,
    ),
}


def _mlp_data(batch, masked, steps, seed=1):
    n = min(batch * steps, 4000)
    x, y = mnist_like(n, dim=64, classes=5, density=0.3, seed=seed)
    if masked:  # relabel onto the present classes
        y = torch.tensor(PRESENT)[y % len(PRESENT)]
    epochs = -(-batch * steps // n)
    g = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(n, generator=g) for _ in range(epochs)])[: batch * steps]
    return x, y, order


@pytest.mark.parametrize("case", sorted(SHADOW_CASES))
def test_thousands_of_steps_shadow_the_reference(case):
    batch, masked, spec, steps = SHADOW_CASES[case]
    x, y, order = _mlp_data(batch, masked, steps)
    model = tiny(6, masked, hidden=(32, 24), n_in=64)
    draws = "shrink" in case  # torch draws other numbers into float64: a float32 twin
    run = shadow(
        model,
        x,
        y,
        segments_of(order, 100 * batch),  # 100 steps a segment (a pass: steps count from 0)
        lr=0.05,
        remedies=lambda: [REMEDIES[name](*args) for name, args in spec],
        candidate=lambda m, lr, r: MiniBatchEngine(m, lr, batch, r),
        twin=lambda m, lr, r: ReferenceEngine(m, lr, batch, r),
        twin_dtype=torch.float32 if draws else torch.float64,
    )
    print(f"\n{case}: {run.summary()}")
    run.assert_agrees()
    if "cbp" in case:
        assert sum(s.candidate.extra["cbp_units_replaced"] for s in run.segments) > 20
    if "redo" in case:  # ReDo acted every 50 steps: twice in every segment
        assert all("redo_units_reset" in s.candidate.extra for s in run.segments)
    late = run.segments[-10:]
    assert sum(s.candidate.correct for s in late) / sum(s.candidate.count for s in late) > 0.5


def test_shadowing_catches_a_wrong_update():
    x, y, order = _mlp_data(16, False, 400)
    run = shadow(
        tiny(6, hidden=(32, 24), n_in=64),
        x,
        y,
        segments_of(order, 25 * 16),
        lr=0.05,
        candidate=lambda m, lr, r: MiniBatchEngine(m, lr * 1.01, 16, r),
        twin=lambda m, lr, r: ReferenceEngine(m, lr, 16, r),
    )
    assert len(run.parted) == len(run.segments)


# --------------------------------------------------------------------------- choosing


def test_make_engine_takes_it_for_batches_and_masked_heads_when_asked():
    # auto keeps the reference engine at batch > 1, so runs made before the compiled
    # mini-batch engine existed keep their numbers; fast asks for it
    assert isinstance(make_engine("auto", tiny(), 0.1, 16), ReferenceEngine)
    assert isinstance(make_engine("fast", tiny(), 0.1, 16), MiniBatchEngine)
    assert isinstance(make_engine("fast", tiny(), 0.1, 90), MiniBatchEngine)
    # a masked head at batch 1: not the batch-1 engine, which computes a plain head
    assert isinstance(make_engine("fast", tiny(masked=True), 0.1, 1), MiniBatchEngine)
    assert isinstance(make_engine("auto", tiny(), 0.1, 1), FastEngine)  # batch 1 unchanged
    # Continual Backprop at batch > 1: compiled when asked for, the reference under auto
    cbp = REMEDIES["cbp"](5e-4, 0.99, 50, "adaptable_contribution")
    assert isinstance(make_engine("fast", tiny(), 0.1, 16, [cbp]), MiniBatchEngine)
    assert isinstance(make_engine("auto", tiny(), 0.1, 16, [cbp]), ReferenceEngine)


def test_refusals_say_why():
    two = [REMEDIES["cbp"](5e-4, 0.99, 50, "contribution") for _ in range(2)]
    assert "two generate-and-test remedies" in minibatch_supports(tiny(), 16, two)
    nc1 = REMEDIES["nc1_reg"](0.1, 1.0)
    assert "acts at every step" in minibatch_supports(tiny(), 16, [nc1])
    assert "LayerNorm" in minibatch_supports(MLP(20, (8,), 5, layer_norm=True), 16)
    assert "outside 1..4096" in minibatch_supports(tiny(), 0)

    class Odd(nn.Linear):
        pass

    odd = tiny()
    odd.classifier = Odd(12, 5)
    assert "classifier is a Odd" in minibatch_supports(odd, 16)
    x, y = data(16, seed=8)
    y[3] = 1  # class 1 is not among the masked head's
    with pytest.raises(ValueError, match="not among the masked head's classes"):
        MiniBatchEngine(tiny(masked=True), 0.1, 16).train(x, y, torch.arange(16))
