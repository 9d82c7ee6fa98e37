"""The command line: subcommands from the registry, --help listing every field, presets,
the seed syntax, and clear errors with exit code 2."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import toy_experiment

from plasticollapse import __version__, cli, studies
from plasticollapse.runs.config import PRESETS
from plasticollapse.runs.folder import RunFolder


@pytest.fixture
def toy(monkeypatch):
    """Register the toy study (tests/toy_experiment.py) as ``toy`` for this test only."""
    monkeypatch.setitem(studies.REGISTRY, "toy", "toy_experiment:STUDY")
    return toy_experiment


def help_of(subcommand, capsys) -> list[str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([subcommand, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out.splitlines()


def field_line(lines, name) -> str:
    """The ``--name`` line of a field list."""
    (line,) = [line for line in lines if line.startswith(f"  --{name} ")]
    return line


def field_entry(lines, name) -> str:
    """A field's whole entry, continuation lines included, with whitespace collapsed."""
    start = lines.index(field_line(lines, name))
    entry = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("    "):
            break
        entry.append(line)
    return " ".join(" ".join(entry).split())


def test_version_from_the_installed_command():
    out = subprocess.run(
        [sys.executable, "-m", "plasticollapse", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert out.stdout.strip() == f"plasticollapse {__version__}"


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    for name in studies.study_names():
        assert name in out


# --------------------------------------------------------------------------- --help


@pytest.mark.parametrize("study", ["permuted", "warmstart"])
def test_help_lists_every_config_field_with_its_default(study, capsys):
    lines = help_of(study, capsys)
    config_class = studies.get_study(study).Config
    for f in dataclasses.fields(config_class):
        entry = field_entry(lines, f.name)
        assert " ".join(f.metadata.get("help", "").split()) in entry, f.name
        assert "(default: " in entry, f.name
    # `--fields` prints the same list.
    assert cli.main([study, "--fields"]) == 0
    listed = capsys.readouterr().out
    assert listed.startswith(f"config fields of {study}:")
    assert listed.strip() in "\n".join(lines)


def test_help_shows_types_choices_and_defaults(capsys):
    permuted = help_of("permuted", capsys)
    engine = field_entry(permuted, "engine")
    assert engine.startswith("--engine {auto, fast, reference}") and "(default: auto)" in engine
    assert field_entry(permuted, "hidden").startswith("--hidden INT [INT ...]")
    assert "(default: 100 100 100)" in field_entry(permuted, "hidden")
    assert field_entry(permuted, "nc1_threshold").startswith("--nc1_threshold FLOAT|none")
    assert field_entry(permuted, "loggers").endswith("(default: none)")
    warmstart = help_of("warmstart", capsys)
    scheme = field_entry(warmstart, "scheme")
    from plasticollapse.remedies import REMEDIES

    assert "{" + ", ".join(REMEDIES) + "}" in scheme  # every registered remedy
    assert "(default: plain)" in scheme
    assert "(default: 7)" in field_entry(warmstart, "seed")


# --------------------------------------------------------------------------- the registry


def test_a_registered_study_gets_a_subcommand_with_its_fields(toy, capsys):
    lines = help_of("toy", capsys)
    assert "(default: 3)" in field_line(lines, "steps")  # a field without help lists cleanly
    assert "{true, false}" in field_line(lines, "fail")


@pytest.mark.parametrize("seeds", [["0", "1"], ["0-1"], ["0,1"]])
def test_a_registered_study_runs_from_the_cli_with_any_seed_syntax(toy, tmp_path, seeds):
    argv = ["toy", "--steps", "2", "--seeds", *seeds, "--out", str(tmp_path)]
    assert cli.main([*argv, "--backend", "serial"]) == 0
    runs = sorted(p.name for p in tmp_path.iterdir())
    assert runs == [f"toy2_seed0_{runs[0][-8:]}", f"toy2_seed1_{runs[1][-8:]}"]
    rows = RunFolder(tmp_path / runs[1]).read_metrics()
    assert [r["value"] for r in rows] == [10, 11]


def test_a_repeated_seed_is_a_clear_error(toy, tmp_path, capsys):
    assert cli.main(["toy", "--seeds", "0", "0", "--out", str(tmp_path)]) == 2
    assert "seed lists 0 more than once" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- presets


def test_a_preset_of_another_study_is_refused(capsys, tmp_path):
    argv = ["permuted", "--config", "quick/warmstart_digits", "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "preset of the 'warmstart' study, not 'permuted'" in err
    assert not list(tmp_path.iterdir())


def test_presets_lists_every_preset_with_its_first_comment_line(capsys):
    assert cli.main(["presets"]) == 0
    out = capsys.readouterr().out.splitlines()
    for path in PRESETS.glob("*/*.toml"):
        name = f"{path.parent.name}/{path.stem}"
        first_comment = next(line for line in path.read_text().splitlines() if line[:1] == "#")
        (line,) = [line for line in out if line.split()[0] == name]
        assert line.endswith(first_comment.lstrip("# "))


def test_demo_plans_the_quick_preset(monkeypatch, tmp_path, capsys):
    planned = {}

    def fake_execute(experiment, specs, backend, workers, options):
        planned.update(experiment=experiment, specs=specs)
        return 0

    monkeypatch.setattr(cli, "execute_and_summarise", fake_execute)
    assert cli.main(["demo", "--out", str(tmp_path)]) == 0
    assert planned["experiment"] == "permuted"
    specs = planned["specs"]
    assert len(specs) == 6  # 3 first-task settings x 2 seeds
    assert {s.config["dataset"] for s in specs} == {"digits"}
    assert all(Path(s.folder).parent == tmp_path for s in specs)


# --------------------------------------------------------------------------- sweep


def test_sweep_needs_an_experiment_key(tmp_path, capsys):
    preset = tmp_path / "p.toml"
    preset.write_text("lr = 0.1\n")
    assert cli.main(["sweep", str(preset)]) == 2
    assert "no `experiment` key" in capsys.readouterr().err


def test_sweep_of_an_unknown_study_says_so(tmp_path, capsys):
    preset = tmp_path / "p.toml"
    preset.write_text('experiment = "nosuchstudy"\nlr = 0.1\n')
    assert cli.main(["sweep", str(preset)]) == 2
    err = capsys.readouterr().err
    assert "'nosuchstudy' is not a registered study" in err and "permuted" in err


@pytest.mark.parametrize("seeds", [["0-2"], ["0,1,2"], ["0", "1", "2"]])
def test_sweep_takes_a_preset_name_and_any_seed_syntax(seeds, tmp_path, capsys):
    argv = ["sweep", "quick/permuted_digits", "--seeds", *seeds, "--out", str(tmp_path)]
    assert cli.main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "9 runs: 9 new"  # 3 first-task settings x 3 seeds
    assert out[0].split() == ["state", "first_task_epochs", "seed", "folder"]
    assert {line.split()[2] for line in out[1:-1]} == {"0", "1", "2"}
    assert not list(tmp_path.iterdir())  # a dry run creates nothing


# --------------------------------------------------------------------------- errors


def test_unknown_field_is_a_clear_error(capsys):
    assert cli.main(["permuted", "--no_such_field", "1"]) == 2
    err = capsys.readouterr().err
    assert "unknown field 'no_such_field'" in err and "first_task_epochs" in err


def test_report_without_runs_says_so(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip()


def test_several_cpu_runs_default_to_one_process_per_core():
    from plasticollapse.cli import default_backend
    from plasticollapse.studies.base import RunSpec

    def spec(device):
        return RunSpec("permuted", {"device": device}, "runs/x")

    assert default_backend([spec("cpu"), spec("cpu")]) == "process"
    assert default_backend([spec("cpu")]) == "serial"
