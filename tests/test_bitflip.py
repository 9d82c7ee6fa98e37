"""The bit-flipping study (Dohare et al.'s slowly-changing regression), end to end on tiny runs.

Every run here has a few hundred steps of a tiny network: well under a second each.
"""

import copy
import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch

from plasticollapse import cli
from plasticollapse.engines import ReferenceEngine
from plasticollapse.models import MLP
from plasticollapse.remedies import build_remedies
from plasticollapse.runs.config import ConfigError, Study
from plasticollapse.runs.folder import RunFolder
from plasticollapse.studies.base import execute, plan
from plasticollapse.studies.bitflip_regression import config as bitflip_config
from plasticollapse.studies.bitflip_regression import run as bitflip
from plasticollapse.studies.bitflip_regression import stream
from plasticollapse.studies.bitflip_regression.config import Config
from plasticollapse.studies.report_command import main_report

TINY = {
    "flip_after": 40,
    "tasks": 4,
    "hidden": (6, 4),
    "outputs": 2,
    "lr": 0.02,
    "eval_samples": 64,
    "progress": False,
}
LAYER_KEYS = [f"{m}_layer{k}" for k in (1, 2) for m in bitflip.LAYER_KEYS]
MEASURED_KEYS = (
    "eval_loss",
    "nrc1",
    "nrc2",
    "nrc3",
    "dormant_fraction",
    "dead_fraction",
    "effective_rank",
    "srank",
    "stable_rank",
    "weight_magnitude",
)
OPT_IN_KEYS = (
    "plasticity_score",
    "probe_loss_before",
    "probe_loss_after",
    "retrained_loss",
    "retrained_gap",
    "task0_eval_loss",
)


def spec_for(out, **fields):
    study = Study(Config, {**TINY, "out": str(out), **fields}, {})
    (spec,) = plan("bitflip_regression", study)
    return spec


def rows_of(spec):
    return RunFolder(spec.folder).read_metrics()


def without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


# --------------------------------------------------------------------------- the source


def test_protocol_constants_equal_the_source():
    # Read from github.com/shibhansh/loss-of-plasticity:
    # lop/slowly_changing_regression/cfg/prob.json: "num_inputs": 20, "num_flipping_bits": 15,
    #   "flip_after": 10000, "num_target_features": 100, "beta": 0.7 (no "flip_one": all
    #   flipping bits are redrawn, slowly_changing_regression.py's flip_one=False branch);
    # lop/slowly_changing_regression/cfg/sgd/bp/relu.json: "num_features": 5,
    #   "hidden_activation": "relu", "opt": "sgd", "step_size": [0.01, 0.003, 0.001],
    #   "num_data_points": 1e6;
    # lop/nets/fix_ltu_net.py: one output, weights and biases in {-1, +1}.
    source = {
        "num_inputs": 20,
        "num_flipping_bits": 15,
        "flip_after": 10000,
        "num_target_features": 100,
        "beta": 0.7,
        "num_features": 5,
        "hidden_activation": "relu",
        "opt": "sgd",
        "step_size": [0.01, 0.003, 0.001],
        "num_data_points": 1e6,
    }
    assert source == bitflip_config.SOURCE
    c = Config()
    assert (c.inputs, c.flipping_bits, c.flip_after) == (20, 15, 10000)
    assert (c.target_hidden, c.beta, c.outputs, c.flip) == (100, 0.7, 1, "redraw")
    assert c.hidden == (5,) and c.lr == source["step_size"][0]
    assert c.tasks * c.flip_after == source["num_data_points"]
    assert c.remedies == ()  # plain SGD: "agent": "bp", no weight decay


def test_the_learner_is_the_sources_network():
    """FFNN(20, 5, relu): Linear(20, 5), ReLU, Linear(5, 1), Kaiming-uniform (ReLU gain) in,
    Kaiming-uniform (linear gain) out, zero biases."""
    torch.manual_seed(0)
    model = MLP(20, (5,), 1)
    first, head = model.hidden_linears[0], model.classifier
    assert first.weight.shape == (5, 20) and head.weight.shape == (1, 5)
    assert first.bias.abs().sum() == 0 and head.bias.abs().sum() == 0
    assert first.weight.abs().max() <= math.sqrt(6 / 20)  # gain sqrt(2): bound sqrt(6/fan_in)
    assert head.weight.abs().max() <= math.sqrt(3 / 5)  # gain 1: bound sqrt(3/fan_in)


