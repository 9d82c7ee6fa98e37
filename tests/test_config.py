"""Studies, overrides and validation of config dataclasses."""

from dataclasses import dataclass
from typing import Literal

import pytest

from plasticollapse.runs.config import (
    ConfigError,
    config_hash,
    from_dict,
    parse_study,
    to_dict,
)


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


def test_dict_round_trip():
    config = Toy(hidden=(3, 4), threshold=0.5)
    assert from_dict(Toy, to_dict(config)) == config
