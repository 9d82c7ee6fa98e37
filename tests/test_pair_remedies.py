"""ReDo and Continual Backprop on named layer pairs: on the package's MLP they are the
existing remedies exactly; on conv nets, cases worked out by hand (1x1 kernels, so each
channel's activation is one number per position)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from plasticollapse.metrics.plasticity import dormant_units
from plasticollapse.models import MLP, ResNet18
from plasticollapse.remedies import (
    ContinualBackpropPairs,
    LayerPair,
    RemedyContext,
    find_layer_pairs,
    redo_reset_pairs,
)
from plasticollapse.remedies.cbp import ContinualBackprop, UniformStream
from plasticollapse.remedies.functional import fresh_like, redo_reset

# --------------------------------------------------------------------------- the package's MLP


def dead_mlp(layer_norm=False):
    torch.manual_seed(0)
    model = MLP(10, (12, 12), 4, layer_norm=layer_norm)
    with torch.no_grad():  # a zero incoming row and a negative bias: never fires
        for layer, units in {0: [1, 5], 1: [0, 7, 11]}.items():
            model.hidden_linears[layer].weight[units] = 0.0
            model.hidden_linears[layer].bias[units] = -1.0
    return model


def with_momentum(model):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    model(torch.randn(4, 10)).sum().backward()
    optimizer.step()
    for p in model.parameters():
        optimizer.state[p]["momentum_buffer"].fill_(1.0)
    return optimizer


def test_redo_pairs_is_redo_reset_on_the_mlp():
    inputs = torch.randn(300, 10)
    a, b = dead_mlp(), dead_mlp()
    opt_a, opt_b = with_momentum(a), with_momentum(b)
    counts_a = redo_reset(a, inputs, 0.05, torch.Generator().manual_seed(3), opt_a, batch_size=64)
    counts_b = redo_reset_pairs(b, None, inputs, 0.05, torch.Generator().manual_seed(3), opt_b)
    assert counts_a == counts_b and counts_a[0] >= 2 and counts_a[1] >= 3
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name
        buf_a, buf_b = opt_a.state[pa]["momentum_buffer"], opt_b.state[pb]["momentum_buffer"]
        assert torch.equal(buf_a, buf_b), name


@pytest.mark.parametrize("utility", ["contribution", "adaptable_contribution"])
def test_cbp_pairs_replaces_what_continual_backprop_replaces_on_the_mlp(utility):
    # 300 SGD steps with momentum from one initialisation and one data order; the remedy
    # object is fed forward_hidden's activations, the pair version hooks model(x).
    torch.manual_seed(1)
    model = MLP(6, (16, 16), 3)
    twin = copy.deepcopy(model)
    remedy = ContinualBackprop(0.02, 0.9, 20, utility)
    remedy.bind(model, RemedyContext(seed=4, num_classes=3))
    pairs = ContinualBackpropPairs(twin, None, 0.02, 0.9, 20, utility, seed=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    opt_twin = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9)
    data = torch.Generator().manual_seed(2)
    for step in range(300):
        x = torch.randn(8, 6, generator=data)
        y = torch.randint(0, 3, (8,), generator=data)
        logits, hidden = model.forward_hidden(x)
        opt.zero_grad()
        F.cross_entropy(logits, y).backward()
        opt.step()
        remedy.after_step(model, opt, step, hidden)
        opt_twin.zero_grad()
        F.cross_entropy(twin(x), y).backward()
        opt_twin.step()
        pairs.step(opt_twin)
    assert pairs.replaced.tolist() == remedy.replaced.tolist()
    assert int(remedy.replaced.sum()) > 20  # the comparison covers many replacements
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q), name
    for mine, theirs in zip(pairs.util, remedy.util, strict=True):
        assert torch.equal(mine, theirs)


# --------------------------------------------------------------------------- conv ReDo


def conv_bn_conv():
    """1 -> 3 channels (1x1, weights 1, 1, 2) -> BN -> ReLU -> 2 channels (1x1), float64.
    BN in eval mode with running mean 0.5, variance 1 - eps, so BN(z) = z - 0.5 + beta_c;
    channel 1's beta is -10: it never fires on inputs in [0, 1]."""
    model = nn.Sequential(
        nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 1)
    ).double()
    conv1, bn, _, conv2 = model
    with torch.no_grad():
        conv1.weight.copy_(torch.tensor([1.0, 1.0, 2.0]).view(3, 1, 1, 1))
        conv1.bias.zero_()
        bn.running_mean.fill_(0.5)
        bn.running_var.fill_(1.0 - bn.eps)
        bn.bias.copy_(torch.tensor([0.5, -10.0, 0.5]))
        conv2.weight.copy_(torch.arange(1.0, 7.0).view(2, 3, 1, 1))
    return model


