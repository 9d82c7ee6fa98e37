"""Run folders are data, not code: a checkpoint is plain data, read with weights_only=True,
so a shared run folder whose checkpoint pickles a call (``os.system``) never runs it; and
config.json names the device the run used."""

import enum
import json
import os
import pickle
import subprocess
import sys
from collections import OrderedDict, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

import plasticollapse
from plasticollapse.cli import main
from plasticollapse.runs.checkpoint import NotPlainDataError, check_plain_data, read_state
from plasticollapse.runs.config import Study, from_dict
from plasticollapse.runs.folder import RunFolder
from plasticollapse.runs.runtime import cpu_model, resolve_device
from plasticollapse.studies import get_study
from plasticollapse.studies.base import execute, plan
from plasticollapse.studies.permuted import run as permuted

#: A Permuted run through the real CLI: the quick digits preset, 2 tasks of a 16-16 MLP (the
#: reference engine: a fresh process would compile the fast one's kernels first).
CLI_ARGV = [
    *("permuted", "--config", "quick/permuted_digits", "--tasks", "2", "--hidden", "16", "16"),
    *("--first_task_epochs", "1", "--seeds", "0", "--train_samples", "200"),
    *("--measure_samples", "150", "--engine", "reference", "--device", "cpu"),
    *("--backend", "serial"),
]


class RunsAShellCommand:
    """What a hostile checkpoint pickles: loading it with pickle calls ``os.system``."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def hostile_state(marker: Path) -> dict:
    """A checkpoint-shaped state whose ``model`` would create ``marker`` when unpickled."""
    return {"metrics_rows": 0, "task": 0, "model": RunsAShellCommand(f"touch '{marker}'")}


def cli(argv: list[str]) -> subprocess.CompletedProcess:
    """``python -m plasticollapse *argv`` in a fresh process running this checkout's code."""
    src = str(Path(plasticollapse.__file__).parents[1])
    path = os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "plasticollapse", *argv]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


# --------------------------------------------------------------------------- the CLI


