"""Remedies: their math against its formula, each object changing training the way it should
against plain on a tiny problem, and each running in both studies, alone and combined.
"""

import copy
import dataclasses

import pytest
import test_permuted
import test_warmstart
import torch
from shadow import Segment, Shadowed, same_state, worst_error

from plasticollapse.data import load_dataset
from plasticollapse.engines import ReferenceEngine
from plasticollapse.engines.fast import FastEngine
from plasticollapse.metrics.collapse import nc1_loss
from plasticollapse.models import MLP, ResNet18
from plasticollapse.remedies import (
    REMEDIES,
    RemedyContext,
    build_remedies,
    remedy_names,
)
from plasticollapse.remedies.cbp import ContinualBackprop
from plasticollapse.remedies.functional import (
    fresh_like,
    l2_init_penalty,
    nc1_regularised_loss,
    redo_reset,
    shrink_perturb,
)
from plasticollapse.remedies.l2_init import L2Init
from plasticollapse.remedies.nc1_reg import NC1Regulariser
from plasticollapse.remedies.redo import ReDo
from plasticollapse.remedies.reset import ResetAll, ResetHead
from plasticollapse.remedies.shrink_perturb import ShrinkPerturb
from plasticollapse.remedies.weight_decay import WeightDecay
from plasticollapse.runs.config import ConfigError, Study, field_help, parse_study
from plasticollapse.runs.folder import RunFolder
from plasticollapse.runs.runtime import generator_for
from plasticollapse.studies.base import execute, plan
from plasticollapse.studies.permuted.config import Config as PermutedConfig
from plasticollapse.studies.warmstart.config import Config as WarmstartConfig
from plasticollapse.training import make_engine


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
    # the draw is the MLP built right after seeding the CPU generator with the generator's
    # first 63-bit integer (fresh weights stay what they were when torch.manual_seed did it)
    seed = int(torch.randint(0, 2**63 - 1, (), generator=torch.Generator().manual_seed(5)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        want = MLP(16, (8,), 3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), want.parameters(), strict=True))


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_engines_gather_interval_inputs_only_for_remedies_that_read_them(engine):
    """Every k steps, ReDo scores units on the pass's recent samples; Shrink & Perturb reads
    none, so the engines pass it None instead of gathering (and permuting) them."""
    seen = {}

    def spy(remedy):
        original = remedy.at_interval

        def at_interval(model, optimizer, inputs):
            seen.setdefault(remedy.name, []).append(None if inputs is None else inputs.shape)
            return original(model, optimizer, inputs)

        remedy.at_interval = at_interval
        return remedy

    torch.manual_seed(0)
    model = MLP(12, (8,), 3)
    remedies = [spy(ShrinkPerturb(0.8, 0.01, 5)), spy(ReDo(0.1, 10))]
    for remedy in remedies:
        remedy.bind(model, RemedyContext(seed=0, num_classes=3))
    x, y = torch.rand(40, 12), torch.arange(40) % 3
    make_engine(engine, model, 0.01, 1, remedies).train(x, y, torch.arange(40))
    # steps 5, 15, 25, 35: S&P alone, nothing gathered; 10, 20, 30, 40: ReDo too (its span)
    assert seen["shrink_perturb"] == [None, (10, 12)] * 4
    assert seen["redo"] == [(10, 12)] * 4


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


# --------------------------------------------------------------------------- against plain
#
# Each remedy object trains a small MLP on 300 digits with the reference engine, from the
# same initialisation and in the same sample order as plain SGD, and must move the weights
# the way its formula says.

DIGITS = load_dataset("digits").flat("train")


def flat_params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def train(remedies=(), epochs=10, batch_size=16, lr=0.1, seed=0):
    """A 64-32-32-10 MLP trained on 300 digits; returns it and its initial parameters."""
    x, y = DIGITS[0][:300], DIGITS[1][:300]
    torch.manual_seed(seed)
    model = MLP(64, (32, 32), 10)
    initial = flat_params(model)
    for remedy in remedies:
        remedy.bind(model, RemedyContext(seed=seed, num_classes=10))
    engine = ReferenceEngine(model, lr, batch_size, remedies)
    for epoch in range(epochs):
        engine.train(x, y, torch.randperm(300, generator=generator_for(seed, "test", epoch)))
    return model, initial


def one_step(remedies, model):
    """The parameters after one SGD step (lr 0.1) on a fixed batch from ``model``'s weights."""
    x, y = DIGITS[0][:16], DIGITS[1][:16]
    for remedy in remedies:
        remedy.bind(model, RemedyContext(seed=0, num_classes=10))
    ReferenceEngine(model, 0.1, 16, remedies).train(x, y, torch.arange(16))
    return flat_params(model)