# --------------------------------------------------------------------------- the stream


def test_ltu_target_by_hand():
    # One LTU unit on m = 2 inputs: w = (1, -1), b = 1, beta = 0.7.
    # S = (m - sum w + b) / 2 = (2 - 0 + 1) / 2 = 1.5; tau = 0.7 * 3 - 1.5 = 0.6.
    # Pre-activations w.x + b on 00, 01, 10, 11: 1, 0, 2, 1 -> fire (> 0.6): 1, 0, 1, 1.
    # Output w2 f + b2 with w2 = -1, b2 = 1: 0, 1, 0, 0.
    torch.manual_seed(0)
    w1, b1 = torch.tensor([[1.0, -1.0]]), torch.tensor([1.0])
    target = stream.TargetNetwork(
        w1, b1, torch.tensor([0.6]), torch.tensor([[-1.0]]), torch.ones(1)
    )
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    assert target.features(x).flatten().tolist() == [1, 0, 1, 1]
    assert target(x).flatten().tolist() == [0, 1, 0, 0]


def test_target_network_matches_a_brute_force_float64_reference():
    m, hidden, outputs, beta = 6, 9, 2, 0.7
    target = stream.target_network(3, m, hidden, outputs, beta)
    for w in (target.w1, target.b1, target.w2, target.b2):
        assert set(w.unique().tolist()) <= {-1.0, 1.0}
    x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=m)))
    w1, b1 = target.w1.double().numpy(), target.b1.double().numpy()
    w2, b2 = target.w2.double().numpy(), target.b2.double().numpy()
    expected = np.zeros((len(x), outputs))
    for i, xi in enumerate(x.double().numpy()):
        for j in range(hidden):
            s = (m - w1[j].sum() + b1[j]) / 2  # the source's S
            fires = float(w1[j] @ xi + b1[j] > beta * (m + 1) - s)
            expected[i] += w2[:, j] * fires
        expected[i] += b2
    assert np.array_equal(target(x).double().numpy(), expected)
    # A seed fixes the target; another seed draws another.
    again = stream.target_network(3, m, hidden, outputs, beta)
    assert torch.equal(again.w1, target.w1) and torch.equal(again.tau, target.tau)
    assert not torch.equal(stream.target_network(4, m, hidden, outputs, beta).w1, target.w1)


@pytest.mark.parametrize("mode", ["redraw", "one"])
def test_flipping_bits_hold_for_a_period_and_change_between(mode):
    seed, m, f, n = 5, 20, 15, 300
    periods = [stream.task_inputs(seed, t, n, m, f, mode) for t in range(12)]
    for x in periods:
        assert set(x.unique().tolist()) <= {0.0, 1.0}
        assert (x[:, :f] == x[0, :f]).all()  # the flipping bits: one value per period
        assert len({tuple(r) for r in x[:, f:].tolist()}) > 20  # the rest: fresh every step
    changed = [int((a[0, :f] != b[0, :f]).sum()) for a, b in itertools.pairwise(periods)]
    if mode == "one":
        assert changed == [1] * 11
    else:  # redrawn: each bit changes with probability 1/2
        assert 0.3 < np.mean(changed) / f < 0.7
    # Resumable: period t computed again from scratch is the same draw.
    assert torch.equal(stream.task_inputs(seed, 9, n, m, f, mode), periods[9])
    eval_inputs = stream.task_inputs(seed, 9, n, m, f, mode, purpose="eval")
    assert torch.equal(eval_inputs[:, :f], periods[9][:, :f])
    assert not torch.equal(eval_inputs, periods[9])


# --------------------------------------------------------------------------- training


