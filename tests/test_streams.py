"""The shared stream machinery: per-layer collapse (known answers), the probes, the loop's
resume inside a task, remedies at task switches, engines, config errors, summary, report.

Runs are tiny digits runs (see stream_helpers.TINY): well under a second of training each.
"""

import copy
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from stream_helpers import PROBE_KEYS, TINY, rows_of, spec_for, without_seconds
from torch import nn

import plasticollapse.engines as engines
import plasticollapse.training as training
from plasticollapse.metrics.collapse import collapse_metrics
from plasticollapse.metrics.measure import LAYER_COLLAPSE_KEYS, measure_model
from plasticollapse.metrics.plasticity import capture_activations
from plasticollapse.metrics.trainability import plasticity_score
from plasticollapse.models import MLP, MaskedLinear
from plasticollapse.remedies.base import Remedy
from plasticollapse.runs.config import ConfigError, from_dict
from plasticollapse.runs.folder import RunFolder
from plasticollapse.studies.base import execute
from plasticollapse.studies.class_incremental.config import Config as ClassIncrementalConfig
from plasticollapse.studies.class_incremental.run import ClassIncrementalStream
from plasticollapse.studies.label_permuted.config import Config as LabelPermutedConfig
from plasticollapse.studies.label_permuted.run import LabelPermutedStream
from plasticollapse.studies.random_labels.config import Config as RandomLabelsConfig
from plasticollapse.studies.streams import measure
from plasticollapse.studies.streams import run as stream_run
from plasticollapse.studies.streams.model import build_model
from plasticollapse.studies.streams.stream import among, load_stream_data
from plasticollapse.studies.streams.summary import summarise_study

# --------------------------------------------------------------------------- per-layer collapse


def small_mlp():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3)
    ).double()


def test_layer_collapse_is_collapse_of_each_relu_output():
    model = small_mlp()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(60, 6, generator=g).double(), torch.randint(0, 3, (60,), generator=g)
    got = measure_model(model, x, y, 3, batch_size=7, hidden_layers=True, layer_collapse=True)
    with torch.no_grad():
        logits = model(x)
    layers = capture_activations(model, x)
    for k, a in enumerate(layers, start=1):
        want = collapse_metrics(a, y, 3, logits=logits)
        for key in LAYER_COLLAPSE_KEYS:
            assert got[f"{key}_layer{k}"] == pytest.approx(want[key], rel=1e-9, nan_ok=True), key
    # The last ReLU's output is the penultimate feature: its collapse is the network's.
    for key in LAYER_COLLAPSE_KEYS:
        assert got[f"{key}_layer2"] == pytest.approx(got[key], rel=1e-9), key
    assert "nc1_layer3" not in got
    plain = measure_model(model, x, y, 3, batch_size=7, hidden_layers=True)
    assert not any(k.startswith("nc1_layer") for k in plain)  # opt-in: existing keys unchanged
    assert plain == {k: v for k, v in got.items() if k in plain}


