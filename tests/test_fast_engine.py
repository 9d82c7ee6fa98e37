"""The fast engine reproduces the reference engine (autograd + torch.optim.SGD, batch 1).

The two engines sum their dot products in different orders, so they agree to float32
rounding, not bit for bit, and two long free-running trajectories part wherever a
rounding-level ReLU flip happens, which depends on the CPU's code generation. The
comparisons here are therefore posed where they cannot part (tests/shadow.py):

- one step from the same weights, against autograd;
- long runs (2,000-3,000 steps, 100-step segments) *shadowed*: before each 100-step segment the
  float64 reference engine (the same update formula without float32 rounding) is reset to
  the fast engine's parameters and remedy state, and both train the segment. All but a
  few segments (a rounding-level flip spoils the one it happens in) must agree to
  ``SEGMENT_RTOL`` (2e-5 relative, ~170 float32 eps), with the same online statistics
  and the same units replaced; a wrong formula parts every segment
  (``test_shadowing_catches_a_wrong_update``).

These tests run in CI under the host's Numba target and ``NUMBA_CPU_NAME=generic``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from shadow import (
    SEGMENT_RTOL,
    Segment,
    Shadowed,
    relative_errors,
    segments_of,
    shadow,
    worst_error,
)
from synthetic import mnist_like
from torch import nn

from plasticollapse.engines.fast import FastEngine, unsupported_reason
from plasticollapse.engines.reference import ReferenceEngine
from plasticollapse.models import MLP
from plasticollapse.training import make_engine

RTOL = SEGMENT_RTOL


def run_both(model, x, y, orders, lr=0.01, **fast_kwargs):
    """Train copies of ``model`` with both engines over the passes in ``orders`` (free
    running: only for horizons too short to part, such as one step)."""
    ref_model, fast_model = copy.deepcopy(model), copy.deepcopy(model)
    ref = ReferenceEngine(ref_model, lr, batch_size=1)
    fast = FastEngine(fast_model, lr, **fast_kwargs)
    ref_stats = [ref.train(x, y, o) for o in orders]
    fast_stats = [fast.train(x, y, o) for o in orders]
    return ref_model, fast_model, ref_stats, fast_stats


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dim", "hidden", "data_seed"),
    [(784, (100, 100, 100), 1), (784, (50, 50, 50, 50, 50), 1), (64, (100, 100, 100), 2)],
    ids=["paper-784-100x3-10", "deep-narrow-784-50x5-10", "digits-64-100x3-10"],
)
def test_3k_steps_shadow_the_float64_update(dim, hidden, data_seed):
    n = 3000
    x, y = mnist_like(n, dim=dim, seed=data_seed)
    assert 0.15 < (x != 0).float().mean() < 0.25  # ~80% zeros, like MNIST
    torch.manual_seed(0)
    model = MLP(dim, hidden, 10)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(2))
    run = shadow(model, x, y, segments_of(order, 100))
    print(f"\n{dim}-{hidden}: {run.summary()}")
    run.assert_agrees()
    late = run.segments[-10:]
    # It learns: the agreement is not that of a stuck network.
    assert sum(s.candidate.correct for s in late) / sum(s.candidate.count for s in late) > 0.5


def test_shadowing_catches_a_wrong_update():
    # What the shadowed comparison is worth: an update 1% off (lr 0.0101 against the
    # twin's 0.01) parts every segment, far beyond the few a ReLU flip may spoil.
    n = 2000
    x, y = mnist_like(n, seed=1)
    torch.manual_seed(0)
    model = MLP(784, (100, 100, 100), 10)
    wrong = shadow(
        model,
        x,
        y,
        segments_of(torch.arange(n), 100),
        candidate=lambda m, lr, r: FastEngine(m, lr * 1.01, r),
    )
    assert len(wrong.parted) >= 0.9 * len(wrong.segments), wrong.summary()


def test_one_step_matches_autograd_exactly_enough():
    # One step from the same weights: only float32 rounding separates the two.
    x, y = mnist_like(4, seed=3)
    torch.manual_seed(1)
    model = MLP(784, (100, 100, 100), 10)
    ref_model, fast_model, rs, fs = run_both(model, x, y, [torch.tensor([2])])
    assert rs == fs or (rs[0].correct == fs[0].correct)
    for name, fro, _ in relative_errors(ref_model, fast_model):
        assert fro < 1e-6, name


def test_multiple_epochs_reuse_the_cache_and_repeats_in_order():
    n = 600
    x, y = mnist_like(n, seed=4)
    torch.manual_seed(2)
    model = MLP(784, (64, 64), 10)
    g = torch.Generator().manual_seed(5)
    orders = [torch.randperm(n, generator=g) for _ in range(3)]
    orders.append(torch.randint(0, n, (400,), generator=g))  # with repeats
    orders.append(torch.tensor([7, 7, 7, 7, 3, 3, -1, -n]))  # repeats and negative indices
    # Each pass in 100-step segments, so that the engine's cache meets many calls.
    shadow(model, x, y, [s for o in orders for s in segments_of(o, 100)]).assert_agrees()

    # The CSR rows of x were built once and reused for every pass.
    engine = FastEngine(copy.deepcopy(model), 0.01)
    engine.train(x, y, orders[0])
    rows = engine._cached_rows
    engine.train(x, y, orders[1])
    assert engine._cached_rows is rows
    # A view of the same memory hits the cache too (e.g. Dataset.flat() called per epoch).
    engine.train(x.view(n, 28, 28), y, orders[2])
    assert engine._cached_rows is rows


def test_cache_sees_in_place_changes_and_new_tensors():
    n = 300
    x, y = mnist_like(n, seed=6)
    torch.manual_seed(3)
    model = MLP(784, (32,), 10)
    order = torch.arange(n)

    def passes():
        nonlocal x
        for step in range(3):
            if step == 1:
                x.mul_(0.5)  # in place: the version counter moves, the cache must not be reused
            if step == 2:
                x = x.flip(1).contiguous()  # a new tensor (a permuted task)
            for segment in segments_of(order, 100):
                yield x, y, segment

    # A stale cache would train segments 4-9 on the old inputs: all of them would part.
    shadow(model, x, y, passes()).assert_agrees(max_parted=1)


def test_dense_inputs():
    n = 2000
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, 64, generator=g)  # dense: read directly, no CSR
    y = (x[:, :10].argmax(1) + (torch.rand(n, generator=g) < 0.1).long()) % 10
    torch.manual_seed(4)
    model = MLP(64, (48, 48), 10)
    order = torch.randperm(n, generator=g)
    shadow(model, x, y, segments_of(order, 100)).assert_agrees()
    engine = FastEngine(copy.deepcopy(model), 0.01)
    engine.train(x, y, order[:5])
    assert not engine._cached_rows.sparse


def test_nn_sequential_and_image_shaped_inputs():
    n = 1000
    x, y = mnist_like(n, seed=9)
    torch.manual_seed(5)
    seq = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 50), nn.ReLU(), nn.Linear(50, 30), nn.ReLU(), nn.Linear(30, 10)
    )
    assert unsupported_reason(seq, 1) is None
    ximg = x.view(n, 1, 28, 28)
    shadow(seq, ximg, y, segments_of(torch.randperm(n), 100)).assert_agrees()


def test_parameters_stay_shared_views_and_versions_move():
    torch.manual_seed(6)
    model = MLP(784, (100, 100), 10)
    before = [p.data_ptr() for p in model.parameters()]
    versions = [p._version for p in model.parameters()]
    x, y = mnist_like(50, seed=10)
    engine = FastEngine(model, 0.01)
    engine.train(x, y, torch.arange(50))
    assert [p.data_ptr() for p in model.parameters()] == before  # updated in place
    assert all(p._version > v for p, v in zip(model.parameters(), versions, strict=True))
    for p in model.parameters():
        arr = p.detach().numpy()
        assert arr.flags.c_contiguous and arr.dtype == np.float32
        assert arr.ctypes.data == p.data_ptr()
    # The model is current after train(): the transposed first layer was written back.
    snapshot = copy.deepcopy(model)
    engine.train(x, y, torch.arange(0))  # an empty pass changes nothing
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), snapshot.parameters(), strict=True)
    )


def test_non_contiguous_parameter_is_trained_on_a_copy_and_written_back():
    torch.manual_seed(7)
    model = MLP(784, (40, 30), 10)
    w = model.hidden_linears[1].weight
    # Same values, transposed storage: not C-contiguous, so no view is possible.
    w.data = w.data.t().contiguous().t()
    assert not w.is_contiguous()
    x, y = mnist_like(500, seed=11)
    run = shadow(model, x, y, segments_of(torch.randperm(500), 100))
    assert not run.model.hidden_linears[1].weight.is_contiguous()  # still the user's layout
    run.assert_agrees(max_parted=1)


def test_unsupported_reasons():
    mlp = MLP(784, (100,), 10)
    assert unsupported_reason(mlp, 1) is None
    assert "batch size" in unsupported_reason(mlp, 32)
    assert "float32" in unsupported_reason(copy.deepcopy(mlp).double(), 1)
    frozen = copy.deepcopy(mlp)
    frozen.classifier.weight.requires_grad_(False)
    assert "frozen" in unsupported_reason(frozen, 1)
    hooked = copy.deepcopy(mlp)
    hooked.classifier.register_forward_hook(lambda *a: None)
    assert "hook" in unsupported_reason(hooked, 1)
    assert "no hidden layer" in unsupported_reason(nn.Sequential(nn.Linear(4, 3)), 1)
    assert unsupported_reason(nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)), 1)
    assert unsupported_reason(nn.Sequential(nn.Linear(4, 5), nn.ReLU()), 1)
    assert "bias" in unsupported_reason(
        nn.Sequential(nn.Linear(4, 5, bias=False), nn.ReLU(), nn.Linear(5, 3)), 1
    )
    assert "not a models.MLP" in unsupported_reason(nn.Conv2d(1, 1, 3), 1)

    class Custom(MLP):
        def forward(self, x):
            return super().forward(x) * 2

    assert "overrides" in unsupported_reason(Custom(4, (5,), 3), 1)
    with pytest.raises(ValueError, match="does not apply"):
        FastEngine(nn.Sequential(nn.Linear(4, 3)), 0.1)


def test_make_engine_picks_fast_and_explains_refusals():
    mlp = MLP(64, (16,), 10)
    assert isinstance(make_engine("auto", mlp, 0.01, 1), FastEngine)
    assert isinstance(make_engine("fast", mlp, 0.01, 1), FastEngine)
    # batch > 1: the compiled mini-batch engine when asked (tests/test_minibatch_engine.py)
    assert type(make_engine("fast", mlp, 0.01, 8)).__name__ == "MiniBatchEngine"
    assert isinstance(make_engine("auto", mlp, 0.01, 8), ReferenceEngine)
    normed = MLP(64, (16,), 10, layer_norm=True)
    assert isinstance(make_engine("auto", normed, 0.01, 8), ReferenceEngine)
    with pytest.raises(ValueError, match="LayerNorm"):
        make_engine("fast", normed, 0.01, 8)


def test_bad_inputs_are_refused_before_the_compiled_loop():
    mlp = MLP(64, (16,), 10)
    engine = FastEngine(mlp, 0.01)
    x, y = mnist_like(10, dim=64)
    with pytest.raises(IndexError):
        engine.train(x, y, torch.tensor([10]))
    with pytest.raises(ValueError, match="labels"):
        engine.train(x, torch.full((10,), 10), torch.arange(10))
    with pytest.raises(ValueError, match="features"):
        engine.train(torch.rand(10, 63), y, torch.arange(10))


def test_columns_train_on_permuted_inputs_without_building_them():
    # train(x, y, order, columns=P) is train(x[:, P], y, order) up to float32 rounding
    # (only the first layer's summation order differs), compared segment by segment from
    # the same weights; the CSR rows of x are built once for every permutation.
    n = 1500
    x, y = mnist_like(n, seed=8)
    torch.manual_seed(4)
    model = MLP(784, (64, 64), 10)
    g = torch.Generator().manual_seed(9)
    perms = [torch.randperm(784, generator=g) for _ in range(3)]
    orders = [torch.randperm(n, generator=g) for _ in range(3)]
    built, given = copy.deepcopy(model), copy.deepcopy(model)
    built_engine = FastEngine(built, 0.01)
    given_engine = FastEngine(given, 0.01)
    rows, segments = None, []
    for perm, order in zip(perms, orders, strict=True):
        built_x = x[:, perm].contiguous()
        for part in segments_of(order, 100):
            with torch.no_grad():  # every pass reads the parameters afresh
                for p, q in zip(built.parameters(), given.parameters(), strict=True):
                    p.copy_(q)
            a = built_engine.train(built_x, y, part)
            b = given_engine.train(x, y, part, columns=perm)
            segments.append(Segment(worst_error(built, given), b, a))
        rows = rows or given_engine._cached_rows
        assert given_engine._cached_rows is rows
    Shadowed(segments, given).assert_agrees()
    with pytest.raises(ValueError, match="permutation"):
        given_engine.train(x, y, orders[0], columns=torch.zeros(784, dtype=torch.long))
    with pytest.raises(ValueError, match="permutation"):
        given_engine.train(x, y, orders[0], columns=torch.arange(783))


def test_benchmark_gathered_layout_trains_as_the_package_engine(monkeypatch):
    # benchmarks/fast_layouts.py times a first layer kept in PyTorch's layout, built on the
    # package's kernels and engine; online_speed.py's ratio only means something if it
    # trains alike (to float32 rounding), on CSR and dense inputs and with permuted columns.
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from fast_layouts import GatheredFastEngine

    n = 1000
    torch.manual_seed(8)
    model = MLP(64, (48, 32), 10)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(10))
    sparse_x, sparse_y = mnist_like(n, dim=64, seed=12)
    dense_x = torch.randn(n, 64, generator=torch.Generator().manual_seed(13))
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(14))
    for x, y, columns in (
        (sparse_x, sparse_y, None),
        (dense_x, sparse_y, None),
        (sparse_x, sparse_y, perm),
    ):
        shadow(
            model,
            x,
            y,
            segments_of(order, 100),
            columns=columns,
            candidate=lambda m, lr, r: GatheredFastEngine(m, lr),
            twin=lambda m, lr, r: FastEngine(m, lr),
            twin_dtype=torch.float32,
        ).assert_agrees(max_parted=1)


# --------------------------------------------------------------------------- remedies
#
# Each remedy the compiled engine runs, against its reference implementation in the
# autograd engine, shadowed: 2,000 steps in 100-step segments, with a task permutation of
# the inputs; before each segment the reference (in float64 where the remedy draws nothing
# whose values depend on the dtype) takes the fast engine's parameters and the remedies'
# state (CBP's utilities, ages and random stream; the every-k counters). Together the cases
# take every path of the compiled pass: the scaled first layer (decay alone, pull, both),
# the dense one (with Continual Backprop), the tracked one (adaptable utilities), a fixed
# head, and passes cut into segments by remedies acting every k steps. The compiled engine
# keeps each input row's decay as one float64 factor where the reference rounds it at every
# step: within one segment, a difference well inside the tolerance.


def _remedies(spec):
    from plasticollapse.remedies import REMEDIES

    return lambda: [REMEDIES[name](*args) for name, args in spec]


# Replacement rates high enough for hundreds of units replaced within 2,000 steps.
CBP_ADAPTABLE = ("cbp", (5e-4, 0.99, 50, "adaptable_contribution"))
CBP_CONTRIBUTION = ("cbp", (2e-4, 0.9, 50, "contribution"))
#: case -> (remedies, data seed)
REMEDY_CASES = {
    "weight_decay": ([("weight_decay", (0.01,))], 1),
    "l2_init": ([("l2_init", (0.01,))], 1),
    "weight_decay+l2_init": ([("weight_decay", (0.003,)), ("l2_init", (0.01,))], 2),
    "cbp": ([CBP_ADAPTABLE], 1),
    "cbp(contribution)+l2_init": ([CBP_CONTRIBUTION, ("l2_init", (0.01,))], 3),
    "cbp+weight_decay": ([CBP_ADAPTABLE, ("weight_decay", (0.01,))], 1),
    "etf_head+weight_decay": ([("etf_head", (1.0,)), ("weight_decay", (0.01,))], 1),
    "etf_head+cbp": ([("etf_head", (1.0,)), CBP_ADAPTABLE], 1),
    # every 50 and 100 steps: twice and once in each segment
    "shrink_perturb+redo every k": (
        [("shrink_perturb", (0.98, 0.001, 50)), ("redo", (0.1, 100))],
        1,
    ),
}
#: Remedies that draw fresh weights at intervals: torch draws other numbers into a float64
#: tensor, so their twin is the float32 reference (still teacher-forced).
DRAWS_BY_DTYPE = ("shrink_perturb", "redo")


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(REMEDY_CASES))
def test_2k_steps_with_remedies_shadow_their_reference(case):
    spec, data_seed = REMEDY_CASES[case]
    n = 2000
    x, y = mnist_like(n, seed=data_seed)
    torch.manual_seed(0)
    model = MLP(784, (100, 100, 100), 10)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(2))
    columns = torch.randperm(784, generator=torch.Generator().manual_seed(3))
    draws = any(name in case for name in DRAWS_BY_DTYPE)
    run = shadow(
        model,
        x,
        y,
        segments_of(order, 100),
        remedies=_remedies(spec),
        columns=columns,
        twin_dtype=torch.float32 if draws else torch.float64,
    )
    print(f"\n{case}: {run.summary()}")
    run.assert_agrees()
    extra = [s.candidate.extra for s in run.segments]
    if "cbp" in case:
        assert sum(e["cbp_units_replaced"] for e in extra) > 100
    if "redo" in case:
        assert sum(e["redo_units_reset"] for e in extra) > 0
    late = run.segments[-10:]
    assert sum(s.candidate.correct for s in late) / sum(s.candidate.count for s in late) > 0.5


# --------------------------------------------------------------------------- measuring


@pytest.mark.parametrize("dense", [False, True], ids=["csr", "dense"])
def test_measuring_through_the_sparse_first_layer_equals_the_generic_measurement(dense):
    """permuted.measure on the plain MLP computes the first layer from the engine's rows of
    x with W_1's columns permuted when they are sparse (no hooks): every metric equals
    measure_model's generic path (hooks, x[:, P] built) to float rounding."""
    from plasticollapse.engines import fast_measure
    from plasticollapse.metrics.gram import SyrkGram
    from plasticollapse.metrics.measure import measure_model
    from plasticollapse.studies.permuted import run as permuted

    n = 2500  # three batches of 1024, the last one partial
    if dense:
        x = torch.rand(n, 64, generator=torch.Generator().manual_seed(5))
        y = x[:, :10].argmax(1)
    else:
        x, y = mnist_like(n, dim=64, seed=4)
    torch.manual_seed(1)
    model = MLP(64, (32, 24), 10)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(6))
    FastEngine(model, 0.05).train(x, y, torch.arange(n), columns=perm)  # a trained network
    assert fast_measure.applies(model, x)
    with torch.no_grad():
        first = model.hidden_linears[0](x[:, perm]).relu()
    if dense:  # PyTorch's dense first layer is faster there
        assert fast_measure.first_layer_outputs(model, x, perm) is None
    else:
        torch.testing.assert_close(fast_measure.first_layer_outputs(model, x, perm), first)

    want = measure_model(model, x[:, perm].contiguous(), y, 10, hidden_layers=True)
    got = permuted.measure(model, x, y, 10, columns=perm)
    renamed = {"accuracy": "eval_accuracy", "loss": "eval_loss"}
    assert set(got) == {renamed.get(k, k) for k in want}
    # Counts of samples may differ by a near-tie that rounding decides (NC4's nearest mean
    # against the argmax): by at most two samples.
    counted = {"accuracy", "nc4_agreement", "nc4_mismatch"}
    for key, value in want.items():
        tolerance = 2 / n if key in counted else 1e-7
        assert got[renamed.get(key, key)] == pytest.approx(value, rel=1e-5, abs=tolerance), key

    gram = SyrkGram()
    for part in first.split(1000):
        gram.update(part)
    torch.testing.assert_close(gram.gram(), first.double().T @ first.double())


def test_measuring_leaves_other_networks_to_the_generic_path():
    from plasticollapse.engines import fast_measure

    x = torch.rand(10, 64)
    assert not fast_measure.applies(MLP(64, (8,), 3, layer_norm=True), x)
    assert not fast_measure.applies(MLP(64, (8,), 3).double(), x)
    assert not fast_measure.applies(nn.Sequential(nn.Linear(64, 3)), x)
