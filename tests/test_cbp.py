"""Continual Backprop against the published algorithm, worked out by hand on a tiny case.

The network is 2-3-2 with hand-set weights and lr 0 (SGD leaves the weights as they are),
so that each step's activations, utilities, the units replaced and their new weights can
be written down in advance from ``GnT.gen_and_test`` (lop/algos/gnt.py of
github.com/shibhansh/loss-of-plasticity). Both engines must give these numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from plasticollapse.engines.fast import FastEngine
from plasticollapse.engines.reference import ReferenceEngine
from plasticollapse.models import MLP
from plasticollapse.remedies import RemedyContext
from plasticollapse.remedies.cbp import CHUNK, ContinualBackprop, UniformStream
from plasticollapse.runs.runtime import generator_for

W1 = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]  # h = relu(W1 x): (x0, x1, x0 + x1)
W2 = [[1.0, 2.0, 0.5], [1.0, -2.0, 0.5]]  # out_i = mean_r |W2[r, i]| = (1, 2, 0.5)
OUT = np.array([1.0, 2.0, 0.5])
IN = np.array([0.5, 0.5, 1.0])  # in_i = mean_k |W1[i, k]|
BOUND = math.sqrt(2) * math.sqrt(3 / 2)  # Kaiming-uniform bound of a fan-in of 2


def tiny(rate=0.5, decay=0.5, maturity=2, utility="contribution", seed=0):
    model = MLP(2, (3,), 2)
    with torch.no_grad():
        model.hidden_linears[0].weight.copy_(torch.tensor(W1))
        model.hidden_linears[0].bias.zero_()
        model.classifier.weight.copy_(torch.tensor(W2))
        model.classifier.bias.zero_()
    remedy = ContinualBackprop(rate, decay, maturity, utility)
    remedy.bind(model, RemedyContext(seed=seed, num_classes=2))
    return model, remedy


def train(engine_name, model, remedy, xs, labels=None):
    x = torch.tensor(xs, dtype=torch.float32)
    y = torch.zeros(len(xs), dtype=torch.long) if labels is None else torch.tensor(labels)
    if engine_name == "fast":
        engine = FastEngine(model, 0.0, [remedy])
    else:
        engine = ReferenceEngine(model, 0.0, 1, [remedy])
    return engine.train(x, y, torch.arange(len(xs)))


ENGINES = ["reference", "fast"]


@pytest.mark.parametrize("engine", ENGINES)
def test_contribution_utilities_maturity_and_the_units_replaced(engine):
    # The same input every step: h = (1, 2, 3), contributions y = out * |h| = (1, 4, 1.5).
    # decay 0.5: u_t = 0.5 u_{t-1} + 0.5 y, so u_3 = y (1 - 0.5^3) and u/c = y exactly.
    model, remedy = tiny()
    train(engine, model, remedy, [[1.0, 2.0]] * 2)
    # Step 2: ages 2, nobody older than the maturity threshold of 2: nothing replaced.
    torch.testing.assert_close(remedy.util[0], torch.tensor([0.75, 3.0, 1.125]))
    torch.testing.assert_close(remedy.mean[0], torch.tensor([0.75, 1.5, 2.25]))
    assert remedy.age[0].tolist() == [2, 2, 2] and int(remedy.replaced.sum()) == 0

    # Step 3: all three eligible, acc = 0.5 * 3 = 1.5 -> replace 1 (acc 0.5 left): the lowest
    # bias-corrected utility, u/c = (1, 4, 1.5): unit 0.
    stats = train(engine, model, remedy, [[1.0, 2.0]])
    assert stats.extra == {"cbp_units_replaced": 1}
    assert remedy.age[0].tolist() == [0, 3, 3]
    torch.testing.assert_close(remedy.util[0], torch.tensor([0.0, 3.5, 1.3125]))
    assert remedy.mean[0][0] == 0.0 and float(remedy.accumulated[0]) == 0.5
    v = torch.from_numpy(UniformStream(0).take(2))  # the stream's first numbers
    w1 = model.hidden_linears[0].weight.detach()
    torch.testing.assert_close(w1[0], torch.tensor(np.float32(BOUND)) * v, rtol=0, atol=0)
    assert bool((w1[0].abs() <= BOUND).all())
    torch.testing.assert_close(w1[1:], torch.tensor(W1[1:]))  # the others untouched
    assert model.hidden_linears[0].bias[0] == 0.0
    w2 = model.classifier.weight.detach()
    assert w2[:, 0].tolist() == [0.0, 0.0]  # the new unit starts silent downstream
    torch.testing.assert_close(w2[:, 1:], torch.tensor(W2)[:, 1:])

    # Step 4: unit 0 is young (age 1), units 1, 2 eligible: acc = 0.5 + 0.5 * 2 = 1.5 -> 1.
    # u/c of units 1 and 2: (0.5 * 3.5 + 0.5 * 4) / (1 - 0.5^4) = 4, (0.5 * 1.3125 + 0.75)
    # / 0.9375 = 1.5: unit 2 goes. Unit 0's utility is 0 (its outgoing weights are 0).
    train(engine, model, remedy, [[1.0, 2.0]])
    assert remedy.age[0].tolist() == [1, 4, 0]
    assert remedy.util[0].tolist() == [0.0, 3.75, 0.0]
    v = torch.from_numpy(UniformStream(0).take(4))[2:]  # the next two numbers
    torch.testing.assert_close(
        model.hidden_linears[0].weight.detach()[2], torch.tensor(np.float32(BOUND)) * v
    )
    # Step 5: only unit 1 (age 5) is mature; acc = 0.5 + 0.5 = 1 -> it is replaced, useful
    # as it is: the rate decides how many go, the utility only which.
    stats = train(engine, model, remedy, [[1.0, 2.0]])
    assert stats.extra == {"cbp_units_replaced": 1}
    assert remedy.age[0].tolist() == [2, 0, 1]
    assert remedy.replaced.tolist() == [3]


@pytest.mark.parametrize("engine", ENGINES)
def test_adaptable_contribution_is_the_deviation_from_the_bias_corrected_mean(engine):
    # Step 1: m = 0.5 h, c = 0.5, so m / c = h and |h - m / c| = 0: u = 0.
    # Step 2 (h = (2, 0, 2)): m = 0.5 (0.5, 1, 1.5) + 0.5 (2, 0, 2) = (1.25, 0.5, 1.75),
    # c = 0.75, m / c = (5/3, 2/3, 7/3), |h - m / c| = (1/3, 2/3, 1/3);
    # y = out * that / in = (2/3, 8/3, 1/6) and u = 0.5 y = (1/3, 4/3, 1/12).
    model, remedy = tiny(utility="adaptable_contribution", maturity=10)
    train(engine, model, remedy, [[1.0, 2.0]])
    assert remedy.util[0].abs().max() < 1e-7
    train(engine, model, remedy, [[2.0, 0.0]])
    torch.testing.assert_close(remedy.mean[0], torch.tensor([1.25, 0.5, 1.75]))
    expected = 0.5 * OUT * np.array([1 / 3, 2 / 3, 1 / 3]) / IN
    torch.testing.assert_close(remedy.util[0], torch.tensor(expected, dtype=torch.float32))
    assert int(remedy.replaced.sum()) == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_ties_go_to_the_lowest_index_and_without_eligible_units_nothing_accumulates(engine):
    # x = (0, 0): every unit is silent (h = 0), so every utility is exactly 0, a three-way
    # tie: the lowest index goes first. Before maturity the accumulator stays at 0.
    model, remedy = tiny(rate=0.7)
    train(engine, model, remedy, [[0.0, 0.0]] * 2)
    assert float(remedy.accumulated[0]) == 0.0
    train(engine, model, remedy, [[0.0, 0.0]])  # acc 0.7 * 3 = 2.1 -> 2 units: 0 and 1
    assert remedy.age[0].tolist() == [0, 0, 3]
    assert float(remedy.accumulated[0]) == pytest.approx(0.1)


def test_replacement_clears_the_momentum_of_the_replaced_weights():
    model, remedy = tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    x = torch.tensor([[1.0, 2.0]])
    for step in range(3):
        logits, hidden = model.forward_hidden(x)
        optimizer.zero_grad()
        logits.sum().backward()
        optimizer.step()
        for p in model.parameters():
            optimizer.state[p]["momentum_buffer"].fill_(1.0)
        remedy.after_step(model, optimizer, step, hidden)
    first, head = model.hidden_linears[0], model.classifier
    assert optimizer.state[first.weight]["momentum_buffer"][0].tolist() == [0.0, 0.0]
    assert optimizer.state[first.bias]["momentum_buffer"].tolist() == [0.0, 1.0, 1.0]
    assert optimizer.state[head.weight]["momentum_buffer"][:, 0].tolist() == [0.0, 0.0]
    assert optimizer.state[head.weight]["momentum_buffer"][:, 1:].eq(1.0).all()


def test_the_uniform_stream_is_seeded_chunked_and_resumable():
    stream = UniformStream(3)
    first = stream.take(10)
    u = torch.rand(CHUNK, generator=generator_for(3, "cbp", 0))
    np.testing.assert_array_equal(first, (2 * u[:10] - 1).numpy())
    assert first.min() >= -1 and first.max() < 1
    across = stream.take(CHUNK)  # crosses into chunk 1
    second = (2 * torch.rand(CHUNK, generator=generator_for(3, "cbp", 1)) - 1).numpy()
    np.testing.assert_array_equal(across[-10:], second[:10])
    resumed = UniformStream(3, consumed=stream.consumed)
    np.testing.assert_array_equal(resumed.take(5), stream.take(5))
    assert not np.array_equal(UniformStream(4).take(10), first)  # another seed


def test_state_dict_resumes_exactly_and_in_place():
    model, remedy = tiny(rate=0.3, maturity=1)
    train("fast", model, remedy, [[1.0, 2.0], [2.0, 1.0]] * 3)
    state = remedy.state_dict()
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    after = [train("fast", model, remedy, [[1.0, 0.5]] * 4).extra, model.state_dict()]

    fresh_model, fresh = tiny(rate=0.3, maturity=1)
    views = [t.data_ptr() for t in fresh.util]
    fresh_model.load_state_dict(snapshot)
    fresh.load_state_dict(state)
    assert [t.data_ptr() for t in fresh.util] == views  # the engine reads this memory
    again = [train("fast", fresh_model, fresh, [[1.0, 0.5]] * 4).extra, fresh_model.state_dict()]
    assert again[0] == after[0]
    for key, value in after[1].items():
        assert torch.equal(again[1][key], value), key


def test_bind_refuses_networks_it_cannot_run():
    remedy = ContinualBackprop(1e-4, 0.99, 100, "contribution")
    with pytest.raises(TypeError, match="plain ReLU MLP"):
        remedy.bind(MLP(4, (3,), 2, layer_norm=True), RemedyContext(seed=0, num_classes=2))
    with pytest.raises(ValueError, match="activations"):
        remedy.bind(MLP(4, (3,), 2), RemedyContext(seed=0, num_classes=2))
        remedy.after_step(MLP(4, (3,), 2), None, 0)