@pytest.mark.slow  # two runs, one in a fresh process (its imports: ~10 s of a loaded machine)
def test_a_hostile_checkpoint_in_a_shared_folder_is_not_run_but_set_aside(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main([*CLI_ARGV, "--out", str(out)]) == 0  # in this process: one start saved
    (folder_path,) = [p.parent for p in out.rglob("config.json")]
    folder = RunFolder(folder_path)
    uninterrupted = without_seconds(folder.read_metrics())
    assert [r["task"] for r in uninterrupted] == [0, 1]
    # A run stopped after its last checkpoint, before summary.json: what a kill leaves.
    folder.summary_path.unlink()
    marker = tmp_path / "the checkpoint ran code"
    with open(folder.checkpoint_path, "wb") as f:
        torch.save(hostile_state(marker), f)  # torch's zip format
    with open(folder.previous_checkpoint_path, "wb") as f:
        pickle.dump(hostile_state(marker), f, protocol=2)  # a bare pickle
    planted = folder.checkpoint_path.read_bytes()
    # The payload is real: pickle runs it (in this process, as a resume used to).
    torch.load(folder.checkpoint_path, weights_only=False)
    assert marker.exists()
    marker.unlink()

    again = cli([*CLI_ARGV, "--out", str(out)])  # the same command, in a fresh process

    assert again.returncode == 0, again.stderr
    assert not marker.exists()
    assert (folder_path / "checkpoint.corrupt.pt").read_bytes() == planted
    lines = [line for line in again.stderr.splitlines() if line.startswith("plasticollapse: ")]
    (line,) = lines
    assert "checkpoint.pt holds a pickled object (posix.system), not plain data" in line
    assert "no usable checkpoint, restarting the run" in line
    assert folder.is_complete
    assert without_seconds(folder.read_metrics()) == uninterrupted
    # The checkpoints the rerun wrote are its own, plain data again.
    assert read_state(folder.checkpoint_path)[1] == ""
    record = json.loads(folder.config_path.read_text())
    assert record["device"] == "cpu" and record["device_name"] == cpu_model()


# --------------------------------------------------------------------------- resuming

TINY = {
    "dataset": "digits",
    "hidden": (16, 16),
    "lr": 0.05,
    "tasks": 3,
    "train_samples": 200,
    "measure_samples": 150,
    "engine": "reference",
    "progress": False,
    "threads": 1,
}


def permuted_spec(out):
    (spec,) = plan("permuted", Study(permuted.Config, {**TINY, "out": str(out)}, {}))
    return spec


def test_a_hostile_latest_checkpoint_resumes_from_the_previous_one(tmp_path, capsys):
    reference = permuted_spec(tmp_path / "whole")
    execute(reference)
    spec = permuted_spec(tmp_path / "killed")

    def kill_at_task_2(task, model, row):
        if task == 2:
            raise KeyboardInterrupt

    folder = RunFolder.open(spec.folder, "permuted", spec.config, "cpu", spec.run_id)
    with pytest.raises(KeyboardInterrupt):
        permuted.run(from_dict(permuted.Config, spec.config), folder, [kill_at_task_2])
    marker = tmp_path / "marker"
    torch.save(hostile_state(marker), folder.checkpoint_path)
    capsys.readouterr()

    assert execute(spec) == "resumed"

    assert not marker.exists()
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "checkpoint.pt holds a pickled object (posix.system)" in line
    assert "resuming from checkpoint.prev.pt (its 1 metrics rows kept" in line
    assert (Path(spec.folder) / "checkpoint.corrupt.pt").exists()
    reference_rows = RunFolder(reference.folder).read_metrics()
    assert without_seconds(folder.read_metrics()) == without_seconds(reference_rows)


# --------------------------------------------------------------------------- every study

#: A tiny run of each study with the remedies that keep state (their counters, CBP's
#: utilities and RNG position, L2 Init's theta_0), each checkpointing several times.
STUDY_RUNS = {
    "permuted reference": (
        "permuted",
        {**TINY, "batch_size": 4, "first_task_epochs": 2},
        ("shrink_perturb", "nc1_reg", "l2_init", "redo", "cbp"),
        {"redo_every": 5, "shrink_perturb_every": 7},
    ),
    "permuted fast": (
        "permuted",
        {**TINY, "engine": "fast"},
        ("redo", "cbp"),
        {"redo_every": 5},
    ),
    "bitflip_regression": (
        "bitflip_regression",
        {"flip_after": 40, "tasks": 3, "hidden": (6, 4), "outputs": 2, "eval_samples": 64},
        ("shrink_perturb", "l2_init", "redo"),
        {"progress": False},
    ),
    "warmstart": (
        "warmstart",
        {"dataset": "digits", "model": "mlp", "hidden": (16,), "train_samples": 200},
        ("shrink_perturb", "l2_init", "redo"),
        {"warmup_epochs": 2, "checkpoint_every": 1, "finetune_max_epochs": 3, "amp": False},
    ),
}
STREAM = {"dataset": "digits", "hidden": (16, 16), "test_samples": 120, "measure_samples": 150}
STUDY_RUNS.update(
    {
        "class_incremental": (
            "class_incremental",
            {**STREAM, "tasks": 2, "train_samples": 600, "batch_size": 16},
            ("redo", "cbp"),
            {"epochs_per_task": 2},
        ),
        "label_permuted": (
            "label_permuted",
            {**STREAM, "tasks": 2, "task_samples": 200},
            ("shrink_perturb", "l2_init"),
            {"shrink_perturb_every": 5},
        ),
        "random_labels": (
            "random_labels",
            {**STREAM, "tasks": 2, "subset_size": 100, "batch_size": 8},
            ("nc1_reg", "cbp"),
            {"epochs_per_task": 2},
        ),
    }
)


def same_data(a, b) -> bool:
    """Whether two states are equal, container types and tensor dtypes included."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_data(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same_data(x, y) for x, y in zip(a, b, strict=True))
    return a == b or (a != a and b != b)  # NaN equals NaN here


@pytest.mark.parametrize("case", list(STUDY_RUNS))
def test_every_checkpoint_of_every_study_round_trips_as_plain_data(case, tmp_path, monkeypatch):
    name, fields, remedies, extra = STUDY_RUNS[case]
    config = {**fields, **extra, "remedies": remedies, "out": str(tmp_path), "progress": False}
    (spec,) = plan(name, Study(get_study(name).Config, config, {}))
    saved = []
    real_save = RunFolder.save_checkpoint

    def save_and_reread(folder, state):
        real_save(folder, state)
        written = {**state, "metrics_rows": len(folder.read_metrics())}
        loaded = torch.load(folder.checkpoint_path, map_location="cpu", weights_only=True)
        saved.append(same_data(written, loaded))

    monkeypatch.setattr(RunFolder, "save_checkpoint", save_and_reread)
    execute(spec)
    assert len(saved) >= 2 and all(saved)


# --------------------------------------------------------------------------- the check


class Colour(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize(
    "value, where, what",
    [
        ({"a": np.zeros(3)}, "state['a']", "numpy.ndarray"),
        ({"a": [1, np.float64(0.5)]}, "state['a'][1]", "numpy.float64"),
        ({"a": {"b": Colour.RED}}, "state['a']['b']", "Colour"),
        ({"a": {1, 2}}, "state['a']", "builtins.set"),
        ({"a": defaultdict(list)}, "state['a']", "collections.defaultdict"),
        ({"a": torch.device("cpu")}, "state['a']", "torch.device"),
    ],
)
def test_state_that_is_not_plain_data_is_refused_naming_the_entry(value, where, what):
    with pytest.raises(NotPlainDataError, match=r"checkpoint (.+?) is a (.+?): a checkpoint") as e:
        check_plain_data(value)
    assert str(e.value).startswith(f"checkpoint {where} is a ") and what in str(e.value)


def test_a_key_that_is_not_a_string_or_int_is_refused():
    with pytest.raises(NotPlainDataError, match=r"state\['a'\] has a key \(1, 2\) of type tuple"):
        check_plain_data({"a": {(1, 2): 0.0}})


def test_plain_data_passes_and_loads_back_with_weights_only(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    state = {
        "model": model.state_dict(),  # an OrderedDict of tensors
        "optimizer": optimizer.state_dict(),  # int keys, None, floats, bools
        "stats": [(3, 4, 0.5)],
        "extra": OrderedDict(a=None, b="x", c=True, d=torch.nn.Parameter(torch.ones(2))),
    }
    check_plain_data(state)
    folder = RunFolder.open(tmp_path / "run", "toy", {"seed": 0}, "cpu", "run")
    folder.save_checkpoint(state)
    loaded, problem = read_state(folder.checkpoint_path)
    assert problem == "" and same_data({**state, "metrics_rows": 0}, loaded)


def test_a_state_that_is_not_plain_data_is_never_written(tmp_path):
    folder = RunFolder.open(tmp_path / "run", "toy", {"seed": 0}, "cpu", "run")
    folder.save_checkpoint({"step": 1})
    before = folder.checkpoint_path.read_bytes()
    with pytest.raises(NotPlainDataError, match=r"state\['rng'\] is a numpy.ndarray"):
        folder.save_checkpoint({"step": 2, "rng": np.zeros(2)})
    assert folder.checkpoint_path.read_bytes() == before
    assert not folder.previous_checkpoint_path.exists()
    assert not list(folder.path.glob(".*.tmp"))


def test_garbage_is_unreadable_and_a_pickled_object_is_named(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00garbage" * 64)
    assert read_state(garbage)[1].startswith("is unreadable (UnpicklingError: ")
    hostile = tmp_path / "hostile.pt"
    torch.save(hostile_state(tmp_path / "marker"), hostile)
    state, problem = read_state(hostile)
    assert state is None and not (tmp_path / "marker").exists()
    assert problem.startswith("holds a pickled object (posix.system), not plain data")


# --------------------------------------------------------------------------- the device


def test_config_json_records_the_device_used_and_its_name(tmp_path):
    folder = RunFolder.open(tmp_path / "run", "toy", {"device": "auto"}, "auto", "run")
    record = json.loads(folder.config_path.read_text())
    used = resolve_device("auto")
    expected = "cpu" if used.type == "cpu" else f"{used.type}:{torch.cuda.current_device()}"
    assert record["device"] == expected and record["device_requested"] == "auto"
    gpu = torch.cuda.get_device_name(used) if used.type == "cuda" else None
    assert record["device_name"] == (gpu or cpu_model())
    assert isinstance(record["device_name"], str) and record["device_name"] not in ("", "auto")


def test_the_cpu_model_is_the_one_proc_cpuinfo_names():
    if not Path("/proc/cpuinfo").exists():
        pytest.skip("no /proc/cpuinfo here")
    names = [
        line.partition(":")[2].strip()
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.partition(":")[0].strip() == "model name"
    ]
    if not names:
        pytest.skip("this /proc/cpuinfo names no model")
    assert cpu_model() == names[0]


def test_a_resume_records_the_device_it_now_runs_on(tmp_path):
    RunFolder.open(tmp_path / "run", "toy", {"seed": 0, "device": "auto"}, "auto", "run")
    folder = RunFolder.open(tmp_path / "run", "toy", {"seed": 0, "device": "cpu"}, "cpu", "run")
    record = json.loads(folder.config_path.read_text())
    assert record["device_requested"] == "cpu" and record["config"]["device"] == "cpu"
    assert record["device"] == "cpu" and record["device_name"] == cpu_model()


def test_the_device_does_not_change_a_runs_folder(tmp_path):
    def folder_for(device):
        config = {**TINY, "device": device, "out": str(tmp_path)}
        (spec,) = plan("permuted", Study(permuted.Config, config, {}))
        return spec.folder

    assert folder_for("auto") == folder_for("cpu")