def test_weight_decay_adds_lambda_theta_to_each_step_and_shrinks_the_weights():
    torch.manual_seed(0)
    start = MLP(64, (32, 32), 10)
    theta = flat_params(start)
    plain = one_step([], copy.deepcopy(start))
    decayed = one_step([WeightDecay(0.3)], copy.deepcopy(start))
    # SGD: theta' = theta - lr (g + lambda theta); the difference is -lr lambda theta.
    torch.testing.assert_close(decayed - plain, -0.1 * 0.3 * theta, rtol=0, atol=1e-6)

    plain_model, _ = train()
    decayed_model, _ = train([WeightDecay(0.01)])
    assert flat_params(decayed_model).norm() < 0.95 * flat_params(plain_model).norm()


def test_l2_init_pulls_towards_theta_0_not_towards_zero():
    torch.manual_seed(0)
    start = MLP(64, (32, 32), 10)
    remedy = L2Init(0.3)
    remedy.bind(start, RemedyContext(seed=0, num_classes=10))  # theta_0: these weights
    theta_0 = flat_params(start)
    with torch.no_grad():
        for p in start.parameters():
            p.add_(0.05 * torch.randn_like(p))
    theta = flat_params(start)
    plain = one_step([], copy.deepcopy(start))
    pulled = copy.deepcopy(start)
    ReferenceEngine(pulled, 0.1, 16, [remedy]).train(
        DIGITS[0][:16], DIGITS[1][:16], torch.arange(16)
    )
    # theta' = theta - lr (g + lambda (theta - theta_0))
    expected = -0.1 * 0.3 * (theta - theta_0)
    torch.testing.assert_close(flat_params(pulled) - plain, expected, rtol=0, atol=1e-6)

    plain_model, initial = train()
    l2_model, initial_l2 = train([L2Init(0.1)])
    assert torch.equal(initial, initial_l2)
    distance_plain = (flat_params(plain_model) - initial).norm()
    distance_l2 = (flat_params(l2_model) - initial).norm()
    assert distance_l2 < 0.8 * distance_plain


def test_nc1_regulariser_keeps_more_within_class_spread_than_plain():
    x, y = DIGITS[0][:300], DIGITS[1][:300]
    nc1 = {}
    for name, remedies in (("plain", []), ("nc1_reg", [NC1Regulariser(0.05, 200.0)])):
        model, _ = train(remedies)
        with torch.no_grad():
            nc1[name] = float(nc1_loss(model.features(x), y, 10))
    assert nc1["nc1_reg"] > 1.1 * nc1["plain"]  # less collapse (measured: 0.63 vs 0.53)


def test_nc1_regulariser_adds_exactly_its_term_to_the_step():
    torch.manual_seed(0)
    start = MLP(64, (32, 32), 10)
    x, y = DIGITS[0][:16], DIGITS[1][:16]
    remedy = NC1Regulariser(0.05, 200.0)
    remedy.bind(start, RemedyContext(seed=0, num_classes=10))
    features = start.features(x)
    term = remedy.loss(start, start.classifier(features), features, y)
    torch.testing.assert_close(term, -0.05 * nc1_loss(features, y, 10))
    assert term.item() < 0  # a reward: spread lowers the objective


def test_shrink_perturb_at_a_task_start_is_exactly_shrink_theta_plus_perturb_fresh():
    torch.manual_seed(0)
    model = MLP(64, (32, 32), 10)
    before = snapshot(model)
    remedy = ShrinkPerturb(0.6, 0.01)
    remedy.bind(model, RemedyContext(seed=4, num_classes=10))
    keys = remedy.at_task_start(model, None, 3, DIGITS[0][:8])
    assert keys == {}
    fresh = dict(fresh_like(model, generator_for(4, "shrink_perturb", 3)).named_parameters())
    for name, param in model.named_parameters():
        expected = 0.6 * before[name] + 0.01 * fresh[name]
        torch.testing.assert_close(param, expected, rtol=0, atol=1e-7)
    # Another task draws other fresh weights.
    other = MLP(64, (32, 32), 10)
    other.load_state_dict(before)
    remedy.at_task_start(other, None, 4, DIGITS[0][:8])
    assert not torch.equal(other.linears[0].weight, model.linears[0].weight)


