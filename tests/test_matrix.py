"""The study x remedy matrix: presets, planning through each study, running, the table with
bootstrap intervals over seeds, correlations across remedies, the heatmap and the CLI.

A toy study with remedies (below, known values per remedy and seed) checks the numbers; the
plain toy study (tests/toy_experiment.py, no remedies field) gives n/a cells; tiny permuted
(digits) and bit-flipping runs check the real studies end to end.
"""

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plasticollapse import cli, matrix, studies
from plasticollapse.matrix.config import load_matrix
from plasticollapse.matrix.figure import scaled_change
from plasticollapse.matrix.table import final_value
from plasticollapse.remedies.fields import RemedyFields
from plasticollapse.runs.config import field

SRC = Path(matrix.__file__).resolve().parent

# --------------------------------------------------------------------------- a toy with remedies

#: The remedies the toy knows, in the order that sets their values.
TOY_REMEDIES = ("plain", "shrink_perturb", "redo")


@dataclasses.dataclass(frozen=True)
class ToyConfig(RemedyFields):
    seed: int = field(0, help="seed")
    out: str = field("runs/rtoy", help="folder")
    device: str = field("cpu", help="device")
    threads: int = field(0, help="threads")
    steps: int = field(3, help="rows")


def toy_values(remedy: str, seed: int, step: int) -> dict:
    """accuracy = 0.9 - 0.1 k + 0.01 seed + 0.02 step, nc1 = 0.2 + 0.1 k (k: remedy index)."""
    k = TOY_REMEDIES.index(remedy)
    return {"accuracy": 0.9 - 0.1 * k + 0.01 * seed + 0.02 * step, "nc1": 0.2 + 0.1 * k}


class RemedyToy:
    name = "rtoy"
    title = "a toy with remedies"
    Config = ToyConfig
    step_key = "step"
    setting_keys = ()

    def run_label(self, config):
        return "+".join(config.remedies) or "none"

    def estimated_cost(self, config):
        return 1.0

    def run(self, config, folder, callbacks=()):
        (remedy,) = config.remedies
        for step in range(config.steps):
            folder.append_metrics({"step": step, **toy_values(remedy, config.seed, step)})
        return {"status": "complete"}

    def summarise(self, specs):
        return f"{len(specs)} rtoy run(s)"

    def report(self, results):  # pragma: no cover - the matrix does not call it
        raise NotImplementedError


RTOY = RemedyToy()


@pytest.fixture
def toys(monkeypatch):
    monkeypatch.setitem(studies.REGISTRY, "rtoy", f"{__name__}:RTOY")
    monkeypatch.setitem(studies.REGISTRY, "toy", "toy_experiment:STUDY")


