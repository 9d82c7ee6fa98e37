"""measure_model on a small MLP and a small conv net, against metrics computed by hand."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from plasticollapse.metrics.collapse import collapse_metrics
from plasticollapse.metrics.measure import find_classifier, measure_model
from plasticollapse.metrics.plasticity import (
    capture_activations,
    dead_fraction,
    dormant_fraction,
    effective_rank,
    srank,
    stable_rank,
    weight_magnitude,
)


def small_mlp():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3)
    ).double()


class SmallConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.ReLU())
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.head(self.body(x)))


def data(shape, n=40, classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_mlp_matches_metrics_computed_by_hand():
    model = small_mlp()
    x, y = data((6,))
    x = x.double()
    model.train()
    got = measure_model(model, x, y, num_classes=3, batch_size=7, hidden_layers=True)
    assert model.training  # restored
    with torch.no_grad():
        h = model[:-1](x)
        logits = model(x)
    want = collapse_metrics(h, y, 3, weight=model[-1].weight, bias=model[-1].bias, logits=logits)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, nan_ok=True), key
    assert got["accuracy"] == pytest.approx(float((logits.argmax(1) == y).double().mean()))
    assert got["loss"] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-6)
    assert got["dormant_fraction"] == dormant_fraction(h)
    assert got["dead_fraction"] == dead_fraction(h)
    assert got["effective_rank"] == pytest.approx(effective_rank(h), rel=1e-9)
    assert got["srank"] == srank(h)
    assert got["stable_rank"] == pytest.approx(stable_rank(h), rel=1e-9)
    assert got["weight_magnitude"] == pytest.approx(weight_magnitude(model))
    layers = capture_activations(model, x)
    assert len(layers) == 2
    for k, a in enumerate(layers, start=1):
        assert got[f"dormant_fraction_layer{k}"] == dormant_fraction(a)
        assert got[f"dead_fraction_layer{k}"] == dead_fraction(a)
        assert got[f"effective_rank_layer{k}"] == pytest.approx(effective_rank(a), rel=1e-9)
        assert got[f"srank_layer{k}"] == srank(a)
    assert "dormant_fraction_layer3" not in got
    assert all(isinstance(v, float) for v in got.values())


def test_conv_net_uses_eval_mode_and_leaves_batchnorm_alone():
    torch.manual_seed(2)
    model = SmallConvNet()
    model.train()
    running = model.body[1].running_mean.clone()
    x, y = data((1, 8, 8))
    got = measure_model(model, x, y, num_classes=3, batch_size=16, hidden_layers=True)
    assert model.training and torch.equal(model.body[1].running_mean, running)
    model.eval()
    with torch.no_grad():
        h = model.head(model.body(x))
        logits = model(x)
    want = collapse_metrics(h, y, 3, weight=model.fc.weight, bias=model.fc.bias, logits=logits)
    assert got["nc1"] == pytest.approx(want["nc1"], rel=1e-6)
    assert got["nc4_agreement"] == want["nc4_agreement"]
    assert got["nc3_zhu"] == pytest.approx(want["nc3_zhu"], rel=1e-6)
    assert {"srank_layer1", "srank_layer2"} <= set(got) and "srank_layer3" not in got
    assert 0 <= got["dormant_fraction_layer1"] <= 1


def test_layer_names_the_classifier():
    model = SmallConvNet()
    x, y = data((1, 8, 8), n=12)
    assert find_classifier(model)[0] == "fc"
    # the input of head.1 (the flattened conv maps) as the "penultimate" feature
    got = measure_model(model, x, y, num_classes=3, layer="head.1")
    assert math.isfinite(got["nc1"]) and "nc3_papyan" not in got  # head.1 has 6 outputs, not 3
    with pytest.raises(ValueError, match="no module named"):
        measure_model(model, x, y, num_classes=3, layer="nope")


def test_model_without_linear_or_with_wrong_labels_raises():
    x, y = data((4,), n=10)
    with pytest.raises(ValueError, match="no nn.Linear"):
        measure_model(nn.Sequential(nn.ReLU()), x, y, num_classes=3)
    with pytest.raises(ValueError, match="as many labels"):
        measure_model(nn.Linear(4, 3), x, y[:5], num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        measure_model(nn.Linear(4, 3), x, y, num_classes=2)


class SometimesCopied(nn.Module):
    """An MLP whose features are the last ReLU's output object in the first batches and a
    copy of it later: the last layer's statistics must stop borrowing the features' gram."""

    def __init__(self):
        super().__init__()
        self.body = small_mlp()[:-1]
        self.head = small_mlp()[-1]
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        h = self.body(x)
        return self.head(h if self.calls <= 2 else h.clone())


def test_last_layer_borrows_the_features_gram_only_while_it_is_the_features():
    x, y = data((6,), n=50)
    x = x.double()
    model = SometimesCopied()
    got = measure_model(model, x, y, num_classes=3, batch_size=8, hidden_layers=True)
    with torch.no_grad():
        h = model.body(x)
    assert model.calls == 7
    assert got["effective_rank_layer2"] == pytest.approx(effective_rank(h), rel=1e-9)
    assert got["effective_rank"] == pytest.approx(effective_rank(h), rel=1e-9)
    assert got["srank_layer2"] == srank(h) == got["srank"]
    assert got["dormant_fraction_layer2"] == dormant_fraction(h) == got["dormant_fraction"]


def test_syrk_gram_equals_the_float64_product_over_batches():
    """metrics.gram.SyrkGram (dsyrk's upper triangle, mirrored) is sum_b a_b^T a_b in
    float64, whatever the batches' dtype and split; an empty gram says what to do."""
    from plasticollapse.metrics.gram import SyrkGram

    a = torch.randn(2500, 37, generator=torch.Generator().manual_seed(0))
    gram = SyrkGram()
    for part in a.split(1000):  # a partial last batch
        gram.update(part)
    want = a.double().T @ a.double()
    got = gram.gram()
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-9)
    assert torch.equal(got, got.T)  # exactly symmetric: the lower triangle is mirrored
    with pytest.raises(ValueError, match="update"):
        SyrkGram().gram()
    # a gram of earlier rows, computed elsewhere, is the start the rows add to
    start = a[:700].double().T @ a[:700].double()
    assert torch.equal(SyrkGram(start).gram(), start)
    resumed = SyrkGram(start)
    resumed.update(a[700:])
    torch.testing.assert_close(resumed.gram(), want, rtol=1e-12, atol=1e-9)


def test_one_thread_runs_cap_scipys_blas_pool():
    """set_threads(1) also caps SciPy's OpenBLAS (the measuring's dsyrk), which otherwise
    starts one thread per core in every worker process."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from plasticollapse.runs.runtime import set_threads

    before = torch.get_num_threads()
    blas_before = [
        p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"
    ]
    try:
        set_threads(1)
        pools = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        assert pools and all(p["num_threads"] == 1 for p in pools)
    finally:
        torch.set_num_threads(before)
        if blas_before:  # give later tests the pool they had
            threadpoolctl.threadpool_limits(limits=max(blas_before), user_api="blas")