def test_shrink_perturb_at_a_probe_start_draws_the_epoch_fresh_weights():
    torch.manual_seed(0)
    model = MLP(64, (16,), 10)
    before = snapshot(model)
    remedy = ShrinkPerturb(0.5, 0.1)
    remedy.bind(model, RemedyContext(seed=2, num_classes=10))
    remedy.at_probe_start(model, 20)
    fresh = dict(fresh_like(model, generator_for(2, "shrink_perturb", 20)).named_parameters())
    for name, param in model.named_parameters():
        torch.testing.assert_close(param, 0.5 * before[name] + 0.1 * fresh[name])


def test_redo_at_a_task_start_recycles_exactly_the_dormant_units():
    torch.manual_seed(0)
    model = MLP(64, (32, 32), 10)
    inputs = torch.randn(256, 64)  # centred: every unit fires on about half of them
    dormant = [3, 17, 30]
    with torch.no_grad():  # never fires: zero incoming weights and a negative bias
        model.hidden_linears[0].weight[dormant] = 0.0
        model.hidden_linears[0].bias[dormant] = -1.0
    before = snapshot(model)
    remedy = ReDo(redo_tau=0.0)
    remedy.bind(model, RemedyContext(seed=5, num_classes=10))
    keys = remedy.at_task_start(model, None, 2, inputs)

    assert keys == {"redo_units_reset": 3}
    fresh = fresh_like(model, generator_for(5, "redo", 2))
    first, second = model.hidden_linears
    assert torch.equal(first.weight[dormant], fresh.hidden_linears[0].weight[dormant])
    assert torch.equal(first.bias[dormant], fresh.hidden_linears[0].bias[dormant])
    assert torch.count_nonzero(second.weight[:, dormant]) == 0
    live = [i for i in range(32) if i not in dormant]
    assert torch.equal(first.weight[live], before["body.0.weight"][live])
    assert torch.equal(second.weight[:, live], before["body.2.weight"][:, live])
    for name in ("body.2.bias", "classifier.weight", "classifier.bias"):
        assert torch.equal(model.state_dict()[name], before[name])


def test_two_remedies_in_one_engine_apply_both():
    torch.manual_seed(0)
    start = MLP(64, (32, 32), 10)
    plain = one_step([], copy.deepcopy(start))
    both = one_step([WeightDecay(0.3), L2Init(0.2)], copy.deepcopy(start))
    only_decay = one_step([WeightDecay(0.3)], copy.deepcopy(start))
    # theta = theta_0 on the first step, so L2 Init adds nothing yet: the decay alone acts.
    torch.testing.assert_close(both, only_decay, rtol=0, atol=1e-7)
    assert not torch.equal(both, plain)
    decay_l2, _ = train([WeightDecay(0.01), L2Init(0.1)], epochs=3)
    decay_only, _ = train([WeightDecay(0.01)], epochs=3)
    l2_only, _ = train([L2Init(0.1)], epochs=3)
    assert not torch.equal(flat_params(decay_l2), flat_params(decay_only))
    assert not torch.equal(flat_params(decay_l2), flat_params(l2_only))


# --------------------------------------------------------------------------- engines


def test_auto_engine_keeps_the_fast_engine_unless_a_remedy_has_no_compiled_form(capsys):
    import plasticollapse.training as training

    mlp = MLP(64, (16,), 10)
    assert isinstance(make_engine("auto", mlp, 0.01, 1), FastEngine)
    boundary_only = [ShrinkPerturb(0.6, 0.01), ReDo(0.1), ResetAll(), ResetHead()]
    assert isinstance(make_engine("auto", mlp, 0.01, 1, boundary_only), FastEngine)
    every_step = [
        WeightDecay(0.01),
        L2Init(0.01),
        ContinualBackprop(1e-4, 0.99, 100, "contribution"),
    ]
    for remedy in every_step:
        remedy.bind(mlp, RemedyContext(seed=0, num_classes=10))
    assert isinstance(make_engine("auto", mlp, 0.01, 1, every_step), FastEngine)
    training.engine_choice._SAID.clear()
    remedy = NC1Regulariser(0.05, 200.0)
    assert type(make_engine("auto", mlp, 0.01, 1, [remedy])) is ReferenceEngine
    with pytest.raises(ValueError, match="nc1_reg"):
        make_engine("fast", mlp, 0.01, 1, [remedy])
    normed = MLP(64, (16,), 10, layer_norm=True)
    for _ in range(2):
        assert type(make_engine("auto", normed, 0.01, 1)) is ReferenceEngine
    err = capsys.readouterr().err
    assert err.count("engine auto:") == 2 and err.count("LayerNorm") == 1  # once each
    assert "nc1_reg" in err