def manual_sgd(params, x, y, lr, margins=None):
    """Prequential SGD on the squared error of a ReLU MLP, by hand, in float64.

    ``params`` are (W_1, b_1, ..., W_L, b_L); the loss of a step is the mean over outputs of
    (f - y)^2, scored before its update. ``margins``, if given, receives every hidden
    pre-activation's smallest |z| of the pass: a float32 engine follows this trajectory
    only while no |z| is within its rounding of 0 (no ReLU flips)."""
    layers = [[p.copy() for p in params[i : i + 2]] for i in range(0, len(params), 2)]
    errors = []
    for xi, yi in zip(x, y, strict=True):
        acts, pre = [xi], []
        for w, b in layers[:-1]:
            pre.append(w @ acts[-1] + b)
            acts.append(np.maximum(pre[-1], 0))
        f = layers[-1][0] @ acts[-1] + layers[-1][1]
        errors.append(np.mean((f - yi) ** 2))
        if margins is not None:
            margins.append(min(float(np.abs(z).min()) for z in pre))
        g = 2 * (f - yi) / len(yi)  # dL/df of the mean over outputs
        for k in range(len(layers) - 1, -1, -1):
            w, b = layers[k]
            below = (w.T @ g) * (pre[k - 1] > 0) if k > 0 else None
            layers[k] = [w - lr * np.outer(g, acts[k]), b - lr * g]
            g = below
    return float(np.mean(errors)), tuple(p for layer in layers for p in layer)


def test_train_period_is_prequential_sgd_on_the_squared_error():
    torch.manual_seed(0)
    model = MLP(5, (4,), 2).double()
    x = torch.randint(0, 2, (30, 5)).double()
    y = torch.randn(30, 2, dtype=torch.float64)
    params = [p.detach().numpy().copy() for p in model.parameters()]
    expected_loss, expected = manual_sgd(params, x.numpy(), y.numpy(), lr=0.05)
    engine = ReferenceEngine(model, 0.05, 1, (), loss="squared_error")
    loss = bitflip.train_period(engine, x, y).loss
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    for p, e in zip(model.parameters(), expected, strict=True):
        assert np.allclose(p.detach().numpy(), e, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("hidden", [(4,), (6, 3)])
def test_the_fast_engines_squared_error_is_prequential_sgd_too(hidden):
    """``engine="fast"``: the compiled batch-1 pass on the squared error takes the float64
    steps of :func:`manual_sgd` up to float32 rounding, over a horizon where no ReLU can
    flip (every |z| stays far above the rounding: checked). Tolerance: 40 steps of float32
    rounding (eps 6e-8) on weights of order 1 grow to ~1e-6; 2e-5 leaves room."""
    torch.manual_seed(0)
    model = MLP(5, hidden, 2)
    x = torch.randint(0, 2, (40, 5)).float()
    y = torch.randn(40, 2)
    params = [p.detach().double().numpy().copy() for p in model.parameters()]
    margins = []
    expected_loss, expected = manual_sgd(
        params, x.double().numpy(), y.double().numpy(), 0.05, margins
    )
    assert min(margins) > 1e-4  # well posed: no pre-activation near a flip
    engine = bitflip.learner_engine(Config(engine="fast", lr=0.05), model, ())
    assert type(engine).__name__ == "FastEngine"
    stats = bitflip.train_period(engine, x, y)
    assert stats.loss == pytest.approx(expected_loss, rel=1e-5)
    assert stats.count == 40 and stats.correct == 0
    for p, e in zip(model.parameters(), expected, strict=True):
        assert np.allclose(p.detach().double().numpy(), e, rtol=0, atol=2e-5)
    # the same steps on autograd stay as close (the two engines differ by rounding only)
    torch.manual_seed(0)
    twin = MLP(5, hidden, 2)
    bitflip.train_period(bitflip.learner_engine(Config(lr=0.05), twin, ()), x, y)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=0, atol=2e-5)


