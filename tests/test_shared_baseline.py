"""The retrained baseline is trained once per seed and task for every run under one ``out``
(studies/streams/shared_baseline.py): the runs that read it get the rows they would have
computed, and only runs that would compute the same bits share a file."""

import json

import pytest
from stream_helpers import rows_of, spec_for, without_seconds

from plasticollapse.studies.base import execute
from plasticollapse.studies.streams import measure
from plasticollapse.studies.streams.shared_baseline import FOLDER

#: class_incremental, tiny, with only the retrained baseline among the probes.
FIELDS = {"plasticity_probe": False, "forgetting": False}
RETRAINED = ("retrained_accuracy", "retrained_test_accuracy", "retrained_gap")


@pytest.fixture
def trainings(monkeypatch):
    """The (seed, task) of every retrained baseline actually trained."""
    done = []
    train = measure.train_retrained_baseline

    def counted(config, stream, task, device):
        done.append((config.seed, task.index))
        return train(config, stream, task, device)

    monkeypatch.setattr(measure, "train_retrained_baseline", counted)
    return done


def run(out, **fields):
    spec = spec_for("class_incremental", out, **{**FIELDS, **fields})
    assert execute(spec) == "done"
    return spec


def test_a_second_setting_reads_the_baselines_and_gets_the_rows_it_would_compute(
    tmp_path, trainings
):
    run(tmp_path / "shared")  # plain: trains the 3 tasks' baselines
    assert trainings == [(0, 0), (0, 1), (0, 2)]
    shared = run(tmp_path / "shared", remedies=("shrink_perturb",))
    assert trainings == [(0, 0), (0, 1), (0, 2)]  # read, not trained
    alone = run(tmp_path / "alone", remedies=("shrink_perturb",))
    assert len(trainings) == 6  # a fresh out trains its own
    assert without_seconds(rows_of(shared)) == without_seconds(rows_of(alone))
    assert all(key in row for row in rows_of(shared) for key in RETRAINED)


def test_only_runs_that_would_compute_the_same_baseline_share_it(tmp_path, trainings):
    out = tmp_path / "out"
    run(out)
    assert len(trainings) == 3
    run(out, measure_samples=100, forgetting=True)  # how it is measured: shared
    assert len(trainings) == 3
    run(out, seed=1)  # another seed
    assert trainings[3:] == [(1, 0), (1, 1), (1, 2)]
    run(out, lr=0.03)  # another training budget
    run(out, hidden=(16, 8))  # another network
    assert len(trainings) == 12
    assert len(list((out / FOLDER).glob("*.json"))) == 12


@pytest.mark.parametrize(
    "content",
    [
        "not json {",
        json.dumps({"identity": {"task": 0}, "values": {"retrained_accuracy": 1.0}}),
        "BAD VALUES",
    ],
)
def test_a_damaged_or_foreign_file_is_retrained_and_rewritten(tmp_path, trainings, content):
    out = tmp_path / "out"
    first = run(out)
    files = sorted((out / FOLDER).glob("*.json"))
    assert len(files) == 3
    for path in files:
        if content == "BAD VALUES":
            record = json.loads(path.read_text())
            record["values"]["retrained_accuracy"] = float("nan")
            path.write_text(json.dumps(record))
        else:
            path.write_text(content)
    again = run(out, remedies=("shrink_perturb",))
    assert len(trainings) == 6  # every damaged file retrained
    expected = [{k: r[k] for k in RETRAINED[:2]} for r in rows_of(first)]
    assert [{k: r[k] for k in RETRAINED[:2]} for r in rows_of(again)] == expected
    record = json.loads(files[0].read_text())  # rewritten whole
    assert record["identity"]["study"] == "class_incremental"
    assert set(record["values"]) == set(RETRAINED[:2])