def write_preset(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


TOY_PRESET = """
experiment = "matrix"
remedies = ["plain", "shrink_perturb", "redo"]
seeds = "0-1"
out = "{out}"
last = 2
metrics = ["accuracy", "nc1", "dormant_fraction"]
correlate = [["nc1", "accuracy"], ["dormant_fraction", "accuracy"]]
bootstrap = 200

[studies.rtoy]
steps = 3

[studies.toy]
steps = 2
"""


def toy_matrix(tmp_path, **argv):
    preset = write_preset(tmp_path / "m.toml", TOY_PRESET.format(out=tmp_path / "runs"))
    code = cli.main(["matrix", str(preset), "--backend", "serial", *argv.get("extra", [])])
    return code, tmp_path / "runs" / "matrix"


def test_the_table_holds_each_cells_mean_and_bootstrap_interval_over_seeds(toys, tmp_path):
    code, folder = toy_matrix(tmp_path)
    assert code == 0
    table = pd.read_csv(folder / "matrix.csv")
    assert list(zip(table["study"], table["remedy"], strict=True)) == [
        (s, r) for s in ("rtoy", "toy") for r in TOY_REMEDIES
    ]
    toy = table[table["study"] == "rtoy"].set_index("remedy")
    for remedy in TOY_REMEDIES:
        # A run's value: mean of its last 2 steps (1 and 2); then the mean over seeds 0, 1.
        per_seed = [np.mean([toy_values(remedy, s, t)["accuracy"] for t in (1, 2)]) for s in (0, 1)]
        row = toy.loc[remedy]
        assert row["accuracy"] == pytest.approx(np.mean(per_seed))
        assert min(per_seed) - 1e-12 <= row["accuracy_low"] <= row["accuracy_high"]
        assert row["accuracy_high"] <= max(per_seed) + 1e-12
        assert row["accuracy_n"] == 2 and row["runs"] == "2/2"
        assert row["nc1"] == pytest.approx(toy_values(remedy, 0, 0)["nc1"])
        assert math.isnan(row["dormant_fraction"]) and row["dormant_fraction_n"] == 0
    # The plain toy has no remedies field: its cells are n/a, with the reason, not an error.
    plain_toy = table[table["study"] == "toy"]
    assert plain_toy["accuracy"].isna().all()
    assert plain_toy["note"].str.contains("not applicable: unknown field 'remedies'").all()

    runs = pd.read_csv(folder / "runs.csv")
    assert len(runs) == 12 and set(runs[runs["study"] == "toy"]["status"]) == {"not_applicable"}

    # nc1 = 0.2 + 0.1 k and accuracy = const - 0.1 k across remedies: r = -1 exactly.
    corr = pd.read_csv(folder / "correlations.csv")
    nc1 = corr[(corr["study"] == "rtoy") & (corr["x"] == "nc1")].iloc[0]
    assert nc1["r_remedies"] == pytest.approx(-1) and nc1["n_remedies"] == 3
    assert nc1["rho_remedies"] == pytest.approx(-1)
    assert nc1["n_runs"] == 6 and nc1["r_runs"] < -0.99
    missing = corr[(corr["study"] == "rtoy") & (corr["x"] == "dormant_fraction")].iloc[0]
    assert math.isnan(missing["r_remedies"]) and missing["n_remedies"] == 0

    md = (folder / "matrix.md").read_text()
    assert "| rtoy | plain | 2/2 | 0.935 [0.93, 0.94] | 0.2 [0.2, 0.2] | n/a |  |" in md
    assert "| rtoy | nc1 vs accuracy | -1.00 | -1.00 | 3 |" in md
    assert "| rtoy | dormant_fraction vs accuracy | n/a | n/a | 0 | n/a | n/a | 0 |" in md
    assert "(matrix_heatmap.png)" in md and (folder / "matrix_heatmap.png").stat().st_size > 0


def test_dry_run_lists_cells_and_read_only_runs_nothing(toys, tmp_path, capsys, monkeypatch):
    code, folder = toy_matrix(tmp_path, extra=["--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and not folder.exists()
    assert "12 cells: 6 new, 6 not_applicable" in out
    assert re.search(r"rtoy\s+redo\s+1\s+new\s+\S+/rtoy/redo_seed1_", out)

    import plasticollapse.runs.sweep as sweep

    real_sweep = sweep.run_sweep
    monkeypatch.setattr(sweep, "run_sweep", lambda *a, **k: pytest.fail("read-only ran"))
    code, folder = toy_matrix(tmp_path, extra=["--read-only"])
    assert code == 0
    table = pd.read_csv(folder / "matrix.csv")
    assert table["accuracy"].isna().all() and set(table["runs"]) == {"0/2"}

    monkeypatch.setattr(sweep, "run_sweep", real_sweep)
    assert toy_matrix(tmp_path)[0] == 0
    capsys.readouterr()
    toy_matrix(tmp_path, extra=["--dry-run"])
    assert "12 cells: 6 complete, 6 not_applicable" in capsys.readouterr().out


def test_restricting_studies_remedies_and_seeds(toys, tmp_path, capsys):
    preset = write_preset(tmp_path / "m.toml", TOY_PRESET.format(out=tmp_path / "runs"))
    argv = ["matrix", str(preset), "--dry-run", "--studies", "rtoy", "--remedies", "redo"]
    assert cli.main([*argv, "--seeds", "3-5"]) == 0
    out = capsys.readouterr().out
    assert "3 cells: 3 new" in out and "redo_seed5_" in out


# --------------------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    "change, words",
    [
        (("last = 2", "last = 2\nwhatever = 1"), ["unknown key", "whatever"]),
        (("[studies.toy]", "[studies.nope]"), ["nope", "not a registered study"]),
        (('"redo"]', '"redo", "magic"]'), ["magic", "not registered"]),
        (("steps = 3", "steps = 3\nremedies = []"), ["[studies.rtoy]", "remedies", "matrix"]),
        (("steps = 3", "steps = [3, 4]"), ["[studies.rtoy]", "steps = 3, 4", "pin"]),
        (("steps = 3", "stepz = 3"), ["[studies.rtoy]", "stepz"]),
        (("last = 2", 'last = 2\nbaseline = "l2_init"'), ["baseline", "l2_init"]),
        (('seeds = "0-1"', 'seeds = "1-0"'), ["seeds", "range"]),
        (("last = 2", 'last = "2"'), ["last", "int"]),
    ],
)
def test_matrix_preset_mistakes_are_named(toys, tmp_path, capsys, change, words):
    text = TOY_PRESET.format(out=tmp_path / "runs").replace(*change)
    preset = write_preset(tmp_path / "bad.toml", text)
    assert cli.main(["matrix", str(preset), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("plasticollapse: error:") and len(err.strip().splitlines()) == 1
    for word in words:
        assert word in err, err


def test_a_study_preset_is_not_a_matrix(capsys):
    assert cli.main(["matrix", "quick/permuted_digits", "--dry-run"]) == 2
    assert "plasticollapse permuted --config quick/permuted_digits" in capsys.readouterr().err


def test_the_shipped_matrix_presets_plan(capsys):
    for name in ("quick/matrix", "full/matrix"):
        config = load_matrix(name)
        assert config.remedies == (
            *("plain", "shrink_perturb", "l2_init", "redo", "weight_decay", "cbp"),
            *("reset_head", "reset_all", "etf_head"),
        )
        assert {s.name for s in config.studies} == set(studies.study_names()) - {"warmstart"}
        cells = matrix.plan_matrix(config)
        assert len(cells) == len(config.studies) * len(config.remedies) * len(config.seeds)
        # every cell plans, except CBP and the ETF head in the regression study (refused)
        missing = {(c.study, c.remedy) for c in cells if c.spec is None}
        assert missing == {("bitflip_regression", "cbp"), ("bitflip_regression", "etf_head")}
    assert len(load_matrix("quick/matrix").seeds) == 2


def test_the_matrix_names_no_study():
    names = [*studies.study_names(), "toy", "rtoy"]
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for name in names:
            assert not re.search(rf"[\"']{name}[\"']", text), (path, name)


# --------------------------------------------------------------------------- known answers


def test_final_value_is_the_mean_of_the_last_finite_values():
    rows = [{"a": 1.0}, {"a": None}, {"a": 3.0, "b": 1}, {"b": 2}, {"a": float("nan")}]
    assert final_value(rows, "a") == 3.0
    assert final_value(rows, "a", last=2) == 2.0
    assert final_value(rows, "a", last=10) == 2.0
    assert math.isnan(final_value(rows, "c"))


def test_scaled_change_is_relative_to_the_baseline_per_study():
    values = np.array([[1.0, 2.0, 0.0], [5.0, 5.0, 5.0], [np.nan, 1.0, 2.0], [1.0, np.nan, 3.0]])
    scaled = scaled_change(values, baseline=0)
    assert np.allclose(scaled[0], [0, 1, -1])
    assert np.allclose(scaled[1], [0, 0, 0])  # no change: white, not NaN
    assert np.isnan(scaled[2]).all()  # no baseline value
    assert np.allclose(scaled[3, [0, 2]], [0, 1]) and np.isnan(scaled[3, 1])


# --------------------------------------------------------------------------- the real studies

REAL_PRESET = """
experiment = "matrix"
remedies = ["plain", "redo", "nc1_reg"]
seeds = [0, 1]
out = "{out}"
last = 2

[studies.permuted]
dataset = "digits"
hidden = [16]
lr = 0.05
tasks = 3
train_samples = 150
measure_samples = 100
progress = false
threads = 1

[studies.bitflip_regression]
flip_after = 30
tasks = 3
hidden = [4]
eval_samples = 64
progress = false
"""


def test_tiny_permuted_and_bitflip_matrix(tmp_path, capsys):
    preset = write_preset(tmp_path / "m.toml", REAL_PRESET.format(out=tmp_path / "runs"))
    assert cli.main(["matrix", str(preset), "--backend", "serial"]) == 0
    folder = tmp_path / "runs" / "matrix"
    table = pd.read_csv(folder / "matrix.csv").set_index(["study", "remedy"])
    assert (tmp_path / "runs/permuted").is_dir() and (tmp_path / "runs/bitflip_regression").is_dir()
    for remedy in ("plain", "redo"):
        perm, bit = table.loc[("permuted", remedy)], table.loc[("bitflip_regression", remedy)]
        for key in ("accuracy", "pl", "nc1", "loss", "dormant_fraction", "effective_rank"):
            assert math.isfinite(perm[key]) and perm[f"{key}_n"] == 2, key
        for key in ("loss", "pl", "nrc1", "dormant_fraction", "effective_rank"):
            assert math.isfinite(bit[key]) and bit[f"{key}_n"] == 2, key
        assert math.isnan(perm["nrc1"]) and math.isnan(bit["accuracy"]) and math.isnan(bit["nc1"])
        assert math.isnan(perm["test_nc1"])  # no study of this branch measures held-out NC1
    # nc1_reg: refused by the bit-flipping study (regression) and by permuted at batch 1.
    for study, why in (("bitflip_regression", "classes"), ("permuted", "batch_size >= 2")):
        row = table.loc[(study, "nc1_reg")]
        assert row["note"].startswith("not applicable") and why in row["note"]
        assert row["runs"] == "0/2"
    md = (folder / "matrix.md").read_text()
    assert "| bitflip_regression | nc1_reg | 0/2 | n/a |" in md