def test_the_fast_engine_refuses_class_labels_for_the_squared_error():
    from plasticollapse.engines.fast import FastEngine

    engine = FastEngine(MLP(3, (4,), 2), 0.1, loss="squared_error")
    x = torch.rand(5, 3)
    with pytest.raises(ValueError, match="must be floating point"):
        engine.train(x, torch.zeros(5, dtype=torch.long), torch.arange(5))
    with pytest.raises(ValueError, match=r"shape \(5, 2\)"):
        engine.train(x, torch.zeros(5, 3), torch.arange(5))
    with pytest.raises(ValueError, match="cross_entropy or squared_error"):
        FastEngine(MLP(3, (4,), 2), 0.1, loss="hinge")


@pytest.mark.parametrize("engine", ["auto", "fast"])
def test_per_step_remedies_act_at_every_step(engine):
    """weight decay shrinks the weights against plain SGD; l2_init's term moves them less
    far from theta_0 than plain SGD does."""
    target = stream.target_network(0, 8, 20, 1, 0.7)
    x = stream.task_inputs(0, 0, 400, 8, 4, "redraw")
    y = target(x)

    def trained(**fields):
        config = Config(inputs=8, flipping_bits=4, lr=0.05, engine=engine, **fields)
        torch.manual_seed(1)
        model = MLP(8, (16,), 1)
        start = copy.deepcopy(model)
        remedies = build_remedies(config)
        for r in remedies:
            r.bind(model, bitflip.RemedyContext(seed=0, num_classes=1))
        bitflip.train_period(bitflip.learner_engine(config, model, remedies), x, y)
        drift = sum(
            float((p - q).detach().pow(2).sum())
            for p, q in zip(model.parameters(), start.parameters(), strict=True)
        )
        return sum(float(p.detach().pow(2).sum()) for p in model.parameters()), drift

    plain_norm, plain_drift = trained()
    decay_norm, _ = trained(remedies=("weight_decay",), weight_decay=0.05)
    _, l2_drift = trained(remedies=("l2_init",), l2_init_lambda=0.5)
    assert decay_norm < 0.95 * plain_norm
    assert l2_drift < 0.9 * plain_drift


def test_continual_backprop_replaces_units_under_both_engines(tmp_path):
    """Under ``engine="fast"`` the compiled pass runs Continual Backprop's generate-and-test
    step on the squared error: units are replaced, as many as on autograd (the count
    follows the units' ages and the replacement rate, not the weights' rounding)."""
    fields = {"remedies": ("cbp",), "cbp_maturity": 10, "cbp_replacement_rate": 0.05}
    counts = {}
    for engine in ("reference", "fast"):
        spec = spec_for(tmp_path / engine, engine=engine, **fields)
        assert execute(spec) == "done"
        counts[engine] = [r["cbp_units_replaced"] for r in rows_of(spec)]
    assert sum(counts["fast"]) > 0
    assert counts["fast"] == counts["reference"]


def test_task_start_remedies_see_each_new_periods_inputs(tmp_path, monkeypatch):
    from plasticollapse.remedies.shrink_perturb import ShrinkPerturb

    seen, f = [], Config().flipping_bits

    def spy(self, model, optimizer, task, inputs):
        seen.append((task, inputs[:, :f].clone()))
        return {}

    monkeypatch.setattr(ShrinkPerturb, "at_task_start", spy)
    spec = spec_for(tmp_path, remedies=("shrink_perturb",))
    execute(spec)
    assert [t for t, _ in seen] == [1, 2, 3]
    for task, bits in seen:
        expected = stream.flipping_bits(0, task, f, "redraw")
        assert (bits == expected).all()


# --------------------------------------------------------------------------- measurements


