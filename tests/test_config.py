"""Config: studies, overrides, the seed syntax, validation, presets and the field list of --help."""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from plasticollapse.runs import config as config_module
from plasticollapse.runs.config import (
    PRESETS,
    ConfigError,
    field,
    from_dict,
    load_toml,
    parse_study,
    preset_experiment,
    preset_names,
    preset_summary,
    resolve_config_file,
    to_dict,
)
from plasticollapse.runs.describe import describe_fields
from plasticollapse.runs.identity import config_hash


@dataclass(frozen=True)
class Toy:
    lr: float = 0.01
    hidden: tuple[int, ...] = (100, 100)
    seed: int = 0
    mode: Literal["composed", "independent"] = "composed"
    threshold: float | None = None
    download: bool = False
    out: str = "runs"

    def __post_init__(self):
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")


def test_defaults_and_scalar_overrides():
    (config,) = parse_study(Toy, None, ["--lr", "0.5", "--download", "true"]).expand()
    assert config == Toy(lr=0.5, download=True)


def test_several_values_make_one_run_each_and_seeds_alias():
    study = parse_study(Toy, None, ["--seeds", "0", "1", "2", "--grid", "lr=0.1,0.2"])
    configs = study.expand()
    assert len(configs) == 6
    assert {(c.seed, c.lr) for c in configs} == {(s, lr) for s in (0, 1, 2) for lr in (0.1, 0.2)}


def test_tuple_field_takes_a_list_as_one_value():
    (config,) = parse_study(Toy, None, ["--hidden", "10", "20", "30"]).expand()
    assert config.hidden == (10, 20, 30)


def test_toml_preset_then_command_line_wins(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text('experiment = "toy"\nlr = 0.3\nseeds = [4, 5]\nhidden = [7, 7]\n')
    configs = parse_study(Toy, preset, ["--lr", "0.9"]).expand()
    assert [c.seed for c in configs] == [4, 5]
    assert all(c.lr == 0.9 and c.hidden == (7, 7) for c in configs)


def test_optional_field_accepts_none():
    (config,) = parse_study(Toy, None, ["--threshold", "none"]).expand()
    assert config.threshold is None
    (config,) = parse_study(Toy, None, ["--threshold", "0.2"]).expand()
    assert config.threshold == 0.2


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--mode", "sideways"], ["mode", "composed", "independent"]),
        (["--nope", "1"], ["unknown field", "nope", "lr"]),
        (["--lr", "fast"], ["lr"]),
        (["--lr", "-1"], ["lr must be > 0"]),
        (["--seed", "1.5"], ["seed", "integer"]),
        (["--download", "maybe"], ["download", "boolean"]),
        (["lr", "1"], ["expected --field"]),
        (["--lr"], ["needs a value"]),
    ],
)
def test_bad_input_names_the_field_and_what_is_allowed(argv, words):
    with pytest.raises(ConfigError) as info:
        parse_study(Toy, None, argv)
    for word in words:
        assert word in str(info.value)


