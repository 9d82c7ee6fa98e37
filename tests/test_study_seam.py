"""The seam: a study that is one module plus one registry line gets everything else.

The toy study (tests/toy_experiment.py) is registered here with one line and nothing else
changes: it gets run folders (plan + execute), resume after a kill, a sweep, the tidy table
with its own step key and settings, a section in the report with its table and figure, and
the ``plot`` command.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from plasticollapse import cli, load_results, studies
from plasticollapse.runs.sweep import run_sweep
from plasticollapse.studies.base import RunSpec, execute, plan_from_file
from plasticollapse.studies.report_command import main_report

TESTS = Path(__file__).resolve().parent
SRC = Path(studies.__file__).resolve().parents[1]


@pytest.fixture
def toy(monkeypatch):
    """The one registry line (undone after the test)."""
    monkeypatch.setitem(studies.REGISTRY, "toy", "toy_experiment:STUDY")
    assert "toy" in studies.study_names()


def plan(out: Path, *argv: str) -> list[RunSpec]:
    return plan_from_file("toy", None, ["--out", str(out), *argv])


def rows(spec: RunSpec) -> list[dict]:
    return [
        json.loads(x) for x in (Path(spec.folder) / "metrics.jsonl").read_text().split("\n") if x
    ]


def test_no_source_module_names_the_toy_study():
    # Neither its name as a string nor its module: the registry line is all it takes.
    for path in SRC.rglob("*.py"):
        assert not re.search(r"[\"']toy[\"']|toy_experiment", path.read_text()), path


def test_run_folders_and_resume_after_a_kill(toy, tmp_path):
    (spec,) = plan(tmp_path, "--steps", "6", "--sleep", "0.1")
    assert Path(spec.folder).name.startswith("toy6_seed0_")
    # Run it in another process and kill that process without warning mid-run.
    script = (
        f"import sys, json; sys.path[:0] = [{str(TESTS)!r}]; import toy_experiment; "
        "toy_experiment.register(); from plasticollapse.studies.base import RunSpec, execute; "
        f"execute(RunSpec(**json.loads({json.dumps(spec.__dict__)!r})))"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    while not (Path(spec.folder) / "checkpoint.pt").exists() or len(rows(spec)) < 2:
        assert proc.poll() is None and time.time() < deadline, "the run ended before the kill"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (Path(spec.folder) / "summary.json").exists()

    assert execute(spec) == "resumed"
    calls = (Path(spec.folder) / "calls.log").read_text().splitlines()
    assert len(calls) == 2 and not calls[1].startswith("start=0")  # not recomputed from 0
    assert [r["step"] for r in rows(spec)] == list(range(6))  # as an uninterrupted run
    assert execute(spec) == "skipped"


def test_sweep_tidy_table_report_and_plot(toy, tmp_path):
    out = tmp_path / "runs"
    specs = plan(out, "--steps", "3", "5", "--seeds", "0", "1")
    assert len(specs) == 4
    result = run_sweep(specs, backend="serial", echo=lambda _: None)
    assert result.ok and result.counts["done"] == 4

    # The tidy table: the toy's step key ("step") and its setting key ("steps").
    table = load_results([out])
    assert list(table.columns) == [
        "run_id",
        "experiment",
        "steps",
        "seed",
        "step",
        "metric",
        "value",
    ]
    values = table[(table["metric"] == "value") & table["step"].notna()]
    assert len(values) == 2 * (3 + 5)
    assert (values["value"] == 10 * values["seed"] + values["step"]).all()
    assert set(values.loc[values["steps"] == 3, "step"]) == {0, 1, 2}

    # The report: the toy's own section, table and figure, rendered by generic code.
    folder = main_report([out], tmp_path / "report", bootstrap=0)
    md = (folder / "report.md").read_text()
    assert "## Toy: a study in one module" in md
    # Mean over seeds 0 and 1 of the last value 10 * seed + steps - 1.
    assert "| steps=3 | 2 | 7 |" in md and "| steps=5 | 2 | 9 |" in md
    assert "(toy/figures/toy_value.png)" in md and (folder / "toy/figures/toy_value.pdf").exists()
    assert len(pd.read_csv(folder / "results.csv")) == len(table)

    # The plot command offers the toy study and draws its metric.
    png = tmp_path / "toy.png"
    argv = ["plot", str(out), "--metric", "value", "--experiment", "toy", "--out", str(png)]
    assert cli.main(argv) == 0 and png.stat().st_size > 0