def test_exactly_collapsed_features_have_zero_nrc_and_rank_one():
    """Every live unit is c_i relu(w.x): the features lie on one ray. With the head's weight
    along c, NRC1 = NRC2 = 0 (one target), the effective rank is 1, and the all-zero unit
    is dead (and dormant)."""
    model = MLP(4, (4,), 1).double()
    w = torch.tensor([1.0, -2.0, 0.5, 1.5], dtype=torch.float64)
    c = torch.tensor([1.0, 2.0, 0.5, 0.0], dtype=torch.float64)
    with torch.no_grad():
        model.hidden_linears[0].weight.copy_(c[:, None] * w[None, :])
        model.hidden_linears[0].bias.zero_()
        model.classifier.weight.copy_(3 * c[None, :])
    x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64)
    y = torch.randn(len(x), 1, dtype=torch.float64)
    out = bitflip.measure(model, x, y)
    assert out["nrc1"] == pytest.approx(0, abs=1e-12)
    assert out["nrc2"] == pytest.approx(0, abs=1e-12)
    assert out["nrc3"] == 0
    # (ranks come from the float64 gram: zero singular values come back as ~1e-8 x the top)
    assert out["effective_rank"] == pytest.approx(1.0, abs=1e-6)
    assert out["srank"] == 1
    assert out["dead_fraction"] == 0.25 and out["dormant_fraction"] == 0.25
    assert out["nrc1_layer1"] == pytest.approx(0, abs=1e-12)
    expected = float(torch.mean((model(x).detach() - y) ** 2))
    assert out["eval_loss"] == pytest.approx(expected)


def test_rows_hold_every_key_finite(tmp_path):
    spec = spec_for(tmp_path, probe_steps=3, retrained=True, forgetting=True)
    assert execute(spec) == "done"
    rows = rows_of(spec)
    assert [r["task"] for r in rows] == [0, 1, 2, 3]
    assert [r["step"] for r in rows] == [40, 80, 120, 160]
    keys = ("loss", "pl", "seconds", *MEASURED_KEYS, *LAYER_KEYS, *OPT_IN_KEYS)
    for row in rows:
        for key in keys:
            assert key in row and math.isfinite(row[key]), key
        assert row["pl"] == pytest.approx(row["loss"] - rows[0]["loss"])
        assert row["retrained_gap"] == pytest.approx(row["loss"] - row["retrained_loss"])
        assert 0 <= row["nrc1"] <= 1 and 0 <= row["nrc2"] <= 1 and 0 <= row["nrc3"] <= 4
        assert row["plasticity_score"] < 1 and row["probe_loss_before"] > 0
    assert rows[0]["task0_eval_loss"] == rows[0]["eval_loss"]  # period 0 is the current one
    summary = RunFolder(spec.folder).read_summary()
    assert summary["status"] == "complete" and summary["tasks_done"] == 4
    assert summary["final_loss"] == rows[-1]["loss"] and summary["final_nrc1"] == rows[-1]["nrc1"]
    assert summary["best_loss"] == min(r["loss"] for r in rows)


def test_a_seed_fixes_the_rows_and_measure_every_skips_metrics(tmp_path):
    a, b = spec_for(tmp_path / "a"), spec_for(tmp_path / "b")
    c = spec_for(tmp_path / "c", seed=1, measure_every=2)
    for spec in (a, b, c):
        execute(spec)
    assert without_seconds(rows_of(a)) == without_seconds(rows_of(b))
    assert [r["loss"] for r in rows_of(a)] != [r["loss"] for r in rows_of(c)]
    assert ["nrc1" in r for r in rows_of(c)] == [True, False, True, True]  # 0, 2 and the last


def uninterrupted_and_killed_at_period_2(tmp_path, remedies):
    """(the uninterrupted run's spec, the killed run's spec, its folder): the second run
    killed by a callback at period 2, after period 1's checkpoint."""
    reference = spec_for(tmp_path / "whole", remedies=remedies)
    execute(reference)
    spec = spec_for(tmp_path / "killed", remedies=remedies)

    def kill_at_task_2(task, model, row):
        if task == 2:
            raise KeyboardInterrupt

    folder = RunFolder.open(spec.folder, "bitflip_regression", spec.config, "cpu", spec.run_id)
    config = Config(**{**TINY, "remedies": remedies, "out": str(tmp_path / "killed")})
    with pytest.raises(KeyboardInterrupt):
        bitflip.run(config, folder, callbacks=[kill_at_task_2])
    return reference, spec, folder