def test_remedies_import_no_engine():
    """Compiled forms of remedies live with the engines and depend on the remedies, not
    the reverse (docs/architecture.md): no module of remedies/ imports engines/, even
    inside a function."""
    import ast
    from pathlib import Path

    import plasticollapse.remedies as package

    offenders = []
    for path in sorted(Path(package.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            offenders += [f"{path.name}: {n}" for n in names if "plasticollapse.engines" in n]
    assert offenders == []


def test_the_fast_engine_runs_only_the_continual_backprop_it_compiles():
    """The engine recognises Continual Backprop by its exact class (a subclass may compute
    something else, and then runs in the reference engine), and runs one at most."""
    from plasticollapse.engines.fast_plan import merge_terms

    mlp = MLP(64, (16,), 10)

    class Tweaked(ContinualBackprop):
        pass

    cbps = [cls(1e-4, 0.99, 100, "contribution") for cls in (ContinualBackprop, Tweaked)]
    for remedy in cbps:
        remedy.bind(mlp, RemedyContext(seed=0, num_classes=10))
    assert merge_terms([cbps[0]]).generate_and_test is cbps[0]
    assert "acts at every step (after_step)" in merge_terms([cbps[1]])
    assert "two generate-and-test" in merge_terms([cbps[0], copy.copy(cbps[0])])
    with pytest.raises(ValueError, match="after_step"):
        FastEngine(mlp, 0.01, [cbps[1]])


# --------------------------------------------------------------------------- in both studies

# The studies' own tiny runs (digits, 200 samples, a 16-16 or 16 MLP), with ReDo's threshold
# raised and Continual Backprop's rate and maturity changed so that they act in so short a
# run.
SHORT = {"redo_tau": 0.5, "cbp_replacement_rate": 0.01, "cbp_maturity": 5}
PERMUTED = {**test_permuted.TINY, "engine": "auto", "batch_size": 8, "tasks": 3, **SHORT}
# (batch_size 8: the NC1 regulariser needs two classes)
WARMSTART = {**test_warmstart.TINY, "threads": 1, **SHORT}
#: Remedies whose warm-start action is on the probe's start only: the warm-up stays plain.
PROBE_ONLY = {"shrink_perturb", "reset_head", "reset_all"}


def run_rows(study, out, **fields):
    base = {**(PERMUTED if study == "permuted" else WARMSTART), "out": str(out), **fields}
    config_class = PermutedConfig if study == "permuted" else WarmstartConfig
    (spec,) = plan(study, Study(config_class, base, {}))
    assert execute(spec) == "done"
    return [
        {k: v for k, v in r.items() if k != "seconds"}
        for r in RunFolder(spec.folder).read_metrics()
    ]


@pytest.fixture(scope="module")
def plain_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain")
    return {s: run_rows(s, out / s) for s in ("permuted", "warmstart")}


@pytest.mark.parametrize("study", ["permuted", "warmstart"])
@pytest.mark.parametrize("name", [n for n in REMEDIES if n != "plain"])
def test_every_remedy_runs_in_both_studies_and_changes_the_rows(tmp_path, plain_rows, study, name):
    rows = run_rows(study, tmp_path, remedies=(name,))
    plain = plain_rows[study]
    assert [r.get("task", r.get("epoch")) for r in rows] == [
        r.get("task", r.get("epoch")) for r in plain
    ]
    # The numbers change, not only the keys.
    numbers = ("loss", "nc1", "full_test_acc", "finetune_train_acc")
    assert [[r.get(k) for k in numbers] for r in rows] != [
        [r.get(k) for k in numbers] for r in plain
    ]
    resets = [r["redo_units_reset"] for r in rows if "redo_units_reset" in r]
    if name == "redo":
        assert len(resets) == 2  # tasks 1 and 2 / epochs 2 and 4
        assert sum(resets) > 0
    else:
        assert resets == []
    replaced = [r.get("cbp_units_replaced") for r in rows]
    if name == "cbp":
        assert all(n is not None for n in replaced) and sum(replaced) > 0
    else:
        assert set(replaced) == {None}
    if study == "warmstart" and name in PROBE_ONLY:
        # The warm-up is plain; only the probes start from changed weights.
        assert [r["nc1"] for r in rows] == [r["nc1"] for r in plain]
        assert [r["full_test_acc"] for r in rows] != [r["full_test_acc"] for r in plain] or [
            r["finetune_train_acc"] for r in rows
        ] != [r["finetune_train_acc"] for r in plain]


@pytest.mark.parametrize("study", ["permuted", "warmstart"])
def test_a_combination_applies_both_remedies(tmp_path, study):
    both = run_rows(study, tmp_path / "both", remedies=("shrink_perturb", "l2_init"))
    sp = run_rows(study, tmp_path / "sp", remedies=("shrink_perturb",))
    l2 = run_rows(study, tmp_path / "l2", remedies=("l2_init",))
    assert both != sp and both != l2
    if study == "warmstart":  # the warm-up is L2 Init's alone; the probes differ
        assert [r["nc1"] for r in both] == [r["nc1"] for r in l2]


def test_scheme_is_an_alias_of_one_remedy(tmp_path):
    for name in ("l2_init", "redo"):
        by_scheme = run_rows("warmstart", tmp_path / f"s_{name}", scheme=name)
        by_list = run_rows("warmstart", tmp_path / f"r_{name}", remedies=(name,))
        assert by_scheme == by_list


def test_permuted_runs_use_the_fast_engine_unless_a_remedy_needs_autograd(tmp_path, monkeypatch):
    import plasticollapse.engines as engines
    import plasticollapse.training as training

    made = []
    real = training.make_engine

    def recording(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(training, "make_engine", recording)
    fields = dict(batch_size=1, tasks=2)
    plain = run_rows("permuted", tmp_path / "plain", **fields)
    sp = run_rows("permuted", tmp_path / "sp", remedies=("shrink_perturb",), **fields)
    run_rows("permuted", tmp_path / "l2", remedies=("l2_init", "cbp"), **fields)
    normed = run_rows("permuted", tmp_path / "ln", layer_norm=True, remedies=("l2_init",), **fields)
    assert [type(e) for e in made] == [FastEngine, FastEngine, FastEngine, ReferenceEngine]
    assert all(isinstance(e, engines.Engine) for e in made)
    # Task 0 is the same; Shrink & Perturb acts on the fast engine's model before task 1.
    assert sp[0] == plain[0] and sp[1]["loss"] != plain[1]["loss"]
    assert normed[0]["loss"] != plain[0]["loss"]  # layer norm with L2 Init: both apply
    crelu = run_rows("permuted", tmp_path / "crelu", crelu=True, **fields)
    assert type(made[-1]) is ReferenceEngine and crelu[0]["loss"] != plain[0]["loss"]
    assert "dormant_fraction_layer2" in crelu[0]  # its CReLU outputs are measured
    from plasticollapse.studies.permuted.config import run_label

    assert run_label(PermutedConfig(layer_norm=True, crelu=True)) == "fte1_ln_crelu"


ENGINE_PAIRS = {
    "weight_decay": {"weight_decay": 0.01},
    "l2_init": {},
    "cbp": {},
    "etf_head": {},
    "shrink_perturb": {"shrink_perturb_every": 50},
    "redo": {"redo_every": 40},
    "reset_all": {},
    "reset_head": {},
}


class ShadowedFastEngine:
    """The fast engine, with a float32 reference engine teacher-forced from it before every
    pass (tests/shadow.py): the study trains and measures the fast engine's network, and
    each pass is also compared with the reference's pass from the same parameters and
    remedy state (two free-running trajectories would part wherever a rounding-level ReLU
    flip happens, which depends on the CPU)."""

    name = "fast"

    def __init__(self, model, lr, remedies):
        self.fast = FastEngine(model, lr, remedies)
        self.model, self.remedies = model, list(remedies)
        self.twin_model = copy.deepcopy(model)
        self.twin_remedies = []
        for remedy in self.remedies:
            twin = copy.deepcopy(remedy)
            twin.bind(self.twin_model, remedy.context)
            self.twin_remedies.append(twin)
        self.twin = ReferenceEngine(self.twin_model, lr, 1, self.twin_remedies)
        self.segments = []

    def train(self, x, y, order, columns=None):
        with torch.no_grad():
            for p, q in zip(self.twin_model.parameters(), self.model.parameters(), strict=True):
                p.copy_(q)
        for twin, remedy in zip(self.twin_remedies, self.remedies, strict=True):
            twin.load_state_dict(remedy.state_dict())
        stats = self.fast.train(x, y, order, columns)
        twin_stats = self.twin.train(x, y, order, columns)
        agree = same_state(self.remedies, self.twin_remedies)
        self.segments.append(
            Segment(worst_error(self.twin_model, self.model), stats, twin_stats, agree)
        )
        return stats


@pytest.mark.parametrize("name", sorted(ENGINE_PAIRS))
def test_each_remedy_gives_the_same_passes_in_both_engines(tmp_path, monkeypatch, name):
    """The permuted study at batch size 1 with each remedy (its boundary hooks between the
    passes): every pass of the fast engine agrees with the reference engine's pass from the
    same parameters and remedy state, and both engines' runs write the same keys."""
    import plasticollapse.training as training

    fields = {"batch_size": 1, "tasks": 3, "remedies": (name,), **ENGINE_PAIRS[name]}
    reference = run_rows("permuted", tmp_path / "reference", engine="reference", **fields)
    made = []

    def shadowed(choice, model, lr, batch_size, remedies=()):
        made.append(ShadowedFastEngine(model, lr, remedies))
        return made[-1]

    monkeypatch.setattr(training, "make_engine", shadowed)
    fast = run_rows("permuted", tmp_path / "fast", engine="fast", **fields)
    (engine,) = made
    assert len(engine.segments) == 4  # two epochs of task 0, then tasks 1 and 2
    Shadowed(engine.segments, engine.model).assert_agrees(max_parted=1)
    assert [row.keys() for row in fast] == [row.keys() for row in reference]


def test_a_run_killed_inside_a_task_does_not_repeat_the_task_start(tmp_path, monkeypatch):
    """ReDo acts once at the start of task 1; a kill in that task's second epoch resumes
    from the mid-task checkpoint, without recycling again, to the uninterrupted rows."""
    from plasticollapse.studies.permuted import run as permuted

    fields = dict(remedies=("redo",), epochs_per_task=2, first_task_epochs=1)
    reference = run_rows("permuted", tmp_path / "whole", **fields)
    (spec,) = plan(
        "permuted", Study(PermutedConfig, {**PERMUTED, **fields, "out": str(tmp_path / "k")}, {})
    )
    real_order = permuted.sample_order

    def killed(seed, task, epoch, n):
        if (task, epoch) == (1, 1):
            raise KeyboardInterrupt
        return real_order(seed, task, epoch, n)

    monkeypatch.setattr(permuted, "sample_order", killed)
    with pytest.raises(KeyboardInterrupt):
        execute(spec)
    monkeypatch.setattr(permuted, "sample_order", real_order)
    calls = []
    real_start = ReDo.at_task_start

    def counting(self, *args):
        calls.append(args[2])
        return real_start(self, *args)

    monkeypatch.setattr(ReDo, "at_task_start", counting)
    assert execute(spec) == "resumed"
    assert calls == [2]  # task 1's start was not repeated
    rows = [
        {k: v for k, v in r.items() if k != "seconds"}
        for r in RunFolder(spec.folder).read_metrics()
    ]
    assert rows == reference


# --------------------------------------------------------------------------- configs


def test_remedies_parse_from_the_command_line_and_a_preset(tmp_path):
    (config,) = parse_study(
        PermutedConfig, None, ["--remedies", "shrink_perturb", "l2_init", "--shrink", "0.5"]
    ).expand()
    assert config.remedies == ("shrink_perturb", "l2_init") and config.shrink == 0.5
    assert [type(r) for r in build_remedies(config)] == [ShrinkPerturb, L2Init]
    assert build_remedies(config)[0] == ShrinkPerturb(shrink=0.5, perturb=0.01)
    preset = tmp_path / "p.toml"
    preset.write_text('remedies = ["redo", "weight_decay"]\nweight_decay = 0.001\n')
    (config,) = parse_study(WarmstartConfig, preset, ["--model", "mlp"]).expand()
    assert [(type(r), dataclasses.astuple(r)) for r in build_remedies(config)] == [
        (ReDo, (0.1, 0)),
        (WeightDecay, (0.001,)),
    ]


def test_weight_decay_rules_of_the_warm_start_hold_for_remedies_too():
    assert WarmstartConfig(scheme="weight_decay").warmup_weight_decay == 0.01
    assert WarmstartConfig(remedies=("weight_decay",)).warmup_weight_decay == 0.01
    assert WarmstartConfig(remedies=("weight_decay",), weight_decay=0.1).warmup_weight_decay == 0.1
    # An explicit decay applies whatever the remedies; unset, none.
    assert remedy_names(WarmstartConfig(scheme="l2_init", weight_decay=0.001)) == (
        "l2_init",
        "weight_decay",
    )
    assert WarmstartConfig(scheme="l2_init").warmup_weight_decay == 0.0
    assert remedy_names(PermutedConfig()) == ()


@pytest.mark.parametrize(
    ("config_class", "fields", "words"),
    [
        (PermutedConfig, {"remedies": ("bogus",)}, ["remedies", "bogus", "shrink_perturb"]),
        (PermutedConfig, {"remedies": ("redo", "redo")}, ["twice"]),
        (PermutedConfig, {"shrink": -1.0}, ["shrink must be >= 0"]),
        (PermutedConfig, {"nc1_clip": 0.0}, ["nc1_clip must be > 0"]),
        (PermutedConfig, {"remedies": ("nc1_reg",)}, ["nc1_reg", "batch_size >= 2"]),
        (
            PermutedConfig,
            {"remedies": ("nc1_reg",), "batch_size": 4, "engine": "fast"},
            ["fast", "nc1_reg"],
        ),
        (PermutedConfig, {"layer_norm": True, "engine": "fast"}, ["fast", "layer_norm"]),
        (PermutedConfig, {"remedies": ("cbp",), "crelu": True}, ["cbp", "crelu"]),
        (PermutedConfig, {"remedies": ("redo",), "crelu": True}, ["redo", "crelu"]),
        (PermutedConfig, {"cbp_decay_rate": 1.0}, ["cbp_decay_rate", "(0, 1)"]),
        (PermutedConfig, {"cbp_replacement_rate": -1e-4}, ["cbp_replacement_rate"]),
        (PermutedConfig, {"cbp_utility": "weight"}, ["cbp_utility", "adaptable_contribution"]),
        (PermutedConfig, {"etf_scale": 0.0}, ["etf_scale must be > 0"]),
        (PermutedConfig, {"redo_every": -1}, ["redo_every must be >= 0"]),
        (WarmstartConfig, {"scheme": "shrink_perturb", "shrink_perturb_every": 10}, ["probe"]),
        (WarmstartConfig, {"remedies": ("weight_decay",), "weight_decay": 0.0}, ["> 0"]),
        (WarmstartConfig, {"scheme": "redo", "remedies": ("l2_init",)}, ["not both"]),
    ],
)
def test_bad_remedy_settings_are_named(config_class, fields, words):
    with pytest.raises(ConfigError) as info:
        config_class(**fields)
    for word in words:
        assert word in str(info.value)


def test_the_legacy_hash_still_names_the_folders_from_before_remedies_became_objects():
    """The quick presets' folder names from before remedies became objects: what the legacy
    hash must reproduce for :func:`plan` to find (and rename) those folders."""
    from plasticollapse.runs.config import from_dict
    from plasticollapse.runs.identity import legacy_config_hash

    def legacy_name(spec):
        config_class = PermutedConfig if spec.experiment == "permuted" else WarmstartConfig
        config = from_dict(config_class, spec.config)
        return spec.run_id.rsplit("_", 1)[0] + "_" + legacy_config_hash(config)

    names = {
        legacy_name(s)
        for study, preset in (("permuted", "permuted_digits"), ("warmstart", "warmstart_digits"))
        for s in plan(
            study,
            parse_study(
                PermutedConfig if study == "permuted" else WarmstartConfig,
                f"configs/quick/{preset}.toml",
                [],
            ),
        )
    }
    assert names == {
        "fte1_seed0_345342be", "fte1_seed1_f2460a5b", "fte5_seed0_a9c6d70c",
        "fte5_seed1_a59e4a3a", "fte20_seed0_08e51b84", "fte20_seed1_e8ce7f1a",
        "plain_seed0_4d18b3e1", "plain_seed1_8e015ea8", "shrink_perturb_seed0_315279da",
        "shrink_perturb_seed1_174dfb8b", "nc1_reg_seed0_9dd93a6b", "nc1_reg_seed1_ab3993ca",
        "weight_decay_wd0.01_seed0_127e78ee", "weight_decay_wd0.01_seed1_d7f483d0",
        "l2_init_seed0_250e4db6", "l2_init_seed1_83862ed4", "redo_seed0_80a7f10f",
        "redo_seed1_fe56b9b6",
    }  # fmt: skip


def test_the_legacy_hash_takes_an_unapplied_remedys_parameters_at_their_defaults():
    # A preset that sets Continual Backprop's rate still finds the plain runs named before
    # (they were made at the default); a run that applies CBP counts its rate.
    from plasticollapse.runs.identity import legacy_config_hash

    plain, plain_set = PermutedConfig(), PermutedConfig(cbp_replacement_rate=4.2e-5)
    assert legacy_config_hash(plain_set) == legacy_config_hash(plain)
    cbp = PermutedConfig(remedies=("cbp",))
    cbp_set = PermutedConfig(remedies=("cbp",), cbp_replacement_rate=4.2e-5)
    assert legacy_config_hash(cbp_set) != legacy_config_hash(cbp)


@pytest.mark.parametrize("config_class", [PermutedConfig, WarmstartConfig])
def test_every_config_field_has_a_help_line(config_class):
    for f in dataclasses.fields(config_class):
        text = field_help(config_class, f.name)
        assert text and "\n" not in text, f.name


# --------------------------------------------------------------------------- new remedies


def test_simplex_etf_has_unit_rows_at_cosine_minus_one_over_c_minus_one():
    from plasticollapse.models import simplex_etf

    for classes, dim in ((10, 100), (3, 3), (2, 5)):
        w = simplex_etf(classes, dim, scale=2.0, generator=torch.Generator().manual_seed(0))
        assert w.shape == (classes, dim)
        gram = (w.double() @ w.double().T) / 4.0  # rows of norm 2
        expected = torch.full((classes, classes), -1.0 / (classes - 1), dtype=torch.float64)
        expected.fill_diagonal_(1.0)
        torch.testing.assert_close(gram, expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(w.sum(0), torch.zeros(dim), rtol=0, atol=1e-5)  # centred
    with pytest.raises(ValueError, match="dimension >= 10"):
        simplex_etf(10, 9)


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_etf_head_stays_fixed_while_the_body_trains_and_remedies_leave_it_alone(engine):
    from plasticollapse.remedies.etf_head import ETFHead

    x, y = DIGITS[0][:400], DIGITS[1][:400]
    torch.manual_seed(0)
    model = MLP(64, (32, 32), 10)
    body = flat_params(model)[: -(10 * 32 + 10)]
    remedies = [ETFHead(1.0), ContinualBackprop(0.01, 0.9, 5, "adaptable_contribution")]
    remedies += [ShrinkPerturb(0.5, 0.1, 150), ReDo(0.5, 100)]
    for remedy in remedies:
        remedy.bind(model, RemedyContext(seed=3, num_classes=10))
    head = model.classifier.weight.detach().clone()
    torch.testing.assert_close(head.norm(dim=1), torch.ones(10))
    make = FastEngine if engine == "fast" else ReferenceEngine
    trainer = make(model, 0.05, remedies) if engine == "fast" else make(model, 0.05, 1, remedies)
    stats = trainer.train(x, y, torch.randperm(400, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(model.classifier.weight, head)  # trained, shrunk, recycled: fixed
    assert torch.count_nonzero(model.classifier.bias) == 0
    assert not torch.equal(flat_params(model)[: len(body)], body)  # the body learnt
    assert stats.extra["cbp_units_replaced"] > 0 and stats.extra["redo_units_reset"] >= 0
    assert stats.accuracy > 0.3  # it learns through a fixed head


def test_reset_all_is_a_fresh_network_and_reset_head_only_a_fresh_classifier():
    torch.manual_seed(0)
    model = MLP(64, (32, 32), 10)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # far from any initialisation
    trained = snapshot(model)
    head, everything = ResetHead(), ResetAll()
    head.bind(model, RemedyContext(seed=4, num_classes=10))
    head.at_task_start(model, None, 7, DIGITS[0][:8])
    fresh = dict(fresh_like(model, generator_for(4, "reset_head", 7)).named_parameters())
    for name, param in model.named_parameters():
        want = fresh[name] if name.startswith("classifier") else trained[name]
        assert torch.equal(param, want), name
    everything.bind(model, RemedyContext(seed=4, num_classes=10))
    everything.at_task_start(model, None, 7, DIGITS[0][:8])
    fresh = dict(fresh_like(model, generator_for(4, "reset_all", 7)).named_parameters())
    assert all(torch.equal(p, fresh[n]) for n, p in model.named_parameters())


def test_mlp_options_layer_norm_and_crelu():
    from torch import nn

    from plasticollapse.models import CReLU

    torch.manual_seed(0)
    model = MLP(64, (16, 8), 10, layer_norm=True, crelu=True)
    kinds = [type(m) for m in model.body]
    assert kinds == [nn.Linear, nn.LayerNorm, CReLU, nn.Linear, nn.LayerNorm, CReLU]
    assert model.hidden_linears[1].in_features == 32 and model.classifier.in_features == 16
    x = DIGITS[0][:5]
    logits, hidden = model.forward_hidden(x)
    assert torch.equal(logits, model(x)) and [h.shape[1] for h in hidden] == [32, 16]
    z = torch.tensor([[-1.0, 2.0]])
    assert CReLU()(z).tolist() == [[0.0, 2.0, 1.0, 0.0]]
    # fresh_like (Shrink & Perturb, ReDo, resets) rebuilds the same architecture
    assert [type(m) for m in fresh_like(model).body] == kinds
