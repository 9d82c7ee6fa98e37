"""What the stream studies' tests share: tiny digits configs and the end-to-end checks every
stream must pass (its rows' keys, resume after a kill)."""

from __future__ import annotations

import math

import pytest

from plasticollapse.runs.config import Study, from_dict
from plasticollapse.runs.folder import RunFolder
from plasticollapse.studies import get_study
from plasticollapse.studies.base import execute, plan

#: Fields every tiny stream run shares: digits, a 16-16 MLP, all probes on, one thread.
COMMON = {
    "dataset": "digits",
    "hidden": (16, 16),
    "test_samples": 120,
    "measure_samples": 150,
    "plasticity_probe": True,
    "probe_samples": 64,
    "probe_steps": 5,
    "retrained_baseline": True,
    "forgetting": True,
    "progress": False,
    "threads": 1,
}

#: A tiny run of each stream study: a few tasks of well under a second each.
TINY = {
    "label_permuted": {**COMMON, "tasks": 3, "task_samples": 200, "lr": 0.05},
    "random_labels": {
        **COMMON,
        "tasks": 3,
        "subset_size": 100,
        "epochs_per_task": 3,
        "batch_size": 8,
        "lr": 0.05,
    },
    "class_incremental": {
        **COMMON,
        "tasks": 3,
        "train_samples": 600,
        "epochs_per_task": 2,
        "batch_size": 16,
        "lr": 0.05,
    },
}

TRAINING_KEYS = (
    "task",
    "task_epochs",
    "epoch",
    "accuracy",
    "accuracy_first_epoch",
    "accuracy_last_epoch",
    "loss",
    "pl",
    "num_train",
    "num_test",
    "classes_seen",
    "seconds",
)
#: Collapse and plasticity keys, measured on the training samples (accuracy/loss renamed)
#: and, prefixed test_, on the held-out split.
MEASURED_KEYS = (
    "nc1",
    "nc1_quotient",
    "cdnv",
    "nc2_equinorm_means",
    "nc2_equiangularity",
    "nc2_etf_error_means",
    "nc3_papyan",
    "nc4_agreement",
    "dormant_fraction",
    "effective_rank",
    "weight_magnitude",
)
LAYER_KEYS = tuple(
    f"{m}_layer{k}"
    for k in (1, 2)
    for m in ("nc1", "nc1_quotient", "cdnv", "nc4_agreement", "dormant_fraction", "srank")
)
PROBE_KEYS = (
    "plasticity_score",
    "probe_loss_before",
    "probe_loss_after",
    "retrained_accuracy",
    "retrained_test_accuracy",
    "retrained_gap",
    "task0_accuracy",
    "task0_test_accuracy",
)


def every_key() -> tuple[str, ...]:
    """Every key the issue asks each stream's rows to hold."""
    measured = (*MEASURED_KEYS, *LAYER_KEYS)
    return (
        *TRAINING_KEYS,
        "eval_accuracy",
        "eval_loss",
        *measured,
        "test_accuracy",
        "test_loss",
        *(f"test_{k}" for k in measured),
        *PROBE_KEYS,
    )


def spec_for(study: str, out, **fields):
    config_class = get_study(study).Config
    (spec,) = plan(study, Study(config_class, {**TINY[study], "out": str(out), **fields}, {}))
    return spec


def rows_of(spec) -> list[dict]:
    return RunFolder(spec.folder).read_metrics()


def without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def check_rows_hold_every_key(study: str, tmp_path) -> list[dict]:
    """Run the study tiny; every row has every key, finite, accuracies in [0, 1]."""
    spec = spec_for(study, tmp_path)
    assert execute(spec) == "done"
    rows = rows_of(spec)
    assert [r["task"] for r in rows] == list(range(TINY[study]["tasks"]))
    for row in rows:
        for key in every_key():
            assert key in row, key
            assert isinstance(row[key], (int, float)) and math.isfinite(row[key]), key
        for key in ("accuracy", "test_accuracy", "eval_accuracy", "task0_accuracy"):
            assert 0 <= row[key] <= 1, key
        assert math.isclose(row["pl"], rows[0]["accuracy"] - row["accuracy"])
        assert math.isclose(row["retrained_gap"], row["retrained_accuracy"] - row["accuracy"])
    summary = RunFolder(spec.folder).read_summary()
    assert summary["status"] == "complete" and summary["tasks_done"] == len(rows)
    assert summary["final_test_accuracy"] == rows[-1]["test_accuracy"]
    return rows


def check_resume_after_a_kill(study: str, tmp_path) -> None:
    """Killed after task 1's row was written (before its checkpoint), the run resumes to
    exactly the rows of an uninterrupted run."""
    whole = spec_for(study, tmp_path / "whole")
    execute(whole)
    spec = spec_for(study, tmp_path / "killed")
    experiment = get_study(study)

    def kill_at_task_1(task, model, row):
        if task == 1:
            raise KeyboardInterrupt

    folder = RunFolder.open(spec.folder, study, spec.config, "cpu", spec.run_id)
    with pytest.raises(KeyboardInterrupt):
        experiment.run(from_dict(experiment.Config, spec.config), folder, [kill_at_task_1])
    assert [r["task"] for r in rows_of(spec)] == [0]
    folder.append_metrics({"task": 1, "accuracy": -1.0})  # written after the checkpoint
    assert execute(spec) == "resumed"
    assert without_seconds(rows_of(spec)) == without_seconds(rows_of(whole))
    assert execute(spec) == "skipped"


def check_full_preset_pins_the_source(study: str, source: dict, keys=None) -> None:
    """The full preset holds the source's value of every constant (of ``keys``) that is a
    config field."""
    from plasticollapse.runs.config import load_toml

    preset = load_toml(f"full/{study}")
    fields = get_study(study).Config.__dataclass_fields__
    pinned = {k: v for k, v in source.items() if k in fields and (keys is None or k in keys)}
    assert pinned, study
    for name, value in pinned.items():
        got = preset[name]
        assert (tuple(got) if isinstance(got, list) else got) == value, name


def check_quick_preset_runs_shortened(study: str, tmp_path, capsys, *shorter: str) -> None:
    """``plasticollapse <study> --config quick/<study>`` runs (2 tasks, 1 seed)."""
    from plasticollapse import cli

    argv = [study, "--config", f"quick/{study}", "--tasks", "2", "--seeds", "0", *shorter]
    argv += ["--out", str(tmp_path), "--progress", "false"]
    assert cli.main(argv) == 0
    assert "1 stream run(s)" in capsys.readouterr().out
    # (_shared holds the retrained baselines the runs under out share)
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir() and p.name != "_shared"]
    assert RunFolder(run).read_summary()["tasks_done"] == 2