def test_layer_collapse_by_hand():
    """1-D features {0, 2} (class 0) and {4, 6} (class 1) in hidden layer 1: mu = 1, 5,
    mu_G = 3, Sigma_W = 1, Sigma_B = 4, so NC1 = (1 / 4) / 2 = 0.125 and
    CDNV = (1 + 1) / (2 * 4^2) = 0.0625; one point per class: exactly collapsed, NC1 = 0."""
    model = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 2)).double()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
    x = torch.tensor([[0.0], [2.0], [4.0], [6.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    got = measure_model(model, x, y, 2, hidden_layers=True, layer_collapse=True)
    assert got["nc1_layer1"] == pytest.approx(0.125, rel=1e-12)
    assert got["nc1_quotient_layer1"] == pytest.approx(1 / 4, rel=1e-12)
    assert got["cdnv_layer1"] == pytest.approx(0.0625, rel=1e-12)
    collapsed = torch.tensor([[1.0], [1.0], [5.0], [5.0]], dtype=torch.float64)
    got = measure_model(model, collapsed, y, 2, hidden_layers=True, layer_collapse=True)
    assert got["nc1_layer1"] == 0.0 and got["cdnv_layer1"] == 0.0


def test_conv_layer_collapse_reads_channel_means():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 2)
    ).double()
    x, y = torch.randn(30, 1, 4, 4).double(), torch.arange(30) % 2
    got = measure_model(model, x, y, 2, hidden_layers=True, layer_collapse=True)
    with torch.no_grad():
        a, logits = model[1](model[0](x)), model(x)
    want = collapse_metrics(a.flatten(2).mean(2), y, 2, logits=logits)
    assert got["nc1_layer1"] == pytest.approx(want["nc1"], rel=1e-9)


def test_layer_collapse_needs_hidden_layers():
    with pytest.raises(ValueError, match="pass hidden_layers=True"):
        measure_model(small_mlp(), torch.randn(4, 6).double(), torch.arange(4) % 3, 3,
                      layer_collapse=True)  # fmt: skip


# --------------------------------------------------------------------------- the probes


def no_probes(**fields):
    return {"plasticity_probe": False, "retrained_baseline": False, "forgetting": False, **fields}


@pytest.mark.parametrize("engine", ["auto", "fast"])  # fast: the probe's steps compiled too
def test_the_probes_leave_training_and_measurement_unchanged(tmp_path, engine):
    probed = spec_for("label_permuted", tmp_path / "probed", engine=engine)
    plain = spec_for("label_permuted", tmp_path / "plain", **no_probes(engine=engine))
    execute(probed), execute(plain)
    stripped = [
        {k: v for k, v in row.items() if k not in ("seconds", *PROBE_KEYS)}
        for row in rows_of(probed)
    ]
    assert stripped == without_seconds(rows_of(plain))


def test_a_fresh_network_drawn_like_the_run_retrains_task_0_to_its_numbers(tmp_path, monkeypatch):
    """With the retrained network's seed equal to the run's, task 0's fresh network is the
    run's own initial network, trained on the same samples in the same orders."""
    monkeypatch.setattr(measure, "derived_seed", lambda seed, *keys: seed)
    spec = spec_for("random_labels", tmp_path, **no_probes(retrained_baseline=True))
    execute(spec)
    first = rows_of(spec)[0]
    assert first["retrained_accuracy"] == first["accuracy"] and first["retrained_gap"] == 0
    assert first["retrained_test_accuracy"] == first["test_accuracy"]


def test_forgetting_is_accuracy_on_task_0_data(tmp_path):
    spec = spec_for("label_permuted", tmp_path, **no_probes(forgetting=True, measure_samples=0))
    execute(spec)
    rows = rows_of(spec)
    assert rows[0]["task0_accuracy"] == rows[0]["eval_accuracy"]
    assert rows[0]["task0_test_accuracy"] == rows[0]["test_accuracy"]
    assert all(r["task0_accuracy"] != rows[0]["task0_accuracy"] for r in rows[1:])


def test_the_plasticity_probe_scores_the_network_at_the_switch(tmp_path):
    fields = no_probes(plasticity_probe=True, probe_steps=3, probe_lr=0.2)
    spec = spec_for("label_permuted", tmp_path, **fields)
    ends = {}

    def keep(task, model, row):
        ends[task] = copy.deepcopy(model)

    config = LabelPermutedConfig(**{**TINY["label_permuted"], **fields, "out": str(tmp_path)})
    folder = RunFolder.open(spec.folder, "label_permuted", spec.config, "cpu", spec.run_id)
    stream_run.run_stream(config, folder, [keep], make_stream=LabelPermutedStream)
    rows = rows_of(spec)
    stream = LabelPermutedStream(config, load_stream_data(config, torch.device("cpu")))
    task = stream.task(1)
    idx = among(task.train, config.probe_samples, config.seed, "probe", 1)
    with torch.no_grad():
        before = F.cross_entropy(ends[0](task.x[idx]), task.y[idx])
    assert rows[1]["probe_loss_before"] == pytest.approx(float(before), rel=1e-6)
    assert rows[1]["plasticity_score"] == pytest.approx(
        1 - rows[1]["probe_loss_after"] / rows[1]["probe_loss_before"]
    )
    zero = spec_for("label_permuted", tmp_path / "zero", **{**fields, "probe_steps": 0})
    execute(zero)
    assert all(r["plasticity_score"] == 0.0 for r in rows_of(zero))


def _probe_case(masked: bool):
    """A package MLP (optionally with a masked head over 3 of 5 classes) and a probe batch."""
    torch.manual_seed(1)
    model = MLP(12, (16, 8), 5)
    if masked:
        head = MaskedLinear(8, 5)
        head.load_state_dict(model.classifier.state_dict(), strict=False)
        head.set_classes(torch.tensor([0, 2, 3]))
        model.classifier = head
    x = torch.rand(64, 12) * (torch.rand(64, 12) < 0.6)
    y = (
        torch.tensor([0, 2, 3])[torch.randint(0, 3, (64,))]
        if masked
        else torch.randint(0, 5, (64,))
    )
    return model, x, y


@pytest.mark.parametrize("masked", [False, True])
def test_the_compiled_probe_takes_autograds_steps(masked):
    """The probe's steps in the compiled mini-batch engine (engine fast) against autograd's:
    10 full-batch steps, equal within float32 rounding; the probed network is not changed."""
    from plasticollapse.training.full_batch import compiled_steps_apply, full_batch_steps

    model, x, y = _probe_case(masked)
    state = copy.deepcopy(model.state_dict())
    assert compiled_steps_apply(model, len(x), masked)
    train = functools.partial(full_batch_steps, masked_head=masked)  # 64 >= 2 x 12: a pass
    compiled = plasticity_score(model, x, y, steps=10, lr=0.5, train=train)
    autograd = plasticity_score(model, x, y, steps=10, lr=0.5)
    assert compiled["probe_loss_before"] == autograd["probe_loss_before"]
    assert compiled["probe_loss_after"] < 0.97 * compiled["probe_loss_before"]  # it trained
    assert compiled["probe_loss_after"] == pytest.approx(autograd["probe_loss_after"], rel=1e-5)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not compiled_steps_apply(MLP(12, (16,), 5, layer_norm=True), len(x))


@pytest.mark.parametrize(("engine", "compiled"), [("fast", True), ("auto", False)])
def test_the_probe_runs_compiled_when_the_run_asks_for_the_fast_engine(
    tmp_path, monkeypatch, engine, compiled
):
    from plasticollapse.training import full_batch

    calls = []
    real = full_batch.full_batch_steps
    monkeypatch.setattr(
        full_batch, "full_batch_steps", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    fields = no_probes(plasticity_probe=True, probe_steps=3, engine=engine)
    spec = spec_for("label_permuted", tmp_path, **fields)
    execute(spec)
    rows = rows_of(spec)
    assert len(calls) == (len(rows) if compiled else 0)
    assert all(r["probe_loss_after"] < r["probe_loss_before"] for r in rows)


# --------------------------------------------------------------------------- the loop


def test_killed_inside_a_multi_epoch_task_resumes_from_the_epoch(tmp_path, monkeypatch):
    whole = spec_for("random_labels", tmp_path / "whole")
    execute(whole)
    spec = spec_for("random_labels", tmp_path / "killed")
    real_order = stream_run.epoch_order
    monkeypatch.setattr(stream_run, "CHECKPOINT_SECONDS", 0.0)

    def killed_in_epoch_2(seed, task, epoch):
        if (task.index, epoch) == (1, 2):
            raise KeyboardInterrupt
        return real_order(seed, task, epoch)

    monkeypatch.setattr(stream_run, "epoch_order", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        execute(spec)
    state = torch.load(RunFolder(spec.folder).checkpoint_path, weights_only=True)
    assert (state["task"], state["task_epoch"]) == (1, 2)
    monkeypatch.setattr(stream_run, "epoch_order", real_order)
    assert execute(spec) == "resumed"
    assert without_seconds(rows_of(spec)) == without_seconds(rows_of(whole))


class SpyRemedy(Remedy):
    name = "spy"
    calls: list = []

    def at_task_start(self, model, optimizer, task, inputs):
        SpyRemedy.calls.append((task, inputs.clone(), optimizer))
        return {"spy_task": task}


def test_remedies_act_at_each_switch_on_the_new_tasks_inputs(tmp_path, monkeypatch):
    SpyRemedy.calls = []
    monkeypatch.setattr(stream_run, "build_remedies", lambda config: [SpyRemedy()])
    spec = spec_for("class_incremental", tmp_path, **no_probes())
    execute(spec)
    assert [t for t, _, _ in SpyRemedy.calls] == [1, 2]
    assert [r.get("spy_task") for r in rows_of(spec)] == [None, 1, 2]
    config = from_dict(ClassIncrementalConfig, spec.config)
    stream = ClassIncrementalStream(config, load_stream_data(config, torch.device("cpu")))
    for t, inputs, optimizer in SpyRemedy.calls:
        task = stream.task(t)
        rows = {tuple(r.tolist()) for r in task.x[task.train]}
        assert all(tuple(r.tolist()) in rows for r in inputs)
        assert isinstance(optimizer, torch.optim.SGD)  # auto at batch 90: the reference engine


@pytest.mark.parametrize(
    ("study", "engine"),
    [
        ("label_permuted", "fast"),
        # batch 16, and batch 90 with a masked head: auto keeps the reference engine (the
        # compiled mini-batch engine runs when asked for: tests/test_minibatch_engine.py)
        ("random_labels", "reference"),
        ("class_incremental", "reference"),
    ],
)
def test_auto_picks_the_fast_engine_only_where_it_applies(tmp_path, monkeypatch, study, engine):
    built = []
    real = training.make_engine

    def spy(name, model, lr, batch_size, remedies=(), **options):
        built.append(real(name, model, lr, batch_size, remedies, **options).name)
        return real(name, model, lr, batch_size, remedies, **options)

    monkeypatch.setattr(training, "make_engine", spy)
    execute(spec_for(study, tmp_path, **no_probes(tasks=1)))
    assert built == [engine]


@pytest.mark.parametrize("study", ["random_labels", "class_incremental"])
def test_stream_rows_count_the_units_continual_backprop_replaced(tmp_path, study):
    # How many units CBP replaces depends only on the units' ages and its rate accumulator,
    # not on their utilities: the same count per task in both engines, however their
    # trajectories part. Plain rows hold no count.
    cbp = {"remedies": ("cbp",), "cbp_replacement_rate": 0.01, "cbp_maturity": 5}
    counts = {}
    for engine in ("reference", "fast"):
        spec = spec_for(study, tmp_path / engine, **no_probes(engine=engine, **cbp))
        assert execute(spec) == "done"
        counts[engine] = [r["cbp_units_replaced"] for r in rows_of(spec)]
    assert counts["reference"] == counts["fast"]
    assert len(counts["fast"]) == TINY[study]["tasks"] and all(n > 0 for n in counts["fast"])
    plain = spec_for(study, tmp_path / "plain", **no_probes(engine="fast"))
    execute(plain)
    assert all("cbp_units_replaced" not in r for r in rows_of(plain))


def test_a_non_finite_loss_ends_the_run_as_diverged(tmp_path, monkeypatch):
    real = training.make_engine

    class Exploding:
        def __init__(self, engine):
            self.engine, self.name, self.passes = engine, engine.name, 0

        def train(self, x, y, order, columns=None):
            self.passes += 1
            stats = self.engine.train(x, y, order, columns)
            if self.passes == 5:  # task 1, epoch 2 of random_labels' 3
                return engines.OnlineStats(stats.correct, stats.count, math.nan)
            return stats

    monkeypatch.setattr(training, "make_engine", lambda *a, **k: Exploding(real(*a, **k)))
    spec = spec_for("random_labels", tmp_path, **no_probes())
    execute(spec)
    summary = RunFolder(spec.folder).read_summary()
    assert summary["status"] == "diverged" and summary["tasks_done"] == 1
    assert summary["diverged"]["epoch"] == 5 and len(rows_of(spec)) == 1


# --------------------------------------------------------------------------- config, model


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"lr": 0.0}, "lr must be a finite number > 0"),
        ({"probe_lr": -1.0}, "probe_lr must be a finite number > 0"),
        ({"tasks": 0}, "tasks must be an integer >= 1"),
        ({"test_samples": -1}, "test_samples must be >= 0"),
        ({"hidden": ()}, "hidden must hold one or more widths"),
        ({"init": "xavier"}, "init must be one of pytorch, kaiming"),
        ({"engine": "fast", "remedies": ["nc1_reg"]}, "'nc1_reg' acts at every step"),
        ({"subset_size": 0}, "subset_size must be an integer >= 1"),
    ],
)
def test_bad_fields_are_named(fields, message):
    with pytest.raises(ConfigError, match=message):
        RandomLabelsConfig(**fields)


