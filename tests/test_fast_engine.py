"""The fast engine reproduces the reference engine (autograd + torch.optim.SGD, batch 1).

Equivalence is checked from identical initial weights and sample order:

- per layer, ``||W_fast - W_ref||_F / ||W_ref||_F`` and ``max|W_fast - W_ref| / max|W_ref|``
  (weights and biases alike) must stay below 1e-4 after 10,000 steps;
- the per-pass prequential accuracy counts must agree to within 2 flipped predictions
  (in practice they are equal) and the summed losses to float32 rounding.

The two engines sum the forward dot products in different orders, so they agree to float32
rounding (~1e-6 here), not bit for bit. A rounding difference can flip a ReLU whose
pre-activation happens to be within ~1e-7 of zero; such a flip can then grow chaotically
over thousands of steps, as any change of summation order does (autograd summing with
``torch.sum`` instead of BLAS parts from the reference the same way:
``test_where_trajectories_part_...``). How often depends on network and data: on real
Fashion-MNIST (3 seeds) and on most MNIST-like seeds, never within 10,000 steps; on the
64-input network, on 2 of 4 data seeds tried. The 10k-step tests use fixed seeds where
the trajectories stay together (data seed 2 for the 64-input network, 1 otherwise).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import mnist_like
from torch import nn

from plasticollapse.engines import make_engine
from plasticollapse.engines.fast import FastEngine, unsupported_reason
from plasticollapse.engines.reference import ReferenceEngine
from plasticollapse.models import MLP

RTOL = 1e-4


def rel_errors(ref: nn.Module, fast: nn.Module) -> list[tuple[str, float, float]]:
    """(name, Frobenius-relative, max-abs-relative) difference of every parameter."""
    out = []
    for (name, a), b in zip(ref.named_parameters(), fast.parameters(), strict=True):
        a, b = a.detach().double(), b.detach().double()
        fro = ((a - b).norm() / a.norm().clamp_min(1e-30)).item()
        mx = ((a - b).abs().max() / a.abs().max().clamp_min(1e-30)).item()
        out.append((name, fro, mx))
    return out


def run_both(model, x, y, orders, lr=0.01, **fast_kwargs):
    """Train copies of ``model`` with both engines over the passes in ``orders``."""
    ref_model, fast_model = copy.deepcopy(model), copy.deepcopy(model)
    ref = ReferenceEngine(ref_model, lr, batch_size=1)
    fast = FastEngine(fast_model, lr, **fast_kwargs)
    ref_stats = [ref.train(x, y, o) for o in orders]
    fast_stats = [fast.train(x, y, o) for o in orders]
    return ref_model, fast_model, ref_stats, fast_stats


def assert_equivalent(ref_model, fast_model, ref_stats, fast_stats, max_flips=2):
    for name, fro, mx in rel_errors(ref_model, fast_model):
        assert fro < RTOL and mx < RTOL, f"{name}: relative error {fro:.2e} (max {mx:.2e})"
    for r, f in zip(ref_stats, fast_stats, strict=True):
        assert r.count == f.count
        assert abs(r.correct - f.correct) <= max_flips, (r.correct, f.correct)
        assert f.loss_sum == pytest.approx(r.loss_sum, rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dim", "hidden", "data_seed"),
    [(784, (100, 100, 100), 1), (784, (50, 50, 50, 50, 50), 1), (64, (100, 100, 100), 2)],
    ids=["paper-784-100x3-10", "deep-narrow-784-50x5-10", "digits-64-100x3-10"],
)
def test_10k_steps_match_reference(dim, hidden, data_seed):
    n = 10_000
    x, y = mnist_like(n, dim=dim, seed=data_seed)
    assert 0.15 < (x != 0).float().mean() < 0.25  # ~80% zeros, like MNIST
    torch.manual_seed(0)
    model = MLP(dim, hidden, 10)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(2))
    ref_model, fast_model, rs, fs = run_both(model, x, y, [order[:5000], order[5000:]])
    assert_equivalent(ref_model, fast_model, rs, fs)
    assert rs[1].accuracy > 0.5  # it learns: the equivalence is not of a stuck network
    worst = max(max(fro, mx) for _, fro, mx in rel_errors(ref_model, fast_model))
    counts = [(r.correct, f.correct) for r, f in zip(rs, fs, strict=True)]
    print(f"\n{dim}-{hidden}: correct (ref, fast) per pass {counts}, max rel. error {worst:.1e}")


class TorchSumMLP(nn.Module):
    """The same network in plain autograd, dot products summed by ``torch.sum`` instead
    of BLAS: an equally valid float32 implementation with another summation order."""

    def __init__(self, mlp: MLP):
        super().__init__()
        self.mlp = mlp

    def forward(self, x):
        a = x.flatten(1)
        for i, lin in enumerate(self.mlp.linears):
            a = (a.unsqueeze(1) * lin.weight).sum(-1) + lin.bias
            if i < len(self.mlp.linears) - 1:
                a = torch.relu(a)
        return a


@pytest.mark.slow
def test_where_trajectories_part_autograd_with_another_summation_order_parts_too():
    # On this data seed a rounding-level ReLU flip makes the reference's trajectory part
    # from the fast engine's within 10k steps; autograd summing with torch.sum (instead
    # of BLAS) parts from the reference in the same way, by a comparable amount.
    n = 10_000
    x, y = mnist_like(n, dim=64, seed=1)
    torch.manual_seed(0)
    model = MLP(64, (100, 100, 100), 10)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(2))
    ref_model, fast_model, rs, fs = run_both(model, x, y, [order])
    alt_model = copy.deepcopy(model)
    alt = ReferenceEngine(TorchSumMLP(alt_model), 0.01).train(x, y, order)
    fast_err = max(fro for _, fro, _ in rel_errors(ref_model, fast_model))
    alt_err = max(fro for _, fro, _ in rel_errors(ref_model, alt_model))
    print(f"\nparted run: fast vs reference {fast_err:.1e}, torch.sum vs reference {alt_err:.1e}")
    assert fast_err <= 3 * alt_err + RTOL
    assert abs(fs[0].correct - rs[0].correct) <= 0.002 * n  # statistics stay alike
    assert abs(alt.correct - rs[0].correct) <= 0.002 * n


def test_one_step_matches_autograd_exactly_enough():
    # One step from the same weights: only float32 rounding separates the two.
    x, y = mnist_like(4, seed=3)
    torch.manual_seed(1)
    model = MLP(784, (100, 100, 100), 10)
    ref_model, fast_model, rs, fs = run_both(model, x, y, [torch.tensor([2])])
    assert rs == fs or (rs[0].correct == fs[0].correct)
    for name, fro, _ in rel_errors(ref_model, fast_model):
        assert fro < 1e-6, name


def test_multiple_epochs_reuse_the_cache_and_repeats_in_order():
    n = 1500
    x, y = mnist_like(n, seed=4)
    torch.manual_seed(2)
    model = MLP(784, (64, 64), 10)
    g = torch.Generator().manual_seed(5)
    orders = [torch.randperm(n, generator=g) for _ in range(3)]
    orders.append(torch.randint(0, n, (1000,), generator=g))  # with repeats
    orders.append(torch.tensor([7, 7, 7, 7, 3, 3, -1, -n]))  # repeats and negative indices
    ref_model, fast_model, rs, fs = run_both(model, x, y, orders)
    assert_equivalent(ref_model, fast_model, rs, fs, max_flips=1)

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
    fast_model, ref_model = copy.deepcopy(model), copy.deepcopy(model)
    fast = FastEngine(fast_model, 0.01)
    ref = ReferenceEngine(ref_model, 0.01)
    for step in range(3):
        if step == 1:
            x.mul_(0.5)  # in place: the version counter moves, the cache must not be reused
        if step == 2:
            x = x.flip(1).contiguous()  # a new tensor (a permuted task)
        assert fast.train(x, y, order).correct == ref.train(x, y, order).correct
    for name, fro, mx in rel_errors(ref_model, fast_model):
        assert fro < RTOL and mx < RTOL, name


def test_dense_inputs():
    n = 2000
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, 64, generator=g)  # dense: read directly, no CSR
    y = (x[:, :10].argmax(1) + (torch.rand(n, generator=g) < 0.1).long()) % 10
    torch.manual_seed(4)
    model = MLP(64, (48, 48), 10)
    order = torch.randperm(n, generator=g)
    ref_model, fast_model, rs, fs = run_both(model, x, y, [order])
    assert_equivalent(ref_model, fast_model, rs, fs)
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
    ref_model, fast_model, rs, fs = run_both(seq, ximg, y, [torch.randperm(n)])
    assert_equivalent(ref_model, fast_model, rs, fs)


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
    ref_model, fast_model, rs, fs = run_both(model, x, y, [torch.randperm(500)])
    assert_equivalent(ref_model, fast_model, rs, fs)


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
    assert isinstance(make_engine("auto", mlp, 0.01, 8), ReferenceEngine)
    with pytest.raises(ValueError, match="batch size"):
        make_engine("fast", mlp, 0.01, 8)


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
    # (only the first layer's summation order differs); the CSR rows of x are built once
    # for every permutation.
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
    rows = None
    for perm, order in zip(perms, orders, strict=True):
        a = built_engine.train(x[:, perm].contiguous(), y, order)
        b = given_engine.train(x, y, order, columns=perm)
        assert abs(a.correct - b.correct) <= 1
        assert b.loss_sum == pytest.approx(a.loss_sum, rel=1e-5)
        rows = rows or given_engine._cached_rows
        assert given_engine._cached_rows is rows
    for name, fro, mx in rel_errors(built, given):
        assert fro < RTOL and mx < RTOL, name
    with pytest.raises(ValueError, match="permutation"):
        given_engine.train(x, y, orders[0], columns=torch.zeros(784, dtype=torch.long))
    with pytest.raises(ValueError, match="permutation"):
        given_engine.train(x, y, orders[0], columns=torch.arange(783))


def test_benchmark_gathered_layout_trains_as_the_package_engine(monkeypatch):
    # benchmarks/fast_layouts.py times a first layer kept in PyTorch's layout, built on the
    # package's kernels and engine; online_speed.py's ratio only means something if it
    # trains alike (to float32 rounding), on CSR and dense inputs and with permuted columns.
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from fast_layouts import GatheredFastEngine, check_same_training

    n = 1000
    torch.manual_seed(8)
    model = MLP(64, (48, 32), 10)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(10))
    sparse_x, sparse_y = mnist_like(n, dim=64, seed=12)
    dense_x = torch.randn(n, 64, generator=torch.Generator().manual_seed(13))
    for x, y in ((sparse_x, sparse_y), (dense_x, sparse_y)):
        assert check_same_training(model, x, y, order) < RTOL

    perm = torch.randperm(64, generator=torch.Generator().manual_seed(14))
    views, gathered = copy.deepcopy(model), copy.deepcopy(model)
    FastEngine(views, 0.01).train(sparse_x, sparse_y, order, columns=perm)
    GatheredFastEngine(gathered, 0.01).train(sparse_x, sparse_y, order, columns=perm)
    for name, fro, mx in rel_errors(views, gathered):
        assert fro < RTOL and mx < RTOL, name


# --------------------------------------------------------------------------- remedies
#
# Each remedy the compiled engine runs, against its reference implementation in the
# autograd engine: the same initial weights, sample order and task permutation, 10,000
# steps, the same tolerance as the plain engine's. Together the cases take every path of
# the compiled pass: the scaled first layer (decay alone, pull, both), the dense one (with
# Continual Backprop), the tracked one (adaptable utilities), a fixed head, and passes cut
# into segments by remedies acting every k steps.
#
# With decay or pull, the compiled engine does not round the decay of an untouched weight
# at every step as the reference does (it keeps each input row's decay as one float64
# factor), so the two differ by the reference's own rounding noise, ~1e-5 after a few
# thousand steps, and a ReLU flip then parts the trajectories sooner than for plain SGD:
# on the data seeds tried, weight decay or L2 Init alone part from the reference within
# 10,000 steps. There the float64 twin of the reference (the same run in float64) decides:
# the compiled engine must be about as close to it as the float32 reference is (within a
# factor 3, as the plain engine's parted-trajectory test allows; measured: 1.5x further
# for weight decay, 20x closer for L2 Init), with the same online statistics.


def _remedies(spec):
    from plasticollapse.remedies import REMEDIES

    return [REMEDIES[name](*args) for name, args in spec]


CBP_ADAPTABLE = ("cbp", (1e-4, 0.99, 100, "adaptable_contribution"))
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
    "shrink_perturb+redo every k": (
        [("shrink_perturb", (0.8, 0.01, 2500)), ("redo", (0.1, 1000))],
        1,
    ),
}


def _train_with_remedies(model, spec, engine, x, y, orders, columns):
    from plasticollapse.remedies import RemedyContext

    model = copy.deepcopy(model)
    remedies = _remedies(spec)
    for remedy in remedies:
        remedy.bind(model, RemedyContext(seed=0, num_classes=10))
    if engine == "fast":
        trainer = FastEngine(model, 0.01, remedies)
    else:
        trainer = ReferenceEngine(model, 0.01, 1, remedies)
    return model, [trainer.train(x, y, o, columns=columns) for o in orders]


def _worst(a, b):
    return max(max(fro, mx) for _, fro, mx in rel_errors(a, b))


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(REMEDY_CASES))
def test_10k_steps_with_remedies_match_their_reference(case):
    spec, data_seed = REMEDY_CASES[case]
    n = 10_000
    x, y = mnist_like(n, seed=data_seed)
    torch.manual_seed(0)
    model = MLP(784, (100, 100, 100), 10)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(2))
    orders = (order[:5000], order[5000:])
    columns = torch.randperm(784, generator=torch.Generator().manual_seed(3))
    ref, ref_stats = _train_with_remedies(model, spec, "reference", x, y, orders, columns)
    fast, fast_stats = _train_with_remedies(model, spec, "fast", x, y, orders, columns)
    worst = _worst(ref, fast)
    if worst < RTOL:
        assert_equivalent(ref, fast, ref_stats, fast_stats)
    else:  # parted: as close to the float64 twin as the float32 reference is
        assert any(name in case for name in ("weight_decay", "l2_init"))
        twin, _ = _train_with_remedies(
            model.double(), spec, "reference", x.double(), y, orders, columns
        )
        twin = twin.float()
        fast_twin, ref_twin = _worst(twin, fast), _worst(twin, ref)
        print(f"\n{case}: fast vs float64 twin {fast_twin:.1e}, reference vs twin {ref_twin:.1e}")
        assert fast_twin <= 3 * ref_twin
        for r, f in zip(ref_stats, fast_stats, strict=True):
            assert abs(r.correct - f.correct) <= 0.002 * r.count
            assert f.loss_sum == pytest.approx(r.loss_sum, rel=1e-3)
    assert [s.extra for s in ref_stats] == [s.extra for s in fast_stats]  # same units replaced
    if "cbp" in case:
        assert sum(s.extra["cbp_units_replaced"] for s in fast_stats) > 100
    if "redo" in case:
        assert sum(s.extra["redo_units_reset"] for s in fast_stats) > 0
    assert ref_stats[1].accuracy > 0.5
    counts = [(r.correct, f.correct) for r, f in zip(ref_stats, fast_stats, strict=True)]
    print(f"\n{case}: correct per pass {counts}, max rel. error {worst:.1e}")


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