def adam_with_state(model, x):
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0)
    model.train()
    model(x).sum().backward()
    optimizer.step()
    for state in optimizer.state.values():
        state["exp_avg"].fill_(1.0)
        state["exp_avg_sq"].fill_(1.0)
    model.eval()
    return optimizer


def test_redo_on_conv_bn_relu_conv_resets_exactly_the_dead_channel():
    x = torch.rand(16, 1, 3, 3, dtype=torch.float64)
    model = conv_bn_conv()
    optimizer = adam_with_state(model, x)
    model.eval()
    conv1, bn, _, conv2 = model
    # h_c = relu(w_c x + beta_c) with x >= 0: mean|h| = (E x + 0.5, 0, 2 E x + 0.5): channel 1
    # scores 0, the others >= 0.5 / mean > tau.
    assert find_layer_pairs(model) == [LayerPair("0", "3", "2", "1")]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out_before = model(x)
    counts = redo_reset_pairs(
        model, None, x, tau=0.1, generator=torch.Generator().manual_seed(7), optimizer=optimizer
    )
    assert counts == [1]
    fresh = fresh_like(conv_bn_conv(), torch.Generator().manual_seed(7))
    assert torch.equal(conv1.weight[1], fresh[0].weight[1])
    assert torch.equal(conv1.bias[1], fresh[0].bias[1])
    assert bn.weight[1] == 1.0 and bn.bias[1] == 0.0
    assert bn.running_mean[1] == 0.0 and bn.running_var[1] == 1.0
    assert torch.count_nonzero(conv2.weight[:, 1]) == 0
    keep = [0, 2]  # bitwise untouched
    for key in ("0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"):
        assert torch.equal(model.state_dict()[key][keep], before[key][keep]), key
    assert torch.equal(conv2.weight[:, keep], before["3.weight"][:, keep])
    assert torch.equal(conv2.bias, before["3.bias"])
    for p, index in (
        (conv1.weight, 1),
        (bn.weight, 1),
        (bn.bias, 1),
        (conv2.weight, (slice(None), 1)),
    ):
        for key in ("exp_avg", "exp_avg_sq"):
            state = optimizer.state[p][key]
            assert torch.count_nonzero(state[index]) == 0
            assert int((state == 1.0).sum()) == state.numel() - state[index].numel()
    # The dead channel gave 0 and its new outgoing weights are 0: the output is the same.
    assert torch.equal(model(x), out_before)


def conv_flatten_linear():
    """1 -> 3 channels (1x1, weights 1, 2, 3) -> ReLU -> flatten (2x2: P = 4) -> Linear(12, 2);
    column j's weights are (j + 1, -(j + 1)), so its mean |outgoing weight| is j + 1."""
    model = nn.Sequential(nn.Conv2d(1, 3, 1), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))
    conv, _, _, linear = model
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1, 1))
        conv.bias.zero_()
        cols = torch.arange(1.0, 13.0)
        linear.weight.copy_(torch.stack([cols, -cols]))
        linear.bias.zero_()
    return model


def test_redo_on_conv_flatten_linear_zeroes_the_channels_block_of_columns():
    model = conv_flatten_linear()
    with torch.no_grad():
        model[0].bias[2] = -100.0  # channel 2 never fires on inputs in [0, 1]
    x = torch.rand(8, 1, 2, 2)
    before = [p.clone() for p in model.parameters()]
    out_before = model(x)
    assert find_layer_pairs(model) == [LayerPair("0", "3", "2")]  # read after the flatten
    assert redo_reset_pairs(
        model, None, x, tau=0.1, generator=torch.Generator().manual_seed(0)
    ) == [2 - 1]
    weight = model[3].weight
    assert torch.count_nonzero(weight[:, 8:12]) == 0  # channel 2's columns 2*4 .. 2*4 + 3
    assert torch.equal(weight[:, :8], before[2][:, :8])
    assert torch.equal(model[0].weight[:2], before[0][:2]) and model[0].bias[2] != -100.0
    assert torch.equal(model(x), out_before)


# --------------------------------------------------------------------------- conv CBP


