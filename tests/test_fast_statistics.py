"""The one-sweep measurement of the plain MLP (engines/fast_statistics.py) against the
streaming accumulators' path and a float64 reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from synthetic import mnist_like

from plasticollapse.engines import fast_statistics
from plasticollapse.engines.fast import FastEngine
from plasticollapse.metrics.measure import measure_model
from plasticollapse.models import MLP
from plasticollapse.studies.permuted import run as permuted

#: Counts of samples (accuracy, NC4) may differ by a near-tie that rounding decides.
COUNTED = {"accuracy", "nc4_agreement", "nc4_mismatch"}


def test_block_gram_is_within_its_float32_bound():
    """Every entry of the float32-block gram, summed in float64, lies within
    GRAM_RTOL sum_r |a_ri| |a_rj| of the float64 gram, for features with means ~30x their
    spread (where float32 squares lose the most) and for signed shifted rows; and float32
    rounding is really there (the check could not pass on a float64 product alone)."""
    g = torch.Generator().manual_seed(0)
    for a in (
        3 + 0.1 * torch.randn(1000, 40, generator=g),
        torch.randn(1000, 40, generator=g) * torch.rand(40, generator=g),
    ):
        a32 = a.float().numpy()
        gram = np.zeros((40, 40))
        for start in range(0, len(a32), fast_statistics.BLOCK):
            fast_statistics.add_block_gram(gram, a32[start : start + fast_statistics.BLOCK])
        exact = a32.astype(np.float64).T @ a32.astype(np.float64)
        magnitude = np.abs(a32.astype(np.float64)).T @ np.abs(a32.astype(np.float64))
        error = np.abs(gram - exact)
        assert (error <= fast_statistics.GRAM_RTOL * magnitude).all()
        assert error.max() > 0


def _trained(dim: int, hidden, n: int, density: float, seed: int, outputs: int = 10):
    x, y = mnist_like(n, dim=dim, density=density, seed=seed)
    torch.manual_seed(seed)
    model = MLP(dim, hidden, outputs)
    perm = torch.randperm(dim, generator=torch.Generator().manual_seed(seed + 1))
    FastEngine(model, 0.05).train(x, y, torch.arange(n), columns=perm)
    return model, x, y, perm


@pytest.mark.parametrize("density", [0.2, 0.6], ids=["sparse", "dense"])
def test_one_sweep_equals_float64_measure_model(density):
    """Every key and value of measure_model(hidden_layers=True) on a float64 copy of the
    network and of x[:, P] (the brute-force reference: float64 throughout), from the
    float32 sweep, to a tolerance from float32 rounding: the forward's relative error
    (fan-in + depth) u plus the grams' GRAM_RTOL, doubled. 1,000 rows: the last block
    partial; 12 classes of which 10 are present."""
    n = 1000
    model, x, y, perm = _trained(64, (32, 24), n, density, seed=3, outputs=12)
    reference = permuted.reading_unpermuted(model, perm).double()
    want = measure_model(reference, x.double(), y, 12, hidden_layers=True)
    got = fast_statistics.mlp_metrics(model, x, y, 12, perm)
    assert got is not None and list(got) == list(want)  # the same keys, in the same order
    rtol = 2 * ((64 + 3) * 2.0**-24 + fast_statistics.GRAM_RTOL)
    assert want["num_classes_absent"] == 2
    for key, value in want.items():
        atol = 2 / n if key in COUNTED else 1e-9
        assert got[key] == pytest.approx(value, rel=rtol, abs=atol, nan_ok=True), key


def test_the_study_measures_through_the_sweep_as_measure_model_did():
    """permuted.measure's rows (the sweep) against measure_model's float32 path with the
    sparse first layer (what the study ran before), at a 784-input paper-sized layer."""
    from plasticollapse.engines import fast_measure
    from plasticollapse.metrics.measure import mlp_forward

    model, x, y, perm = _trained(784, (100, 100, 100), 700, 0.19, seed=5)
    forward = mlp_forward(model, x, fast_measure.first_layer_outputs(model, x, perm))
    want = measure_model(model, x, y, 10, hidden_layers=True, forward=forward)
    got = permuted.measure(model, x, y, 10, perm)
    renamed = {"accuracy": "eval_accuracy", "loss": "eval_loss"}
    assert list(got) == [renamed.get(k, k) for k in want]
    for key, value in want.items():
        atol = 2 / len(y) if key in COUNTED else 1e-9
        assert got[renamed.get(key, key)] == pytest.approx(value, rel=1e-5, abs=atol), key


def test_a_diverged_network_is_left_to_measure_model_which_says_so():
    """A NaN weight: the sweep returns None, and permuted.measure raises measure_model's
    error naming the NaN values, as before."""
    model, x, y, perm = _trained(64, (16,), 300, 0.2, seed=7)
    with torch.no_grad():
        model.hidden_linears[0].weight[0, 0] = math.nan
    assert fast_statistics.mlp_metrics(model, x, y, 10, perm) is None
    with pytest.raises(ValueError, match="NaN"):
        permuted.measure(model, x, y, 10, perm)


@pytest.mark.parametrize("density", [0.2, 0.6], ids=["sparse", "dense"])
def test_threads_sweep_the_chunks_to_the_same_metrics(density):
    """Over 2 chunks and a partial third (2 CHUNK + 300 rows), the sweep on 1, 2 and 3
    threads returns the same dict bit for bit (the chunks' sums are added in chunk order),
    and that dict is the float64 reference's within the float32 tolerance of
    test_one_sweep_equals_float64_measure_model: the chunks' sums are the whole set's."""
    n = 2 * fast_statistics.CHUNK + 300
    model, x, y, perm = _trained(48, (24, 16), n, density, seed=11)
    results = [fast_statistics.mlp_metrics(model, x, y, 10, perm, threads=t) for t in (1, 2, 3)]
    assert results[0] is not None
    assert results[1] == results[0] and results[2] == results[0]
    reference = permuted.reading_unpermuted(model, perm).double()
    want = measure_model(reference, x.double(), y, 10, hidden_layers=True)
    rtol = 2 * ((48 + 3) * 2.0**-24 + fast_statistics.GRAM_RTOL)
    for key, value in want.items():
        atol = 2 / n if key in COUNTED else 1e-9
        assert results[0][key] == pytest.approx(value, rel=rtol, abs=atol, nan_ok=True), key


def test_two_threads_sweep_two_chunks_side_by_side_and_keep_their_order():
    """Each of the two chunks waits at a barrier for the other: the call returns only if
    two threads ran them at once; the results come back in chunk order. On one thread the
    chunks run in turn, in order."""
    import threading

    n = 2 * fast_statistics.CHUNK
    barrier = threading.Barrier(2, timeout=10)

    def meet(lo: int, hi: int) -> tuple[int, int]:
        barrier.wait()
        return lo, hi

    chunks = [(0, fast_statistics.CHUNK), (fast_statistics.CHUNK, n)]
    assert fast_statistics._map_chunks(meet, n, threads=2) == chunks
    assert fast_statistics._map_chunks(lambda lo, hi: (lo, hi), n, threads=1) == chunks
    with pytest.raises(ValueError, match="threads must be >= 1"):
        fast_statistics.mlp_metrics(*_trained(48, (16,), 50, 0.2, seed=1)[:3], 10, threads=0)


def test_the_sweep_takes_the_callers_torch_threads(monkeypatch):
    """threads=None: as many sweeping threads as torch's count in the calling thread (a
    run's ``threads`` setting), and one inside a one_thread block (a caller that pinned it)."""
    from plasticollapse.metrics.threads import one_thread

    model, x, y, perm = _trained(48, (16,), 300, 0.2, seed=2)
    seen: list[int] = []
    real = fast_statistics._map_chunks

    def spy(fn, n, threads):
        seen.append(threads)
        return real(fn, n, threads)

    monkeypatch.setattr(fast_statistics, "_map_chunks", spy)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        fast_statistics.mlp_metrics(model, x, y, 10, perm)
        with one_thread():
            fast_statistics.mlp_metrics(model, x, y, 10, perm)
    finally:
        torch.set_num_threads(before)
    assert seen == [3, 3, 1, 1]  # the first sweep and the second, each call


@pytest.mark.parametrize("density", [0.2, 0.6], ids=["sparse", "dense"])
def test_layer_collapse_equals_float64_measure_model(density):
    """With layer_collapse, every key of measure_model(hidden_layers=True,
    layer_collapse=True) on the float64 twin, in its order: each hidden layer's NC keys and
    NC4 against the network's prediction from the second sweep, and its unit metrics from
    that sweep's uncentred gram; over two chunks and a partial third, the same on 1 and 2
    threads. The last hidden layer's keys are the features' own."""
    n = 2 * fast_statistics.CHUNK + 300
    model, x, y, perm = _trained(48, (24, 16, 12), n, density, seed=13)
    reference = permuted.reading_unpermuted(model, perm).double()
    want = measure_model(reference, x.double(), y, 10, hidden_layers=True, layer_collapse=True)
    got = fast_statistics.mlp_metrics(model, x, y, 10, perm, layer_collapse=True)
    assert got is not None and list(got) == list(want)
    assert fast_statistics.mlp_metrics(model, x, y, 10, perm, threads=2, layer_collapse=True) == got
    rtol = 2 * ((48 + 4) * 2.0**-24 + fast_statistics.GRAM_RTOL)
    for key, value in want.items():
        atol = 2 / n if key.startswith(tuple(COUNTED)) else 1e-9
        assert got[key] == pytest.approx(value, rel=rtol, abs=atol, nan_ok=True), key
    assert got["nc1_layer3"] == got["nc1"] and got["nc4_agreement_layer3"] == got["nc4_agreement"]
    assert got["nc1_layer1"] != got["nc1"]  # another layer's features, not the last's copied


def test_a_masked_head_is_left_to_measure_model():
    """A class-incremental stream's masked head changes the logits: not the sweep's."""
    from plasticollapse.models import MaskedLinear

    model, x, _, _ = _trained(48, (16,), 50, 0.2, seed=1)
    assert fast_statistics.applies(model, x)
    model.classifier = MaskedLinear(16, 10)
    assert not fast_statistics.applies(model, x)