def test_pytorch_init_is_nn_linear_s_default_and_kaiming_the_paper_s():
    torch.manual_seed(0)
    model = build_model(RandomLabelsConfig(hidden=(50, 20)), 784, 10)
    for linear in model.linears:
        bound = 1 / math.sqrt(linear.in_features)
        assert linear.weight.abs().max() <= bound and linear.bias.abs().max() <= bound
        assert linear.bias.abs().max() > 0
    kaiming = build_model(RandomLabelsConfig(hidden=(50, 20), init="kaiming"), 784, 10)
    assert all(float(linear.bias.detach().abs().max()) == 0 for linear in kaiming.linears)
    assert kaiming.hidden_linears[0].weight.abs().max() > 1 / math.sqrt(784)


# --------------------------------------------------------------------------- summary, report


def test_summary_table_and_report_of_the_three_studies(tmp_path):
    from plasticollapse.studies.report_command import main_report

    specs = [
        spec_for(study, tmp_path / "runs" / study, seed=seed) for study in TINY for seed in (0, 1)
    ]
    for spec in specs:
        execute(spec)
    text = summarise_study(specs)
    assert text.startswith("6 stream run(s):")
    for study in TINY:
        assert f"  {study:<18} plain" in text
    out = main_report([tmp_path / "runs"], tmp_path / "report", bootstrap=50)
    markdown = (out / "report.md").read_text()
    for study in TINY:
        for figure in ("curves", "depth", "probes"):
            assert (out / study / "figures" / f"{study}_{figure}.png").exists(), (study, figure)
        assert (out / study / "values.csv").exists()
        assert f"{study}: " in markdown
    assert "held-out NC1, last task" in markdown and "retrained gap, mean" in markdown


