"""The command line: version, help, and clear errors with exit code 2."""

import subprocess
import sys

from plasticollapse import __version__
from plasticollapse.cli import main


def test_version_from_the_installed_command():
    out = subprocess.run(
        [sys.executable, "-m", "plasticollapse", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert out.stdout.strip() == f"plasticollapse {__version__}"


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "permuted" in capsys.readouterr().out


def test_unknown_field_is_a_clear_error(capsys):
    assert main(["permuted", "--no_such_field", "1"]) == 2
    err = capsys.readouterr().err
    assert "unknown field 'no_such_field'" in err and "first_task_epochs" in err


def test_fields_lists_every_config_field(capsys):
    assert main(["warmstart", "--fields"]) == 0
    out = capsys.readouterr().out
    for field in ("--scheme", "--nc1_lambda", "--warmup_epochs"):
        assert field in out


def test_sweep_needs_an_experiment_key(tmp_path, capsys):
    preset = tmp_path / "p.toml"
    preset.write_text("lr = 0.1\n")
    assert main(["sweep", str(preset)]) == 2
    assert "experiment" in capsys.readouterr().err


def test_report_without_runs_says_so(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip()


def test_several_cpu_runs_default_to_one_process_per_core():
    from plasticollapse.cli import default_backend
    from plasticollapse.studies.base import RunSpec

    def spec(device):
        return RunSpec("permuted", {"device": device}, "runs/x")

    assert default_backend([spec("cpu"), spec("cpu")]) == "process"
    assert default_backend([spec("cpu")]) == "serial"