def test_missing_or_broken_toml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        parse_study(Toy, tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_study(Toy, bad)


def test_hash_ignores_where_a_run_executes_but_not_what_it_computes():
    base = Toy()
    assert config_hash(base) == config_hash(Toy(out="elsewhere"))
    assert config_hash(base) != config_hash(Toy(lr=0.02))
    assert config_hash(base) != config_hash(Toy(seed=1))


@pytest.mark.parametrize("study", ["permuted", "label_permuted", "warmstart"])
def test_remedies_plain_is_the_run_without_remedies(study, tmp_path):
    """ "plain" applies nothing: listing it (alone or beside others) names the same run
    folder as leaving it out, so a matrix's plain cell reuses an ordinary plain run; a
    remedy that acts still makes another run."""
    from plasticollapse.runs.folder import RunFolder
    from plasticollapse.studies import get_study

    Config = get_study(study).Config
    bare = Config()
    assert config_hash(Config(remedies=("plain",))) == config_hash(bare)
    assert config_hash(Config(remedies=("plain", "l2_init"))) == config_hash(
        Config(remedies=("l2_init",))
    )
    assert config_hash(Config(remedies=("l2_init",))) != config_hash(bare)
    # the folder written without remedies is the one a --remedies plain run opens
    folder = RunFolder.open(tmp_path / "run", study, to_dict(bare), "cpu", "a")
    folder.close()
    plain = to_dict(Config(remedies=("plain",)))
    RunFolder.open(tmp_path / "run", study, plain, "cpu", "b").close()  # no "another run"


def test_dict_round_trip():
    config = Toy(hidden=(3, 4), threshold=0.5)
    assert from_dict(Toy, to_dict(config)) == config


# --------------------------------------------------------------------------- seeds


@pytest.mark.parametrize("argv", [["0", "1", "2"], ["0-2"], ["0,1,2"], ["0-1", "2"], ["0,1-2"]])
def test_seeds_take_one_syntax_everywhere(argv):
    configs = parse_study(Toy, None, ["--seeds", *argv]).expand()
    assert [c.seed for c in configs] == [0, 1, 2]


def test_a_preset_may_give_seeds_as_a_range(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text('seeds = "3-5"\n')
    assert [c.seed for c in parse_study(Toy, preset).expand()] == [3, 4, 5]


@pytest.mark.parametrize(
    ("argv", "repeated"), [(["--seeds", "0", "0"], "0"), (["--seeds", "0-2", "1"], "1")]
)
def test_a_repeated_seed_is_an_error(argv, repeated):
    with pytest.raises(ConfigError, match=f"seed lists {repeated} more than once"):
        parse_study(Toy, None, argv)


def test_a_repeated_value_of_any_axis_is_an_error():
    # Two equal runs would share one folder: the second would silently be skipped.
    with pytest.raises(ConfigError, match="lr lists 0.1 more than once"):
        parse_study(Toy, None, ["--lr", "0.1", "0.1"])


# --------------------------------------------------------------------------- coercion


def test_each_value_is_coerced_once(monkeypatch):
    calls = []
    original = config_module.coerce

    def counting(config_class, name, value):
        calls.append(name)
        return original(config_class, name, value)

    monkeypatch.setattr(config_module, "coerce", counting)
    configs = parse_study(Toy, None, ["--lr", "0.5", "--seeds", "0", "1"]).expand()
    assert [c.seed for c in configs] == [0, 1] and configs[0].lr == 0.5
    assert sorted(calls) == ["lr", "seed", "seed"]


def test_a_tuple_field_can_be_emptied():
    @dataclass(frozen=True)
    class WithLoggers:
        loggers: tuple[str, ...] = ("jsonl",)

    (config,) = parse_study(WithLoggers, None, ["--loggers", "none"]).expand()
    assert config.loggers == ()


# --------------------------------------------------------------------------- presets


def test_a_preset_of_another_study_is_refused(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text('experiment = "other"\nlr = 0.3\n')
    with pytest.raises(ConfigError, match="preset of the 'other' study, not 'toy'"):
        parse_study(Toy, preset, experiment="toy")
    (config,) = parse_study(Toy, preset, experiment="other").expand()
    assert config.lr == 0.3


@pytest.mark.parametrize(
    "ref",
    [
        "quick/permuted_digits",
        "quick/permuted_digits.toml",
        "configs/quick/permuted_digits.toml",  # where presets lived before they were data
        "/old/checkout/configs/quick/permuted_digits.toml",
    ],
)
def test_preset_names_and_the_old_spelling_find_the_packaged_file(ref):
    path = resolve_config_file(ref)
    assert path == PRESETS / "quick" / "permuted_digits.toml"
    assert load_toml(ref)["experiment"] == "permuted"


def test_a_file_that_exists_wins_over_a_preset_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    own = tmp_path / "configs" / "quick" / "permuted_digits.toml"
    own.parent.mkdir(parents=True)
    own.write_text("lr = 0.7\n")
    assert load_toml("configs/quick/permuted_digits.toml") == {"lr": 0.7}


def test_an_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError) as info:
        resolve_config_file("quick/nope")
    assert "quick/nope" in str(info.value) and "quick/permuted_digits" in str(info.value)


def test_every_shipped_preset_plans_for_its_study():
    from plasticollapse.studies import get_study

    names = preset_names()
    assert {"quick/permuted_digits", "paper/permuted_mnist", "paper/warmstart_cifar10"} <= set(
        names
    )
    for name in names:
        experiment = preset_experiment(name)
        if experiment == "matrix":  # a study x remedy matrix: tests/test_matrix.py plans it
            continue
        config_class = get_study(experiment).Config
        assert parse_study(config_class, name, experiment=experiment).expand(), name
        assert preset_summary(resolve_config_file(name)), f"{name} has no first comment line"


def test_the_package_data_pattern_ships_every_preset():
    """pyproject's package-data globs must match every preset (else wheels lack them)."""
    pyproject = config_module.tomllib.loads(
        (Path(__file__).parents[1] / "pyproject.toml").read_text()
    )
    patterns = pyproject["tool"]["setuptools"]["package-data"]["plasticollapse"]
    package = PRESETS.parent
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    assert set(PRESETS.rglob("*.toml")) <= shipped


# --------------------------------------------------------------------------- --help


def test_describe_fields_lists_every_field_with_type_choices_and_default():
    text = describe_fields(Toy)
    lines = text.splitlines()
    for name in ("lr", "hidden", "seeds", "mode", "threshold", "download", "out"):
        assert any(line.startswith(f"  --{name} ") for line in lines), name
    line = next(line for line in lines if line.startswith("  --mode "))
    assert "{composed, independent}" in line and "(default: composed)" in line
    (hidden,) = [line for line in lines if line.startswith("  --hidden ")]
    assert hidden.split() == ["--hidden", "INT", "[INT", "...]", "(default:", "100", "100)"]
    (threshold,) = [line for line in lines if line.startswith("  --threshold ")]
    assert threshold.split() == ["--threshold", "FLOAT|none", "(default:", "none)"]
    # The seed is listed as the name it is used by, taking several values.
    assert next(x for x in lines if x.startswith("  --seeds ")).startswith("  --seeds INT [INT")


def test_describe_fields_groups_the_fields_in_sections_in_order():
    lines = describe_fields(Toy).splitlines()
    headings = [line for line in lines if line.endswith(":") and not line.startswith(" ")][1:]
    assert headings == ["data:", "model:", "training:", "execution:", "other:"]
    under = {}
    for line in lines[1:]:
        if line.endswith(":") and not line.startswith(" "):
            section = line
        elif line.startswith("  --"):
            under[line.split()[0]] = section
    assert under["--hidden"] == "model:" and under["--lr"] == "training:"
    assert under["--seeds"] == "training:" and under["--out"] == "execution:"
    assert under["--mode"] == "other:"  # a field no table places, and no section metadata

    @dataclass(frozen=True)
    class Placed:
        mode: str = field("a", help="how", section="model")

    assert describe_fields(Placed).splitlines()[2:4] == [
        "model:",
        "  --mode STR".ljust(34) + "how (default: a)",
    ]


@pytest.mark.parametrize(
    ("help_text", "default", "shown"),
    [
        ("factor (Ash & Adams: 0.6)", "0.6", "factor (default: 0.6, Ash & Adams)"),
        ("decay (0.99)", "0.99", "decay (default: 0.99)"),
        ("images (the paper: 1,200)", "1200", "images (default: 1200, the paper)"),
        ("rate (Dohare et al.: 1e-6)", "1e-06", "rate (default: 1e-06, Dohare et al.)"),
        ("steps (0: off)", "0", "steps (0: off) (default: 0)"),  # not a citation
        ("folder (default: $DATA)", "none", "folder (default: $DATA)"),
        ("", "3", "(default: 3)"),
    ],
)
def test_a_default_is_said_once(help_text, default, shown):
    from plasticollapse.runs.describe import with_default

    assert with_default(help_text, default) == shown


def test_a_choice_list_is_shown_once():
    @dataclass(frozen=True)
    class Choices:
        kinds: tuple[Literal["aa", "bb"], ...] = field((), help="kinds to apply")
        kind: Literal["aa", "bb"] = field("aa", help="one kind")
        other: Literal["aa", "cc"] = field("cc", help="another")

    lines = describe_fields(Choices).splitlines()
    assert lines[3].split() == ["--kinds", "NAME", "[NAME", "...]", "kinds", "to", "apply"] + [
        "(default:",
        "none);",
        "NAME:",
        "aa,",
        "bb",
    ]
    assert lines[4].split()[:3] == ["--kind", "{as", "--kinds}"]
    assert lines[5].split()[:3] == ["--other", "{aa,", "cc}"]


def test_describe_fields_shows_the_help_text_and_wraps_long_lines():
    @dataclass(frozen=True)
    class Documented:
        rate: float = field(0.1, help="the rate " + "and more words " * 12)
        kind: Literal["aa", "bb"] = field("aa", help="which kind")

    lines = describe_fields(Documented, heading="fields:").splitlines()
    assert lines[:3] == ["fields:", "", "other:"]
    assert lines[3].startswith("  --rate FLOAT ") and "the rate and more words" in lines[3]
    # The long help continues on lines of its own, aligned under the help column.
    rate = lines[3 : len(lines) - 1]
    assert len(rate) > 1 and all(line.startswith(" " * 30) for line in rate[1:])
    assert rate[-1].endswith("(default: 0.1)") and all(len(line) <= 100 for line in rate)
    assert lines[-1].split() == ["--kind", "{aa,", "bb}", "which", "kind", "(default:", "aa)"]


# --------------------------------------------------------------------------- unknown fields


@pytest.mark.parametrize(
    ("typed", "meant"), [("lrr", "lr"), ("hiden", "hidden"), ("seed", None), ("seedz", "seeds")]
)
def test_an_unknown_field_suggests_the_closest_and_names_no_class(typed, meant):
    if meant is None:  # `seed` is a field: no error
        parse_study(Toy, None, [f"--{typed}", "1"])
        return
    with pytest.raises(ConfigError) as info:
        parse_study(Toy, None, [f"--{typed}", "1"])
    assert str(info.value).startswith(f"unknown field '{typed}'; did you mean '{meant}'?")
    assert "Toy" not in str(info.value)


def test_an_unknown_key_of_a_preset_names_the_file_and_the_closest(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text("lr = 0.1\nthreshhold = 0.2\n")
    with pytest.raises(
        ConfigError, match=r"p.toml: unknown field 'threshhold'; did you mean 'threshold'"
    ):
        parse_study(Toy, preset)


# --------------------------------------------------------------------------- --print-config


def test_study_toml_loads_back_as_the_same_study(tmp_path):
    from plasticollapse.runs.describe import study_toml

    @dataclass(frozen=True)
    class Wide:
        lr: float = 0.01
        cap: float | None = 1.0  # set to none over a default that is not
        floor: float | None = None
        limit: float = 1.0
        name: str = 'a "quoted" \\ name'
        hidden: tuple[int, ...] = (3, 4)
        flags: tuple[str, ...] = ()
        seed: int = 0

    argv = ["--lr", "0.1", "0.2", "--cap", "none", "--limit", "inf", "--seeds", "2-3"]
    study = parse_study(Wide, None, argv)
    path = tmp_path / "saved.toml"
    path.write_text(study_toml("wide", study, "plasticollapse wide --lr 0.1 0.2"))
    back = parse_study(Wide, path, experiment="wide")
    assert back.expand() == study.expand()
    assert [c.seed for c in back.expand()] == [2, 3, 2, 3]
    assert back.expand()[0].cap is None and back.expand()[0].limit == float("inf")
    assert (
        preset_summary(path) == "The wide study as `plasticollapse wide --lr 0.1 0.2` resolves it."
    )