def test_a_plain_mlp_split_is_measured_through_the_one_sweep():
    """A stream's plain MLP on the CPU is measured by the one sweep of sufficient
    statistics (fast_statistics.mlp_metrics, with layer collapse): its dict exactly, the
    same keys as measure_model's in the same order, and values within float32 rounding of
    them; a masked head's network by measure_model exactly."""
    from plasticollapse.engines import fast_statistics

    torch.manual_seed(0)
    x, y = torch.rand(600, 30), torch.randint(0, 6, (600,))
    model = MLP(30, (20, 12), 6)
    got = measure.measure_split(model, x, y, 6, layer_collapse=True)
    swept = fast_statistics.mlp_metrics(model, x, y, 6, layer_collapse=True)
    assert swept is not None and got == {k: float(v) for k, v in swept.items()}
    want = measure_model(model, x, y, 6, hidden_layers=True, layer_collapse=True)
    assert list(got) == list(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(float(value), rel=1e-4, abs=2 / 600), key
    model.classifier = MaskedLinear(12, 6)
    masked = measure.measure_split(model, x, y, 6, layer_collapse=True)
    assert masked == {k: float(v) for k, v in measure_model(
        model, x, y, 6, hidden_layers=True, layer_collapse=True
    ).items()}  # fmt: skip