def test_cbp_conv_to_linear_utility_is_per_column_then_per_channel():
    # x = 1 everywhere: h_c = c + 1 at its 4 positions (columns 4c .. 4c + 3), so
    # y_c = mean_p out_{4c+p} |h_c| = (c + 1) (4c + 2.5) = (2.5, 13, 31.5); decay 0.5: u = y/2.
    # Maturity 0, rate 0.5: 3 eligible, acc 1.5 -> one unit, the lowest u / c: channel 0.
    model = conv_flatten_linear()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    cbp = ContinualBackpropPairs(model, None, 0.5, 0.5, 0, "contribution", init="lop", seed=3)
    x = torch.ones(1, 1, 2, 2)
    optimizer.zero_grad()
    model(x).sum().backward()
    optimizer.step()
    for state in optimizer.state.values():
        state["momentum_buffer"].fill_(1.0)
    assert cbp.step(optimizer) == [1]
    torch.testing.assert_close(cbp.util[0], torch.tensor([0.0, 6.5, 15.75]))
    v = torch.from_numpy(UniformStream(3).take(1))  # lop's conv bound: sqrt(1 / fan_in) = 1
    assert torch.equal(model[0].weight[0].flatten(), v) and model[0].bias[0] == 0.0
    assert torch.count_nonzero(model[3].weight[:, :4]) == 0
    assert torch.equal(model[3].weight[0, 4:], torch.arange(5.0, 13.0))
    momentum = optimizer.state[model[3].weight]["momentum_buffer"]
    assert torch.count_nonzero(momentum[:, :4]) == 0 and bool(momentum[:, 4:].eq(1).all())
    assert optimizer.state[model[0].weight]["momentum_buffer"].flatten().tolist() == [0, 1, 1]
    assert cbp.age[0].tolist() == [0, 1, 1] and cbp.replaced.tolist() == [1]
    cbp.remove()


def test_cbp_conv_bn_conv_utility_reset_and_adam_state():
    # Training-mode BN of one sample: BN(z)_c = beta_c + 0 (z has no spread over the batch
    # when x is constant), so h = relu(beta) = (0.5, 0, 0.5) at every position.
    # out_c = mean |conv2.weight[:, c]| = (2.5, 3.5, 4.5); y = out * h = (1.25, 0, 2.25).
    model = conv_bn_conv().float()
    x = torch.ones(1, 1, 3, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0)
    cbp = ContinualBackpropPairs(model, None, 1 / 3, 0.5, 0, "contribution", seed=0)
    with torch.no_grad():
        model[1].running_mean.fill_(0.3)
    model.train()
    optimizer.zero_grad()
    model(x).sum().backward()
    optimizer.step()
    for state in optimizer.state.values():
        state["exp_avg"].fill_(1.0)
        state["exp_avg_sq"].fill_(1.0)
    assert cbp.step(optimizer) == [1]  # acc 1/3 * 3 = 1: channel 1 (utility 0)
    torch.testing.assert_close(cbp.util[0], torch.tensor([0.625, 0.0, 1.125]))
    conv1, bn, _, conv2 = model
    bound = np.float32(math.sqrt(2) * math.sqrt(3 / 1))  # kaiming: gain sqrt(3 / fan_in)
    v = torch.from_numpy(UniformStream(0).take(1))
    assert torch.equal(conv1.weight[1].flatten(), torch.tensor(bound) * v)
    assert bn.weight[1] == 1.0 and bn.bias[1] == 0.0
    assert bn.running_mean[1] == 0.0 and bn.running_var[1] == 1.0
    assert bn.bias[0] == 0.5 and bn.running_mean[0] != 0.0  # the others untouched
    assert torch.count_nonzero(conv2.weight[:, 1]) == 0
    for p in (conv1.weight, conv1.bias, bn.weight, bn.bias):
        assert optimizer.state[p]["exp_avg"].flatten().tolist() == [1, 0, 1]
        assert optimizer.state[p]["exp_avg_sq"].flatten().tolist() == [1, 0, 1]
    assert optimizer.state[conv2.weight]["exp_avg"][:, 1].abs().sum() == 0
    assert float(optimizer.state[conv1.weight]["step"]) == 1.0  # torch's scalar step: left


# --------------------------------------------------------------------------- ResNet-18 and errors


