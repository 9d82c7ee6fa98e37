"""The training layer's rules: one engine choice, events that decide study x remedy, and the
run identity (remedy parameters count where applied; legacy folders are renamed once)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import stream_helpers
import test_bitflip
import test_permuted

from plasticollapse.models import MLP
from plasticollapse.remedies import REMEDIES
from plasticollapse.remedies.base import Remedy
from plasticollapse.remedies.events import ONLINE_EVENTS, Event, check_events, events_needed
from plasticollapse.remedies.nc1_reg import NC1Regulariser as NC1
from plasticollapse.runs.config import ConfigError, Study, field
from plasticollapse.runs.folder import RunFolder
from plasticollapse.runs.identity import config_hash, legacy_config_hash, run_identity
from plasticollapse.studies import get_study
from plasticollapse.studies.base import execute, plan
from plasticollapse.training import RunFacts, check_engine, choose_engine, make_engine

# --------------------------------------------------------------------------- engine choice


@pytest.mark.parametrize(
    ("study", "fields", "compiled"),
    [
        ("random_labels", {"remedies": ("cbp",)}, True),  # batch 16: the mini-batch engine
        ("class_incremental", {"remedies": ("cbp",)}, True),  # batch 90, masked head
        ("random_labels", {"remedies": ("cbp",), "batch_size": 1}, True),
        ("random_labels", {"remedies": ("l2_init", "weight_decay"), "batch_size": 1}, True),
        ("random_labels", {"remedies": ("nc1_reg",)}, False),  # a loss term: autograd
        ("class_incremental", {"batch_size": 1}, True),  # masked: the mini-batch engine
        ("label_permuted", {"remedies": ("cbp",)}, True),
        ("label_permuted", {"remedies": ("redo", "shrink_perturb")}, True),
        ("bitflip_regression", {"remedies": ("cbp",)}, True),  # batch 1: squared error too
    ],
)
def test_the_config_check_and_the_engine_built_give_one_answer(study, fields, compiled):
    """``--engine fast`` is accepted by the config exactly where ``make_engine("fast")``
    builds a compiled engine, and ``auto`` takes the compiled batch-1 engine exactly where
    that applies to a classifier (the compiled mini-batch engine and the batch-1 squared
    error only when asked for: earlier runs keep their numbers). These were decided
    in five places, which disagreed: ``random_labels --remedies cbp --engine fast`` was
    refused ("remedies acting at every step") at batch 1, where the compiled engine runs
    Continual Backprop, while ``auto`` accepted the same run."""
    config_class = get_study(study).Config
    base = {"progress": False, **fields}
    config = config_class(**base)
    try:
        config_class(**{**base, "engine": "fast"})
        accepted = True
    except ConfigError as e:
        assert re.search("engine 'fast' cannot run this: .+; use engine auto or reference", str(e))
        accepted = False
    assert accepted == compiled
    assert (built_engine(config, study, "fast") is not None) == accepted
    batch_one = getattr(config, "batch_size", 1) == 1 and study != "class_incremental"
    classifier = study != "bitflip_regression"
    expected = "fast" if accepted and batch_one and classifier else "reference"
    assert built_engine(config, study, "auto") == expected


def built_engine(config, study: str, requested: str) -> str | None:
    """The engine ``make_engine(requested)`` builds for this config (None: refused)."""
    from plasticollapse.remedies import RemedyContext, build_remedies

    model = MLP(8, config.hidden, 4)
    remedies = build_remedies(config)
    for remedy in remedies:
        remedy.bind(model, RemedyContext(seed=0, num_classes=4))
    options = {"masked_head": study == "class_incremental"}
    if study == "bitflip_regression":
        options = {"loss": "squared_error"}
    batch = getattr(config, "batch_size", 1)
    try:
        return make_engine(requested, model, 0.01, batch, remedies, **options).name
    except ConfigError:
        return None


def test_the_reasons_are_all_given():
    facts = RunFacts(
        batch_size=16, loss="squared_error", mlp_options=("crelu",), remedies=(NC1(0.05, 200),)
    )
    with pytest.raises(ConfigError) as info:
        choose_engine("fast", facts)
    for words in (
        "mini-batch engine trains on the cross-entropy, not the squared error",
        "crelu",
        "nc1_reg",
    ):
        assert words in str(info.value)
    assert choose_engine("auto", facts) == "reference"
    # at batch 1 the squared error is compiled, when asked for (auto keeps autograd's numbers)
    assert choose_engine("fast", RunFacts(loss="squared_error")) == "fast"
    assert choose_engine("auto", RunFacts(loss="squared_error")) == "reference"
    assert choose_engine("reference", RunFacts()) == "reference"
    assert choose_engine("auto", RunFacts()) == "fast"
    with pytest.raises(ConfigError, match="engine must be one of"):
        choose_engine("compiled", RunFacts())


def test_config_validation_leaves_auto_to_the_model_and_refuses_unknown_engines():
    """Validating ``auto`` decides nothing yet (the model decides); a misspelt engine is
    refused at once."""

    @dataclasses.dataclass(frozen=True)
    class Bare:
        engine: str = "auto"

    check_engine(Bare())  # no remedies, no batch size: nothing to refuse
    with pytest.raises(ConfigError, match="engine must be one of"):
        check_engine(Bare(engine="numba"))


# --------------------------------------------------------------------------- events


@dataclasses.dataclass
class CountingRemedy(Remedy):
    """A test remedy added in one place (the registry): it reads every step's hidden
    activations and counts the steps and task starts it saw."""

    name = "counting"
    needs_activations = True

    def __post_init__(self):
        self.steps = self.starts = 0

    def after_step(self, model, optimizer, step, activations=None):
        assert activations is not None and len(activations) == len(model.hidden_linears)
        self.steps += 1

    def at_task_start(self, model, optimizer, task, inputs):
        self.starts += 1
        return {"counting_steps": self.steps, "counting_starts": self.starts}


@pytest.fixture
def counting(monkeypatch):
    monkeypatch.setitem(REMEDIES, "counting", CountingRemedy)
    return CountingRemedy


def test_a_remedy_declares_the_events_it_needs():
    assert events_needed(CountingRemedy()) == (
        {Event.STEP, Event.STEP_ACTIVATIONS},
        {Event.TASK_START},
    )
    shrink = REMEDIES["shrink_perturb"](0.6, 0.01)
    assert events_needed(shrink) == (set(), {Event.TASK_START, Event.PROBE_START})
    every_k = REMEDIES["shrink_perturb"](0.6, 0.01, shrink_perturb_every=10)
    assert events_needed(every_k) == ({Event.INTERVAL}, set())


def test_the_one_check_names_the_study_the_remedy_and_the_missing_event():
    with pytest.raises(ConfigError) as info:
        check_events("toy", {Event.TASK_START}, [CountingRemedy()])
    assert str(info.value).startswith(
        "the toy study has no 'every step' event, which the counting remedy needs"
    )
    with pytest.raises(ConfigError, match="the redo remedy acts at 'the start of a new task' or "):
        check_events("toy", {Event.STEP}, [REMEDIES["redo"](0.1)])
    check_events("toy", ONLINE_EVENTS, [CountingRemedy(), REMEDIES["redo"](0.1)])


ONLINE = {
    "permuted": (test_permuted.spec_for, {}),
    "random_labels": (lambda out, **f: stream_helpers.spec_for("random_labels", out, **f), {}),
    "label_permuted": (lambda out, **f: stream_helpers.spec_for("label_permuted", out, **f), {}),
    "class_incremental": (
        lambda out, **f: stream_helpers.spec_for("class_incremental", out, **f),
        {},
    ),
    "bitflip_regression": (test_bitflip.spec_for, {}),
}


@pytest.mark.parametrize("study", list(ONLINE))
def test_a_test_remedy_runs_in_every_online_study(tmp_path, counting, study):
    """Registered in one place, it gets every step's activations and every task start in
    each online study (the reference engine: it has no compiled form, so ``fast`` refuses
    it, naming the remedy)."""
    spec_for, extra = ONLINE[study]
    spec = spec_for(tmp_path, remedies=("counting",), tasks=2, **extra)
    assert execute(spec) == "done"
    rows = RunFolder(spec.folder).read_metrics()
    assert rows[1]["counting_starts"] == 1
    assert rows[1]["counting_steps"] > 0
    config_class = get_study(study).Config
    fast = {**spec.config, "engine": "fast"}
    with pytest.raises(ConfigError, match="counting"):
        config_class(**fast)


def test_a_test_remedy_is_refused_by_the_warm_start_with_the_reason(counting):
    from plasticollapse.studies.warmstart.config import Config

    with pytest.raises(ConfigError) as info:
        Config(remedies=("counting",))
    message = str(info.value)
    # it has the step's activations (for Continual Backprop) but no new tasks
    assert "the counting remedy acts at 'the start of a new task', which the warmstart" in message


def test_bitflip_regression_takes_continual_backprop(tmp_path):
    """Refused before ("the warm start has none: use it with permuted"); now the reference
    engine passes it each step's activations, as the source (lop's slowly_changing_regression
    cfg/sgd/cbp/relu.json: decay 0.99, maturity 100, adaptable_contribution) runs it. A high
    replacement rate makes the replacements certain within the tiny run."""
    spec = test_bitflip.spec_for(
        tmp_path,
        remedies=("cbp",),
        cbp_replacement_rate=0.05,
        cbp_maturity=10,
        cbp_decay_rate=0.99,
    )
    plain = test_bitflip.spec_for(tmp_path / "plain")
    assert execute(spec) == "done" and execute(plain) == "done"
    rows, plain_rows = (RunFolder(s.folder).read_metrics() for s in (spec, plain))
    assert sum(r["cbp_units_replaced"] for r in rows) > 0
    assert [r["loss"] for r in rows] != [r["loss"] for r in plain_rows]


# --------------------------------------------------------------------------- run identity


def test_a_remedy_parameter_counts_only_where_the_remedy_applies():
    from plasticollapse.studies.random_labels.config import Config

    plain = Config()
    assert config_hash(Config(shrink=0.5)) == config_hash(plain)  # the same computation
    assert "shrink" not in run_identity(plain)
    applied = Config(remedies=("shrink_perturb",))
    assert config_hash(Config(remedies=("shrink_perturb",), shrink=0.5)) != config_hash(applied)
    assert run_identity(applied)["shrink"] == 0.6
    # an explicit weight decay applies whatever the remedies, so it counts
    assert config_hash(Config(weight_decay=0.001)) != config_hash(plain)


def test_a_field_added_later_is_marked_where_it_is_declared():
    @dataclasses.dataclass(frozen=True)
    class Before:
        seed: int = field(0, help="seed")
        lr: float = field(0.1, help="lr")

    @dataclasses.dataclass(frozen=True)
    class After(Before):
        momentum: float = field(0.0, help="momentum", added_later=True)

    assert config_hash(After()) == config_hash(Before())
    assert config_hash(After(momentum=0.9)) != config_hash(Before())


def test_a_folder_named_by_the_legacy_hash_is_renamed_once_and_resumes(tmp_path, capsys):
    """A partial random_labels run in a folder named by the old hash (every field, remedy
    parameters included) is found by plan, renamed to its new name, and resumes to the
    rows an uninterrupted run writes."""
    whole = stream_helpers.spec_for("random_labels", tmp_path / "whole", tasks=3)
    execute(whole)
    spec = stream_helpers.spec_for("random_labels", tmp_path / "old", tasks=3)
    config = get_study("random_labels").Config(**spec.config)
    old_name = spec.run_id.rsplit("_", 1)[0] + "_" + legacy_config_hash(config)
    assert old_name != spec.run_id
    old_folder = Path(spec.folder).with_name(old_name)
    # What an old version left: a config.json, two rows and a checkpoint.
    partial = dataclasses.replace(spec, folder=str(old_folder))
    execute(dataclasses.replace(partial, config={**spec.config, "tasks": 2}))
    record = json.loads((old_folder / "config.json").read_text())
    record["config"]["tasks"] = 3
    (old_folder / "config.json").write_text(json.dumps(record))
    (old_folder / "summary.json").unlink()

    study = Study(get_study("random_labels").Config, spec.config, {})
    (again,) = plan("random_labels", study)
    assert again.folder == spec.folder and not old_folder.exists()
    assert "renamed" in capsys.readouterr().out
    assert execute(again) == "resumed"
    rows = RunFolder(again.folder).read_metrics()
    strip = test_permuted.without_seconds
    assert strip(rows) == strip(RunFolder(whole.folder).read_metrics())
    (third,) = plan("random_labels", study)  # found by its new name from now on
    assert third.folder == spec.folder


def test_no_engine_is_chosen_by_a_study(tmp_path):
    """Studies ask training.make_engine; the engines package has no chooser of its own."""
    import plasticollapse.engines as engines

    assert not hasattr(engines, "make_engine")
    src = Path(engines.__file__).parents[1]
    for path in (src / "studies").rglob("*.py"):
        assert "engines import make_engine" not in path.read_text(), path
