"""The edges a new user meets: bad paths and values are one clear line and exit 2 before
anything is created, run folders survive corrupt checkpoints and kills during writes, run
names show what varies, a diverged run says so, and the recorded thread count is the one used.
"""

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import toy_experiment
from test_permuted import rows_of, spec_for, without_seconds

from plasticollapse import cli, studies
from plasticollapse.runs import folder as folder_module
from plasticollapse.runs.config import ConfigError, from_dict, parse_study
from plasticollapse.runs.folder import RunFolder, atomic_write_text, ensure_writable
from plasticollapse.runs.identity import config_hash
from plasticollapse.runs.runtime import resolve_device
from plasticollapse.studies import base
from plasticollapse.studies.base import execute, plan, run_id
from plasticollapse.studies.permuted import run as permuted


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(studies.REGISTRY, "toy", "toy_experiment:STUDY")
    return toy_experiment


def usage_error(argv, capsys) -> str:
    """Run the CLI; assert exit 2 with one line on stderr and no traceback; return it."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("plasticollapse: error: ")
    return err


TINY_ARGV = [
    *("--dataset", "digits", "--hidden", "8", "--tasks", "2", "--train_samples", "200"),
    *("--engine", "reference", "--progress", "false", "--threads", "1"),
]


# --------------------------------------------------------------------------- --out


@pytest.mark.parametrize("backend", ["serial", "process"])
def test_out_under_a_file_is_a_clear_error_before_anything_runs(tmp_path, capsys, backend):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    argv = ["permuted", *TINY_ARGV, "--seeds", "0", "1", "--backend", backend]
    err = usage_error([*argv, "--out", str(blocker / "runs")], capsys)
    assert f"{blocker} is a file, not a folder" in err and "--out" in err
    assert "error.txt" not in err


def test_out_on_proc_is_a_clear_error(capsys):
    err = usage_error(["permuted", *TINY_ARGV, "--out", "/proc/plasticollapse-test"], capsys)
    assert "--out /proc/plasticollapse-test: cannot write there" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_a_read_only_folder_is_a_clear_error(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        err = usage_error(["permuted", *TINY_ARGV, "--out", str(locked / "runs")], capsys)
    finally:
        locked.chmod(0o700)
    assert "cannot write there" in err and str(locked) in err


def test_out_in_an_immutable_folder_is_a_clear_error(tmp_path, capsys):
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    if subprocess.run(["chattr", "+i", str(frozen)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (needs root and a file system with it)")
    try:
        err = usage_error(["permuted", *TINY_ARGV, "--out", str(frozen / "runs")], capsys)
    finally:
        subprocess.run(["chattr", "-i", str(frozen)], check=True)
    assert "cannot write there" in err and "Operation not permitted" in err


def test_ensure_writable_creates_the_folder_and_leaves_no_probe(tmp_path):
    ensure_writable(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())


# --------------------------------------------------------------------------- values


def test_a_repeated_seed_is_a_config_error(tmp_path, capsys):
    err = usage_error(["permuted", *TINY_ARGV, "--seeds", "0", "0", "--out", str(tmp_path)], capsys)
    assert "seed lists 0 more than once" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("seeds", [["0-1"], ["0,1"], ["0", "1"]])
def test_study_commands_and_sweep_take_the_same_seed_syntax(tmp_path, capsys, seeds):
    argv = ["permuted", *TINY_ARGV, "--seeds", *seeds, "--out", str(tmp_path)]
    assert cli.main([*argv, "--backend", "serial"]) == 0
    assert sorted(p.name.split("_")[1] for p in tmp_path.iterdir()) == ["seed0", "seed1"]
    capsys.readouterr()
    sweep = ["sweep", "quick/permuted_digits", "--seeds", *seeds, "--out", str(tmp_path)]
    assert cli.main([*sweep, "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "6 runs: 6 new"


def test_fields_lists_seeds_and_its_syntax(capsys):
    assert cli.main(["permuted", "--fields"]) == 0
    listed = " ".join(capsys.readouterr().out.split())
    assert "--seeds INT [INT ...]" in listed and "--seed " not in listed  # one name
    assert "one run per seed: 0 1 2, a range 0-4 or a list 0,2,5" in listed


@pytest.mark.parametrize("device", ["banana", "cuda:x", "gpu"])
def test_an_unknown_device_is_refused_before_anything_is_created(tmp_path, capsys, device):
    err = usage_error(["permuted", *TINY_ARGV, "--device", device, "--out", str(tmp_path)], capsys)
    assert f"device {device!r} is not a device" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("backend", [[], ["--backend", "serial"], ["--backend", "process"]])
def test_cuda_on_a_cpu_only_torch_is_refused_before_anything_is_created(tmp_path, capsys, backend):
    argv = ["permuted", *TINY_ARGV, "--seeds", "0", "1", "--device", "cuda", *backend]
    err = usage_error([*argv, "--out", str(tmp_path / "runs")], capsys)
    assert "device 'cuda'" in err and "no CUDA GPU" in err
    assert not (tmp_path / "runs").exists()


def test_resolve_device_names_the_value():
    with pytest.raises(ConfigError, match="'banana' is not a device torch knows"):
        resolve_device("banana")
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_preset_of_another_study_exits_2(tmp_path, capsys):
    err = usage_error(
        ["warmstart", "--config", "quick/permuted_digits", "--out", str(tmp_path)], capsys
    )
    assert "preset of the 'permuted' study, not 'warmstart'" in err


def test_an_execution_field_cannot_be_an_axis(tmp_path, capsys):
    err = usage_error(["permuted", *TINY_ARGV, "--threads", "1", "2"], capsys)
    assert "threads takes one value: it says how runs execute" in err


@pytest.mark.parametrize(
    ("study", "argv", "message"),
    [
        ("permuted", ["--train_samples", "100000"], "train_samples = 100000 exceeds the 1438"),
        ("permuted", ["--measure_samples", "5"], "measure_samples = 5 leaves"),
        ("permuted", ["--measure_samples", "300"], "measure_samples = 300 exceeds the 200"),
        ("warmstart", ["--train_samples", "100000"], "train_samples = 100000 exceeds the 1438"),
    ],
)
def test_sample_counts_the_data_cannot_meet_are_config_errors(
    study, argv, message, tmp_path, capsys
):
    if study == "permuted":
        base_argv = TINY_ARGV
    else:
        base_argv = ["--dataset", "digits", "--model", "mlp", "--hidden", "8", "--device", "cpu"]
        base_argv += ["--warmup_epochs", "1", "--checkpoint_every", "1", "--progress", "false"]
    assert cli.main([study, *base_argv, *argv, "--out", str(tmp_path), "--backend", "serial"]) == 2
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("failed ")]
    assert message in line and "ConfigError" in line


def test_too_few_measure_samples_name_the_missing_classes(tmp_path):
    spec = spec_for(tmp_path, measure_samples=4)
    with pytest.raises(ConfigError, match=r"leaves \d+ of 10 classes without a sample"):
        execute(spec)


# --------------------------------------------------------------------------- report, plot


def toy_runs(out, seeds=(0, 1)):
    study = parse_study(
        toy_experiment.Config, None, ["--seeds", *map(str, seeds), "--out", str(out)]
    )
    specs = plan("toy", study)
    for spec in specs:
        execute(spec)
    return specs


def test_report_on_an_invalid_config_json_names_the_file(toy, tmp_path, capsys):
    specs = toy_runs(tmp_path / "runs")
    broken = Path(specs[1].folder) / "config.json"
    broken.write_text('{"experiment": "toy", "config": ')
    err = usage_error(["report", str(tmp_path / "runs")], capsys)
    assert f"{broken}: not valid JSON" in err
    assert not (tmp_path / "runs" / "report").exists()
    broken.write_text("[1, 2]")
    assert f"{broken}: not a run's config.json" in usage_error(
        ["plot", str(tmp_path / "runs"), "--metric", "value"], capsys
    )


def test_report_and_plot_write_beside_the_runs_by_default(toy, tmp_path, capsys, monkeypatch):
    toy_runs(tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["plot", "runs", "--metric", "value"]) == 0
    assert capsys.readouterr().out.strip() == str(Path("runs/plots/value.png"))
    assert (tmp_path / "runs/plots/value.png").is_file()
    calls = {}

    def fake_report(runs, out, **options):
        calls.update(runs=runs, out=out)

    monkeypatch.setattr("plasticollapse.studies.report_command.main_report", fake_report)
    assert cli.main(["report", "runs"]) == 0
    assert calls["out"] == Path("runs/report")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing in the cwd


def test_the_demo_hint_is_a_command_a_new_shell_can_run(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "execute_and_summarise", lambda *args, **kwargs: 0)
    assert cli.main(["demo", "--out", str(tmp_path)]) == 0
    (hint,) = [line for line in capsys.readouterr().out.splitlines() if "Next:" in line]
    command = hint.split("Next: ", 1)[1].split(" report ")[0]
    # A new shell: the virtual environment is not activated, so only the system PATH.
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)  # this checkout's code, for python -m
    done = subprocess.run(
        [*shlex.split(command), "--version"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0 and done.stdout.startswith("plasticollapse "), done.stderr


def test_command_prefers_the_environment_script_by_path(monkeypatch, tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "plasticollapse").write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "prefix", str(venv))
    monkeypatch.setattr(sys, "base_prefix", "/usr")
    monkeypatch.chdir(tmp_path)
    assert cli.command() == "venv/bin/plasticollapse"
    monkeypatch.setattr(sys, "prefix", "/usr")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert cli.command().endswith(" -m plasticollapse")


# --------------------------------------------------------------------------- names, dry run


def test_a_grid_value_the_label_does_not_show_is_in_the_run_name(tmp_path):
    study = parse_study(
        permuted.Config, None, [*TINY_ARGV, "--grid", "lr=0.01,0.1", "--out", str(tmp_path)]
    )
    names = [Path(s.folder).name for s in plan("permuted", study)]
    configs = study.expand()
    assert names == [
        f"fte1_lr{lr}_seed0_{config_hash(c)}"
        for lr, c in zip(["0.01", "0.1"], configs, strict=True)
    ]
    # An axis the label already shows (fte5) is not repeated.
    study = parse_study(
        permuted.Config, None, [*TINY_ARGV, "--first_task_epochs", "1", "5", "--out", str(tmp_path)]
    )
    assert [Path(s.folder).name.split("_seed")[0] for s in plan("permuted", study)] == [
        "fte1",
        "fte5",
    ]


def test_setting_text():
    assert base.setting_text("lr", 0.01) == "lr0.01"
    assert base.setting_text("hidden", (64, 64)) == "hidden64-64"
    assert base.setting_text("dataset", "fashion-mnist") == "dataset-fashion-mnist"
    assert base.setting_text("augment", True) == "augment-true"
    assert base.setting_text("data", "a/b c") == "data-a-b-c"


def test_an_old_style_folder_of_the_same_run_is_found_and_resumed(toy, tmp_path, capsys):
    out = tmp_path / "runs"
    config = toy_experiment.Config(seed=0, out=str(out), steps=3, sleep=0.001)
    old = out / f"toy3_seed0_{config_hash(config)}"  # the naming before axes were shown
    folder = RunFolder.open(old, "toy", json.loads(json.dumps(config.__dict__)), "cpu", old.name)
    folder.append_metrics({"step": 0, "value": 0})
    folder.save_checkpoint({"step": 1})
    preset = tmp_path / "toy.toml"
    preset.write_text('experiment = "toy"\n')
    argv = ["sweep", str(preset), "--grid", "sleep=0.001,0.002", "--out", str(out)]
    assert cli.main([*argv, "--dry-run"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["state", "sleep", "seed", "folder"]
    assert table[1].split() == ["partial", "0.001", "0", str(old)]
    assert table[2].split()[:3] == ["new", "0.002", "0"] and "toy3_sleep0.002_seed0_" in table[2]
    assert cli.main([*argv, "--backend", "serial"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [old.name, Path(table[2].split()[-1]).name]
    )
    assert (old / "calls.log").read_text().startswith("start=1 ")  # resumed, not restarted
    assert [r["value"] for r in RunFolder(old).read_metrics()] == [0, 1, 2]
    capsys.readouterr()
    assert cli.main([*argv, "--dry-run"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:3]] == [
        "complete",
        "complete",
    ]


def test_run_id_keeps_the_old_form_without_axes(toy):
    config = toy_experiment.Config(seed=2, steps=4)
    assert run_id(studies.get_study("toy"), config) == f"toy4_seed2_{config_hash(config)}"


# --------------------------------------------------------------------------- divergence


def test_a_diverged_run_says_so_in_the_table_and_the_exit_status(tmp_path, capsys):
    argv = [
        "warmstart",
        *("--dataset", "digits", "--model", "mlp", "--hidden", "16", "--lr", "1000"),
        *("--warmup_epochs", "2", "--checkpoint_every", "1", "--finetune_max_epochs", "1"),
        *("--train_samples", "200", "--device", "cpu", "--progress", "false", "--threads", "1"),
        *("--out", str(tmp_path), "--backend", "serial"),
    ]
    assert cli.main(argv) == 4
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("diverged ")]
    assert "loss = " in line and "at step 2" in line
    assert "1 diverged of 1 runs" in out and "1 run diverged" in out
    assert cli.main(argv) == 4  # found complete later: still diverged
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("skipped ")]
    assert line.endswith("complete, diverged")
    assert "0 done, 0 resumed, 1 skipped, 0 failed of 1 runs" in out and "1 run diverged" in out


# --------------------------------------------------------------------------- threads


def test_the_thread_count_a_config_sets_is_the_one_used_and_recorded(toy, tmp_path, capsys):
    preset = tmp_path / "toy.toml"
    preset.write_text('experiment = "toy"\nthreads = 1\n')
    out = tmp_path / "runs"
    argv = ["sweep", str(preset), "--backend", "process", "--workers", "1", "--out", str(out)]
    assert cli.main(argv) == 0
    (run,) = out.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    recorded = json.loads((run / "config.json").read_text())["config"]["threads"]
    assert summary["torch_threads"] == recorded == 1
    assert "1 worker processes x 1 threads" in capsys.readouterr().out


def test_threads_0_records_the_count_the_backend_chose(toy, tmp_path):
    (spec,) = toy_runs(tmp_path, seeds=(0,))
    recorded = json.loads((Path(spec.folder) / "config.json").read_text())["config"]["threads"]
    summary = json.loads((Path(spec.folder) / "summary.json").read_text())
    assert recorded == summary["torch_threads"] == torch.get_num_threads()


# --------------------------------------------------------------------------- durable folders


def killed_at_task_2(tmp_path):
    """A tiny permuted run killed after 2 tasks (rows 0 and 1; checkpoints after tasks 0 and
    1), and the rows of the same run uninterrupted."""
    reference = spec_for(tmp_path / "whole")
    execute(reference)
    spec = spec_for(tmp_path / "killed")

    def kill(task, model, row):
        if task == 2:
            raise KeyboardInterrupt

    folder = RunFolder.open(spec.folder, "permuted", spec.config, "cpu", spec.run_id)
    with pytest.raises(KeyboardInterrupt):
        permuted.run(from_dict(permuted.Config, spec.config), folder, callbacks=[kill])
    assert [r["task"] for r in rows_of(spec)] == [0, 1]
    return spec, without_seconds(rows_of(reference))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garble(path: Path) -> None:
    path.write_bytes(b"\x00garbage" * 64)


@pytest.mark.parametrize("damage", [truncate, garble])
def test_a_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, damage):
    spec, expected = killed_at_task_2(tmp_path)
    folder = RunFolder(spec.folder)
    assert torch.load(folder.previous_checkpoint_path, weights_only=True)["metrics_rows"] == 1
    damage(folder.checkpoint_path)
    capsys.readouterr()
    assert execute(spec) == "resumed"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint.pt is unreadable" in err[0]
    assert "resuming from checkpoint.prev.pt (its 1 metrics rows kept" in err[0]
    assert without_seconds(rows_of(spec)) == expected
    assert (Path(spec.folder) / "checkpoint.corrupt.pt").exists()


def test_both_checkpoints_corrupt_restart_the_run_from_scratch(tmp_path, capsys):
    spec, expected = killed_at_task_2(tmp_path)
    folder = RunFolder(spec.folder)
    truncate(folder.checkpoint_path)
    garble(folder.previous_checkpoint_path)
    capsys.readouterr()
    assert execute(spec) == "resumed"
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "no usable checkpoint, restarting the run" in line
    assert without_seconds(rows_of(spec)) == expected


def test_killed_between_the_two_renames_resumes_from_the_previous_checkpoint(tmp_path, capsys):
    spec, expected = killed_at_task_2(tmp_path)
    folder = RunFolder(spec.folder)
    folder.checkpoint_path.unlink()  # checkpoint.pt moved to .prev, the new one not yet in
    capsys.readouterr()
    assert execute(spec) == "resumed"
    assert capsys.readouterr().err == ""  # nothing went wrong: a kill at a known moment
    assert without_seconds(rows_of(spec)) == expected


def test_a_checkpoint_ahead_of_its_metrics_is_not_used(tmp_path, capsys):
    spec, expected = killed_at_task_2(tmp_path)
    folder = RunFolder(spec.folder)
    folder.truncate_metrics(1)  # rows lost (a restored backup, a hand edit)
    assert execute(spec) == "resumed"
    assert "ahead of metrics.jsonl (2 rows recorded, 1 on disk)" in capsys.readouterr().err
    assert without_seconds(rows_of(spec)) == expected


def test_stale_temp_files_of_killed_writes_are_removed_on_resume(tmp_path):
    spec, expected = killed_at_task_2(tmp_path)
    stale = [Path(spec.folder) / n for n in (".checkpoint.pt.x1.tmp", ".metrics.jsonl.x2.tmp")]
    for path in stale:
        path.write_bytes(b"half a write")
    assert execute(spec) == "resumed"
    assert not any(p.exists() for p in stale)
    assert without_seconds(rows_of(spec)) == expected


def test_a_checkpoint_is_fsynced_before_its_rename_and_the_folder_after(tmp_path, monkeypatch):
    folder = RunFolder.open(tmp_path / "run", "toy", {"seed": 0}, "cpu", "run")
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", stat.S_ISDIR(os.fstat(fd).st_mode)))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(folder_module.os, "fsync", fsync)
    monkeypatch.setattr(folder_module.os, "replace", replace)
    folder.save_checkpoint({"step": 1})
    assert events == [("fsync", False), ("replace", "checkpoint.pt"), ("fsync", True)]
    events.clear()
    folder.save_checkpoint({"step": 2})
    assert events == [
        ("fsync", False),
        ("replace", "checkpoint.prev.pt"),
        ("replace", "checkpoint.pt"),
        ("fsync", True),
    ]
    assert folder.load_checkpoint()["step"] == 2
    assert torch.load(folder.previous_checkpoint_path, weights_only=True)["step"] == 1


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_run_files_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        spec = spec_for(tmp_path, tasks=2)
        execute(spec)
        atomic_write_text(Path(spec.folder) / "error.txt", "x")
    finally:
        os.umask(old)
    files = sorted(p for p in Path(spec.folder).iterdir() if p.is_file())
    names = {p.name for p in files}
    assert {"config.json", "metrics.jsonl", "checkpoint.pt", "checkpoint.prev.pt"} <= names
    assert {"summary.json", "error.txt"} <= names
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {
        name: oct(mode) for name in names
    }