def test_resnet18_pairs_redo_and_cbp_run_and_leave_the_output_where_they_should():
    torch.manual_seed(0)
    model = ResNet18(num_classes=3, in_channels=1, width=4, maxpool=False)
    pairs = find_layer_pairs(model)
    assert len(pairs) == 8 and pairs[0] == LayerPair(
        "stages.0.conv1", "stages.0.conv2", "stages.0.relu", "stages.0.bn1"
    )
    with torch.no_grad():
        model.stages[0].bn1.bias[[1, 2]] = -100.0  # two dead inner channels
    x = torch.randn(6, 1, 8, 8)
    model.eval()
    out = model(x)
    counts = redo_reset_pairs(model, pairs, x, tau=0.0, generator=torch.Generator().manual_seed(0))
    assert counts[0] == 2
    assert torch.count_nonzero(model.stages[0].conv2.weight[:, [1, 2]]) == 0
    assert bool((model.stages[0].bn1.bias[[1, 2]] == 0).all())
    torch.testing.assert_close(model(x), out, rtol=0, atol=0)
    cbp = ContinualBackpropPairs(model, pairs, 0.5, 0.9, 1, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(x), torch.zeros(6, dtype=torch.long)).backward()
        optimizer.step()
        cbp.step(optimizer)
    # Maturity 1: at step 2 all C units are eligible (0.5 C go), at step 3 the C / 2 not
    # replaced (C / 4 go): 3 C / 4 of the inner widths C = 4, 4, 8, 8, 16, 16, 32, 32.
    assert cbp.replaced.tolist() == [3, 3, 6, 6, 12, 12, 24, 24]
    # The blocks' relu runs twice per block; call 0 is read, whichever entry point runs.
    model.features(x[:2])
    inner = F.relu(model.stages[0].bn1(model.stages[0].conv1(model.stem(x[:2]))))
    assert torch.equal(cbp.recorder.outputs[0], inner)
    cbp.remove()


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.act, self.b = nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(self.act(self.a(x)))


def test_other_models_take_explicit_pairs_and_wrong_pairs_are_named():
    model = Custom()
    with pytest.raises(TypeError, match="LayerPair"):
        find_layer_pairs(model)
    assert redo_reset_pairs(model, [LayerPair("a", "b", "act")], torch.randn(5, 3), 0.0) == [0]
    with pytest.raises(ValueError, match="not a module"):
        redo_reset_pairs(model, [LayerPair("a", "c", "act")], torch.randn(5, 3))
    with pytest.raises(ValueError, match="not a pair"):
        redo_reset_pairs(model, [LayerPair("b", "a", "act")], torch.randn(5, 3))
    cbp = ContinualBackpropPairs(model, [LayerPair("a", "b", "act")])
    with pytest.raises(RuntimeError, match="after a training forward"):
        cbp.step()
    with torch.no_grad():  # an evaluation under no_grad is not recorded
        model(torch.randn(2, 3))
    with pytest.raises(RuntimeError, match="after a training forward"):
        cbp.step()


# --------------------------------------------------------------------------- does it help


def test_redo_revives_dead_channels_and_training_goes_further():
    # 12 of 16 conv channels dead (bias -100): plain GD never revives them (zero gradient
    # through ReLU); after ReDo they are fresh and the same 40 full-batch steps fit better.
    from plasticollapse.data import load_dataset

    data = load_dataset("digits")
    x, y = data.flat("train")
    x, y = x[:512].reshape(-1, 1, 8, 8), y[:512]

    def trained(redo: bool):
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 16, 10),
        )
        with torch.no_grad():
            model[0].weight[:4].abs_()  # 4 live channels: non-negative filters on x >= 0
            model[0].bias[4:] = -100.0
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        if redo:
            redo_reset_pairs(model, None, x, 0.1, torch.Generator().manual_seed(0), optimizer)
        dormant = float(dormant_units(model[:2](x), 0.1).double().mean())
        for _ in range(40):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            return dormant, float(F.cross_entropy(model(x), y))

    (dormant_plain, loss_plain), (dormant_redo, loss_redo) = trained(False), trained(True)
    assert dormant_plain == 0.75 and dormant_redo < 0.4
    assert loss_redo < 0.8 * loss_plain