@pytest.mark.parametrize("remedies", [(), ("shrink_perturb", "l2_init", "redo")])
def test_killed_after_a_period_resumes_to_the_uninterrupted_rows(tmp_path, remedies):
    reference, spec, folder = uninterrupted_and_killed_at_period_2(tmp_path, remedies)
    assert [r["task"] for r in rows_of(spec)] == [0, 1]
    folder.append_metrics({"task": 2, "loss": -1.0})  # written after the last checkpoint
    assert execute(spec) == "resumed"
    assert without_seconds(rows_of(spec)) == without_seconds(rows_of(reference))
    assert execute(spec) == "skipped"


def test_a_checkpoint_from_before_the_shared_online_loop_resumes(tmp_path):
    """A period checkpoint of the study's own loop (task, loss_task0, seconds, the weights,
    the optimizer's and the remedies' states; none of the shared loop's keys) resumes to the
    uninterrupted rows: pl still counts from period 0's loss."""
    reference, spec, folder = uninterrupted_and_killed_at_period_2(tmp_path, ("l2_init",))
    state = folder.load_checkpoint()
    assert state is not None and "task_epoch" in state
    old_keys = ("task", "loss_task0", "seconds", "model", "optimizer", "remedies")
    folder.save_checkpoint({key: state[key] for key in old_keys})
    assert execute(spec) == "resumed"
    assert without_seconds(rows_of(spec)) == without_seconds(rows_of(reference))
    assert rows_of(spec)[3]["pl"] != 0.0


def test_divergence_stops_cleanly(tmp_path):
    spec = spec_for(tmp_path, lr=1e6)
    execute(spec)
    summary = RunFolder(spec.folder).read_summary()
    assert summary["status"] == "diverged" and summary["diverged"]["metric"] == "loss"


# --------------------------------------------------------------------------- config and CLI


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"flipping_bits": 21}, ["flipping_bits", "between 0 and inputs"]),
        ({"hidden": ()}, ["hidden"]),
        ({"flip_after": 0}, ["flip_after", ">= 1"]),
        ({"lr": -1.0}, ["lr"]),
        ({"flip": "all"}, ["flip", "redraw"]),
        ({"remedies": ("nc1_reg",)}, ["nc1_reg", "bitflip_regression", "classes"]),
    ],
)
def test_bad_fields_are_named(fields, words):
    with pytest.raises(ConfigError) as info:
        Config(**fields)
    for word in words:
        assert word in str(info.value)


def test_run_label_and_cost():
    assert bitflip_config.run_label(Config()) == "lr0.01"
    assert bitflip_config.run_label(Config(remedies=("redo", "l2_init"))) == "lr0.01_redo+l2_init"
    full = dataclasses.asdict(Config())
    assert bitflip_config.estimated_cost(full) == 100
    assert bitflip_config.estimated_cost({**full, "retrained": True}) == 200


def test_cli_runs_the_quick_preset_shortened_and_the_report_has_its_section(tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["bitflip_regression", "--config", "quick/bitflip_regression", "--tasks", "3"]
    argv += ["--flip_after", "30", "--out", str(out), "--progress", "false", "--backend", "serial"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 bitflip_regression run(s)" in printed and "lr0.03" in printed
    folder = main_report([out], tmp_path / "report", bootstrap=0)
    md = (folder / "report.md").read_text()
    assert "## Bit-flipping: slowly-changing regression" in md
    assert "| lr=0.03 | 2 seeds (0, 1; 2 complete)" in md
    assert (folder / "bitflip_regression/figures/bitflip_curves.png").stat().st_size > 0


def test_every_field_has_a_help_line_listed_by_the_cli(capsys):
    assert cli.main(["bitflip_regression", "--fields"]) == 0
    listed = capsys.readouterr().out
    for f in dataclasses.fields(Config):
        help_text = f.metadata.get("help", "")
        assert help_text and "\n" not in help_text, f.name
        option = "seeds" if f.name == "seed" else f.name  # one name: --seeds takes one or many
        assert f"--{option} " in listed, f.name
