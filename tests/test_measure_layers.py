"""measure_model on a user's model: named layers of any activation, feature norm, BatchNorm
with batch statistics, DataLoader input, and the public plasticity functions."""

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import plasticollapse
from plasticollapse import feature_norm, measure_model
from plasticollapse.metrics.collapse import collapse_metrics
from plasticollapse.metrics.plasticity import capture_activations, dormant_fraction, srank


class GeluNet(nn.Module):
    """Conv -> BatchNorm -> GELU -> Dropout, then LeakyReLU twice through one module."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.GELU(), nn.Dropout(0.5)
        )
        self.fc1 = nn.Linear(4 * 4 * 4, 6)
        self.fc2 = nn.Linear(6, 6)
        self.act = nn.LeakyReLU(0.1)
        self.classifier = nn.Linear(6, 3)

    def forward(self, x):
        a = F.max_pool2d(self.body(x), 2).flatten(1)
        return self.classifier(self.act(self.fc2(self.act(self.fc1(a)))))


class FunctionalNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(5, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.act = nn.Tanh()

    def forward(self, x):
        return self.out(self.act(F.gelu(self.fc2(F.relu(self.fc1(x))))))


def gelu_net() -> nn.Module:
    torch.manual_seed(0)
    model = GeluNet()
    with torch.no_grad():  # running statistics unlike any one batch's
        for _ in range(3):
            model(torch.randn(16, 1, 8, 8) * 2 + 1)
    return model.eval()


def data(shape, n=40, classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_feature_norm_is_the_mean_l2_norm_of_each_samples_activations():
    assert feature_norm(torch.tensor([[3.0, 4.0], [0.0, 0.0]])) == pytest.approx(2.5)
    # conv: the whole C x H x W activation of a sample is its vector (norm 2, not 1)
    assert feature_norm(torch.ones(3, 1, 2, 2)) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="samples > 0"):
        feature_norm(torch.ones(4))


def test_layers_are_named_modules_of_any_activation_type_with_their_values():
    model = gelu_net()
    x, y = data((1, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every activation is a module: nothing to warn about
        got = measure_model(model, x, y, num_classes=3, batch_size=9, layers="activations")
    gelu, leaky_first, leaky_second = capture_activations(model, x, modules=["body.2", "act"])
    for suffix, a in (("body.2", gelu), ("act", leaky_first), ("act_call2", leaky_second)):
        assert got[f"dormant_fraction_{suffix}"] == pytest.approx(dormant_fraction(a)), suffix
        assert got[f"srank_{suffix}"] == srank(a), suffix
        assert got[f"feature_norm_{suffix}"] == pytest.approx(feature_norm(a), rel=1e-6)
    # the penultimate features are the second LeakyReLU call's output: same norm
    assert got["feature_norm"] == pytest.approx(feature_norm(leaky_second), rel=1e-6)
    assert not any(k.endswith("_layer1") for k in got)  # numbered keys only on request
    by_type = measure_model(model, x, y, num_classes=3, layers=[nn.GELU])
    assert "dormant_fraction_body.2" in by_type and "dormant_fraction_act" not in by_type


def test_dormant_units_of_a_gelu_layer_are_found_through_their_magnitude():
    model = gelu_net()
    x, y = data((1, 8, 8))
    with torch.no_grad():
        model.fc1.bias[:2] = -50.0  # GELU(-50) and LeakyReLU(-50) ~ 0 relative to the rest
        model.fc1.bias[2:] = 5.0
    model.act = nn.GELU()
    got = measure_model(model, x, y, num_classes=3, layers=["act"])
    assert got["dormant_fraction_act"] == pytest.approx(2 / 6)


def test_functional_activations_are_named_in_a_warning_with_what_to_do():
    torch.manual_seed(0)
    x, y = data((5,))
    with pytest.warns(UserWarning) as record:
        got = measure_model(FunctionalNet(), x, y, num_classes=3, layers="activations")
    (message,) = [str(w.message) for w in record]
    assert "relu in the model itself (1x)" in message and "gelu in the model itself" in message
    assert "nn.ReLU()" in message and "layers measured: act" in message
    assert "dormant_fraction_act" in got  # the Tanh module is still measured
    with pytest.warns(UserWarning, match=r"measures nn.ReLU modules only, not GELU 'body.2'"):
        measure_model(gelu_net(), *data((1, 8, 8)), num_classes=3, hidden_layers=True)


def test_bad_layer_choices_say_what_to_pass():
    model = gelu_net()
    x, y = data((1, 8, 8))
    with pytest.raises(ValueError, match="no module named 'nope'"):
        measure_model(model, x, y, num_classes=3, layers=["nope"])
    with pytest.raises(ValueError, match="no module of type ReLU"):
        measure_model(model, x, y, num_classes=3, layers=[nn.ReLU])
    with pytest.raises(ValueError, match="either hidden_layers=True"):
        measure_model(model, x, y, num_classes=3, hidden_layers=True, layers="activations")


def test_batch_statistics_measure_each_batch_as_a_train_mode_copy_and_leave_buffers():
    model = gelu_net()
    x, y = data((1, 8, 8))
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    got = measure_model(model, x, y, num_classes=3, batch_size=8, batchnorm="batch")
    twin = copy.deepcopy(model).train()
    twin.body[3].eval()  # dropout stays off: only BatchNorm changes its statistics
    features, logits = [], []
    twin.classifier.register_forward_pre_hook(lambda _m, a: features.append(a[0]))
    with torch.no_grad():
        for start in range(0, len(x), 8):
            logits.append(twin(x[start : start + 8]))
    h = torch.cat(features)
    want = collapse_metrics(h, y, 3, twin.classifier.weight, twin.classifier.bias)
    assert got["nc1"] == pytest.approx(want["nc1"], rel=1e-6)
    assert got["accuracy"] == (torch.cat(logits).argmax(1) == y).double().mean().item()
    assert got["nc1"] != pytest.approx(measure_model(model, x, y, 3)["nc1"], rel=1e-3)
    for key, value in buffers.items():  # running statistics neither used nor updated
        assert torch.equal(model.state_dict()[key], value), key
    with pytest.raises(ValueError, match="batchnorm must be one of"):
        measure_model(model, x, y, num_classes=3, batchnorm="train")


def test_a_dataloader_gives_the_same_metrics_as_the_tensors():
    model = gelu_net()
    x, y = data((1, 8, 8), n=45)
    want = measure_model(model, x, y, num_classes=3, batch_size=20, layers="activations")
    loader = DataLoader(TensorDataset(x, y), batch_size=10)  # joined into 20, 20, 5 rows
    got = measure_model(model, loader, num_classes=3, batch_size=20, layers="activations")
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, nan_ok=True), key
    batches = ((x[i : i + 10], y[i : i + 10]) for i in range(0, 45, 10))  # any iterable
    assert measure_model(model, batches, num_classes=3)["nc1"] == pytest.approx(want["nc1"])
    # with batch statistics the loader's own batches are kept: they set the statistics
    by_batch = measure_model(model, x, y, num_classes=3, batch_size=10, batchnorm="batch")
    streamed = measure_model(model, loader, num_classes=3, batch_size=20, batchnorm="batch")
    assert streamed["nc1"] == pytest.approx(by_batch["nc1"], rel=1e-9)


def test_bad_data_gets_a_message_that_says_what_to_pass():
    model = gelu_net()
    x, y = data((1, 8, 8))
    loader = DataLoader(TensorDataset(x, y), batch_size=10)
    with pytest.raises(ValueError, match="labels is None"):
        measure_model(model, x, num_classes=3)
    with pytest.raises(ValueError, match="pass labels=None"):
        measure_model(model, loader, y, num_classes=3)
    with pytest.raises(ValueError, match="each batch must be"):
        measure_model(model, DataLoader(x, batch_size=10), num_classes=3)
    with pytest.raises(ValueError, match="no batches"):
        measure_model(model, [], num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        measure_model(model, x, y)


def test_the_plasticity_tools_are_public_at_the_top_level():
    from plasticollapse.metrics import plasticity, trainability

    assert plasticollapse.drift is plasticity.drift
    assert plasticollapse.grad_norm is plasticity.grad_norm
    assert plasticollapse.feature_norm is plasticity.feature_norm
    assert plasticollapse.plasticity_score is trainability.plasticity_score
    model = nn.Linear(3, 2)
    start = copy.deepcopy(model)
    with torch.no_grad():
        model.weight[0, :] += 1.0  # three entries move by 1: distance sqrt(3)
    assert plasticollapse.drift(model, start) == pytest.approx(math.sqrt(3))
    model(torch.ones(1, 3)).sum().backward()  # d/dW = x = 1 per entry, d/db = 1
    assert plasticollapse.grad_norm(model) == pytest.approx(math.sqrt(6 + 2))
    x, y = data((3,), n=16, classes=2)
    assert plasticollapse.plasticity_score(model, x, y, steps=20, lr=0.1)["plasticity_score"] > 0


def test_layer_collapse_of_a_named_layer_is_the_collapse_of_its_output():
    model = gelu_net()
    x, y = data((1, 8, 8))
    got = measure_model(model, x, y, 3, batch_size=16, layers=["body.2"], layer_collapse=True)
    (gelu,) = capture_activations(model, x, modules=["body.2"])
    with torch.no_grad():
        logits = model.eval()(x)
    want = collapse_metrics(gelu.flatten(2).mean(2), y, 3, logits=logits)  # channels
    for key in ("nc1", "cdnv", "nc4_agreement"):
        assert got[f"{key}_body.2"] == pytest.approx(want[key], rel=1e-5), key