def convgnt_utility(util, mean, age, current, nxt, features, decay, util_type, positions):
    """``ConvGnT.update_utility`` of lop/algos/convGnT.py, transcribed (float64), for a
    Conv2d producer; ``features`` as convGnT gets them (N x C x H x W, or flattened N x CP
    before a Linear). Returns the new (util, mean, bias-corrected util)."""
    util = util * decay
    correction = 1 - decay**age
    if isinstance(nxt, nn.Linear):
        out_mag = nxt.weight.abs().mean(dim=0)
        mean = mean * decay + (1 - decay) * features.mean(dim=0).view(-1, positions).mean(dim=1)
    else:
        out_mag = nxt.weight.abs().mean(dim=(0, 2, 3))
        mean = mean * decay + (1 - decay) * features.mean(dim=(0, 2, 3))
    in_mag = current.weight.abs().mean(dim=(1, 2, 3))
    centre = 0
    if util_type == "adaptable_contribution":
        centre = mean / correction
        centre = (
            centre.view(1, -1, 1, 1)
            if isinstance(nxt, nn.Conv2d)
            else centre.repeat_interleave(positions).view(1, -1)
        )
    if isinstance(nxt, nn.Linear):
        new = (out_mag * (features - centre).abs().mean(dim=0)).view(-1, positions).mean(dim=1)
    else:
        new = out_mag * (features - centre).abs().mean(dim=(0, 2, 3))
    if util_type == "adaptable_contribution":
        new = new / in_mag
    util = util + (1 - decay) * new
    return util, mean, util / correction


@pytest.mark.parametrize("utility", ["contribution", "adaptable_contribution"])
def test_cbp_conv_utilities_follow_convgnt_on_random_steps(utility):
    # 3x3 kernels, a pooling before the flatten; 5 steps of random data and weights moved by
    # SGD; no unit is old enough to be replaced, so the utilities can be followed exactly.
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 3, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3 * 2 * 2, 5),
    ).double()
    cbp = ContinualBackpropPairs(model, None, 0.1, 0.8, 100, utility)
    assert [p.activation for p in find_layer_pairs(model)] == ["1", "5"]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ref = [(torch.zeros(4, dtype=torch.float64),) * 2, (torch.zeros(3, dtype=torch.float64),) * 2]
    for step in range(1, 6):
        x = torch.randn(6, 2, 4, 4, dtype=torch.float64)
        h1 = model[1](model[0](x))
        features = [h1, model[5](model[4](model[3](model[2](h1))))]
        optimizer.zero_grad()
        model(x).sum().backward()
        optimizer.step()
        assert cbp.step(optimizer) == [0, 0]
        for l, (current, nxt) in enumerate(((model[0], model[2]), (model[2], model[6]))):
            util, mean, corrected = convgnt_utility(
                *ref[l], step, current, nxt, features[l].detach(), 0.8, utility, 4
            )
            ref[l] = (util, mean)
            torch.testing.assert_close(cbp.util[l].double(), util, rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(cbp.mean[l].double(), mean, rtol=1e-5, atol=1e-7)


def test_a_linear_on_tokens_has_its_units_in_the_last_dimension():
    # (N, T, 3) inputs: unit 2 of the first Linear never fires; its score averages over N and T.
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.abs_()
        model[0].bias.fill_(0.1)
        model[0].bias[2] = -100.0
    x = torch.rand(5, 7, 3)
    out = model(x)
    assert redo_reset_pairs(model, None, x, 0.1, torch.Generator().manual_seed(0)) == [1]
    assert torch.count_nonzero(model[2].weight[:, 2]) == 0 and model[0].bias[2] != -100.0
    assert torch.equal(model(x), out)
    with pytest.raises(ValueError, match=r"not \(\.\.\., 4\)"):
        redo_reset_pairs(model, [LayerPair("0", "2", "2")], x)  # the consumer's output


def test_cbp_pairs_state_dict_resumes_exactly():
    def setup():
        torch.manual_seed(0)
        model = conv_flatten_linear()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        return model, optimizer, ContinualBackpropPairs(model, None, 0.3, 0.9, 2, seed=5)

    def train(model, optimizer, cbp, steps, data):
        for _ in range(steps):
            optimizer.zero_grad()
            model(torch.rand(4, 1, 2, 2, generator=data)).square().sum().backward()
            optimizer.step()
            cbp.step(optimizer)

    model, optimizer, cbp = setup()
    train(model, optimizer, cbp, 6, torch.Generator().manual_seed(1))
    saved = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()))
    state = cbp.state_dict()
    train(model, optimizer, cbp, 6, torch.Generator().manual_seed(2))
    again, opt_again, resumed = setup()
    again.load_state_dict(saved[0])
    opt_again.load_state_dict(saved[1])
    resumed.load_state_dict(state)
    train(again, opt_again, resumed, 6, torch.Generator().manual_seed(2))
    assert resumed.replaced.tolist() == cbp.replaced.tolist() and int(cbp.replaced.sum()) > 2
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
