"""The command line: subcommands from the registry, --help listing every field, presets,
the seed syntax, and clear errors with exit code 2."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import toy_experiment

from plasticollapse import __version__, cli, studies
from plasticollapse.runs import config as config_module
from plasticollapse.runs.config import PRESETS, preset_experiment, preset_names, preset_summary
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


SECTIONS = ["data:", "model:", "training:", "remedies and their parameters:", "measuring:"]
SECTIONS += ["execution:"]


def flag_name(name: str) -> str:
    return "seeds" if name == "seed" else name


@pytest.mark.parametrize("study", studies.study_names())
def test_help_lists_every_field_once_in_its_section_with_one_default(study, capsys):
    lines = help_of(study, capsys)
    headings = [line for line in lines if line.endswith(":") and not line.startswith(" ")]
    shown = [h for h in headings if h in SECTIONS]
    assert shown == [h for h in SECTIONS if h in shown] and "execution:" in shown  # in order
    assert "other:" not in headings  # every shipped field is placed in a section
    config_class = studies.get_study(study).Config
    for f in dataclasses.fields(config_class):
        entry = field_entry(lines, flag_name(f.name))
        assert entry.count("(default:") == 1, entry  # said once
        words = f.metadata.get("help", "").split("(")[0].split()  # its help, bar a cited default
        assert " ".join(words) in entry, f.name
    # The execution flags sit in the execution section, after the execution fields.
    execution = lines[lines.index("execution:") :]
    for flag in ("--backend {serial, process, ray, slurm}", "--workers N", "--wait"):
        assert any(line.startswith(f"  {flag}") for line in execution), flag
    # `--fields` prints the same field list, without the command's own flags.
    assert cli.main([study, "--fields"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0] == f"config fields of {study}:"
    assert [line for line in listed if line.startswith("  --")] == [
        line
        for line in lines[lines.index(listed[0]) :]
        if line.startswith("  --")
        and not line.startswith(("  --backend", "  --workers", "  --wait"))
    ]


@pytest.mark.parametrize("study", ["permuted", "warmstart"])
def test_help_says_each_choice_list_and_default_once(study, capsys):
    from plasticollapse.remedies import REMEDIES

    text = " ".join(" ".join(help_of(study, capsys)).split())
    assert text.count(", ".join(REMEDIES)) == 1  # the remedies' names, listed once
    assert "(Ash & Adams: 0.6) (default: 0.6)" not in text
    assert "factor on the weights (default: 0.6, Ash & Adams)" in text
    assert "--seed " not in text and "--seeds INT [INT ...]" in text  # one name


def test_help_shows_types_choices_and_defaults(capsys):
    permuted = help_of("permuted", capsys)
    engine = field_entry(permuted, "engine")
    assert engine.startswith("--engine {auto, fast, reference}") and "(default: auto)" in engine
    assert field_entry(permuted, "hidden").startswith("--hidden INT [INT ...]")
    assert "(default: 100 100 100)" in field_entry(permuted, "hidden")
    assert field_entry(permuted, "nc1_threshold").startswith("--nc1_threshold FLOAT|none")
    assert field_entry(permuted, "loggers").endswith("(default: none)")
    assert field_entry(permuted, "remedies").startswith("--remedies NAME [NAME ...]")
    warmstart = help_of("warmstart", capsys)
    scheme = field_entry(warmstart, "scheme")
    assert scheme.startswith("--scheme {as --remedies}")  # the same choices, not repeated
    assert "(default: plain)" in scheme
    assert "(default: 7)" in field_entry(warmstart, "seeds")


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


def test_presets_lists_every_preset_with_its_whole_first_sentence(capsys):
    assert cli.main(["presets"]) == 0
    out = capsys.readouterr().out
    entries = {}  # name -> its description, wrapped lines joined
    for line in out.splitlines():
        if line[:1] != " ":
            name, _, line = line.partition(" ")
            entries[name] = []
        entries[name].append(line.strip())
    assert set(entries) == {f"{p.parent.name}/{p.stem}" for p in PRESETS.glob("*/*.toml")}
    for name, parts in entries.items():
        text = " ".join(parts)
        assert text.endswith((".", ")")) or text.endswith("MNIST"), (name, text)
        first = next(line for line in (PRESETS / f"{name}.toml").read_text().splitlines())
        assert text.startswith(first.lstrip("# ").split()[0])
    # A first sentence that runs over two comment lines is shown whole, not cut at the line.
    assert "(see the docstring of plasticollapse.studies.permuted.run)." in " ".join(
        entries["paper/permuted_mnist"]
    )
    assert " ".join(entries["full/random_labels"]).endswith("is the paper's MNIST).")


def test_presets_name_prints_that_presets_toml(capsys):
    assert cli.main(["presets", "quick/permuted_digits"]) == 0
    out = capsys.readouterr().out
    assert out == (PRESETS / "quick" / "permuted_digits.toml").read_text()
    assert cli.main(["presets", "quick/nope"]) == 2
    assert "quick/permuted_digits" in capsys.readouterr().err  # the presets it knows


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


def test_sweep_help_explains_grid(capsys):
    lines = help_of("sweep", capsys)
    entry = " ".join(
        " ".join(
            lines[
                lines.index(next(x for x in lines if "--grid" in x and x.startswith("  --grid"))) :
            ][:3]
        ).split()
    )
    assert "one run per combination" in entry


# ------------------------------------------------------------- --dry-run, --print-config


@pytest.mark.parametrize("study", studies.study_names())
def test_every_study_command_has_a_dry_run_that_runs_nothing(study, tmp_path, capsys):
    preset = next(
        n for n in preset_names() if n.startswith("quick/") and preset_experiment(n) == study
    )
    argv = [study, "--config", preset, "--seeds", "3", "4", "--out", str(tmp_path / "o")]
    assert cli.main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[0] == "state" and out[0].split()[-2:] == ["seed", "folder"]
    assert out[-1].endswith(" new") and {line.split()[-2] for line in out[1:-1]} == {"3", "4"}
    assert not (tmp_path / "o").exists()  # a dry run creates nothing
    # the plan is the sweep's
    assert (
        cli.main(["sweep", preset, "--seeds", "3", "4", "--out", str(tmp_path / "o"), "--dry-run"])
        == 0
    )
    assert capsys.readouterr().out.splitlines() == out


@pytest.mark.parametrize(
    ("preset", "fields"),
    [
        ("quick/permuted_digits", ["--lr", "0.1", "0.05", "--nc1_threshold", "0.3"]),
        (
            "quick/warmstart_digits",
            ["--seeds", "0-1", "--scheme", "plain", "l2_init", "--lr", "0.02"],
        ),
        ("quick/label_permuted", ["--hidden", "7", "3", "--probe_lr", "0.5", "--tasks", "3"]),
    ],
)
def test_print_config_loads_back_as_a_preset_with_the_same_runs(preset, fields, tmp_path, capsys):
    study = preset_experiment(preset)
    argv = [study, "--config", preset, *fields, "--out", str(tmp_path / "runs")]
    assert cli.main([*argv, "--print-config"]) == 0
    saved = tmp_path / "saved.toml"
    saved.write_text(capsys.readouterr().out)
    assert not (tmp_path / "runs").exists()
    assert cli.main([*argv, "--dry-run"]) == 0
    planned = capsys.readouterr().out
    assert cli.main([study, "--config", str(saved), "--dry-run"]) == 0
    assert capsys.readouterr().out == planned  # the same runs, folders (hashes) included
    assert preset_summary(saved).startswith(f"The {study} study as `plasticollapse {study}")
    assert cli.main(["presets"]) == 0  # and it reads as a preset
    assert cli.main(["sweep", str(saved), "--dry-run"]) == 0
    assert capsys.readouterr().out.endswith(planned)


def test_print_config_writes_every_field_and_toml_has_no_null(capsys):
    assert cli.main(["permuted", "--config", "quick/permuted_digits", "--print-config"]) == 0
    text = capsys.readouterr().out
    data = config_module.tomllib.loads(text)
    fields = {f.name for f in dataclasses.fields(studies.get_study("permuted").Config)}
    optional_unset = {line.split()[1] for line in text.splitlines() if line.endswith("= none")}
    assert data["experiment"] == "permuted" and "seed" not in data and data["seeds"] == [0, 1]
    assert set(data) - {"experiment", "seeds"} | {"seed"} | optional_unset == fields
    assert optional_unset == {"data_root", "nc1_threshold", "weight_decay"} | {
        "wandb_project",
        "wandb_group",
    }
    assert data["first_task_epochs"] == [1, 5, 20] and data["hidden"] == [64, 64]


def test_plot_out_is_a_folder(toy, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert (
        cli.main(
            ["toy", "--steps", "3", "--seeds", "0", "1", "--out", str(runs), "--backend", "serial"]
        )
        == 0
    )
    figures = tmp_path / "figures"
    assert cli.main(["plot", str(runs), "--metric", "value", "--out", str(figures)]) == 0
    assert (figures / "value.png").stat().st_size > 0
    assert capsys.readouterr().out.splitlines()[-1] == str(figures / "value.png")


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("--lrr", "lr"), ("--first-task-epoch", "first_task_epochs"), ("--seedz", "seeds")],
)
def test_an_unknown_field_suggests_the_closest(typed, meant, capsys):
    assert cli.main(["permuted", typed, "1"]) == 2
    (err,) = capsys.readouterr().err.splitlines()  # one line
    assert f"did you mean '{meant}'?" in err
    assert "Config" not in err  # no internal class


def test_an_unknown_field_far_from_any_lists_the_fields(capsys):
    assert cli.main(["permuted", "--no_such_field", "1"]) == 2
    err = capsys.readouterr().err
    assert "unknown field 'no_such_field'; fields: " in err and "first_task_epochs" in err
    assert "did you mean" not in err and ", seeds," in err


def test_an_unknown_key_in_a_preset_names_the_file(tmp_path, capsys):
    preset = tmp_path / "p.toml"
    preset.write_text('experiment = "permuted"\nlearning_rate = 0.1\n')
    assert cli.main(["permuted", "--config", str(preset), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{preset}: unknown field 'learning_rate'" in err


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
