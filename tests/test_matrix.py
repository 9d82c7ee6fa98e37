"""The study x remedy matrix: presets, planning through each study, running, the table with
seed-bootstrap intervals and paired differences from plain, correlations across remedies
with their leave-one-remedy-out range, the heatmap and the CLI.

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
from plasticollapse.matrix.config import MatrixConfig, StudyEntry, load_matrix
from plasticollapse.matrix.figure import change_text, colour_value, heatmap_figure
from plasticollapse.matrix.table import (
    correlations,
    final_value,
    matrix_table,
    run_total,
    standardised,
)
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
    """accuracy = 0.9 - 0.1 k + 0.01 seed + 0.02 step, nc1 = 0.2 * 1.5^k (k: remedy index)."""
    k = TOY_REMEDIES.index(remedy)
    return {"accuracy": 0.9 - 0.1 * k + 0.01 * seed + 0.02 * step, "nc1": 0.2 * 1.5**k}


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
seeds = "0-2"
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


def test_the_table_holds_means_intervals_and_paired_differences(toys, tmp_path, capsys):
    code, folder = toy_matrix(tmp_path)
    assert code == 0
    table = pd.read_csv(folder / "matrix.csv")
    assert list(zip(table["study"], table["remedy"], strict=True)) == [
        (s, r) for s in ("rtoy", "toy") for r in TOY_REMEDIES
    ]
    toy = table[table["study"] == "rtoy"].set_index("remedy")
    for k, remedy in enumerate(TOY_REMEDIES):
        # A run's value: mean of its last 2 steps (1 and 2); then the mean over seeds 0-2.
        per_seed = [
            np.mean([toy_values(remedy, s, t)["accuracy"] for t in (1, 2)]) for s in (0, 1, 2)
        ]
        row = toy.loc[remedy]
        assert row["accuracy"] == pytest.approx(np.mean(per_seed))
        assert min(per_seed) - 1e-12 <= row["accuracy_low"] < row["accuracy_high"]
        assert row["accuracy_high"] <= max(per_seed) + 1e-12
        assert row["accuracy_n"] == 3 and row["runs"] == "3/3"
        assert row["nc1"] == pytest.approx(toy_values(remedy, 0, 0)["nc1"])
        assert math.isnan(row["dormant_fraction"]) and row["dormant_fraction_n"] == 0
        if remedy == "plain":
            assert math.isnan(row["accuracy_diff"]) and row["accuracy_diff_n"] == 0
            continue
        # Paired by seed the difference is exactly -0.1 k for every seed: a point interval
        # that excludes 0, although the seeds' own spread (0.02) is wider than the step.
        for end in ("diff", "diff_low", "diff_high"):
            assert row[f"accuracy_{end}"] == pytest.approx(-0.1 * k)
        assert row["accuracy_excludes_0"] == True  # noqa: E712 (read back from CSV)
        assert row["accuracy_z"] == -math.inf and row["accuracy_diff_n"] == 3
        assert row["nc1_diff"] == pytest.approx(k * math.log10(1.5))  # log10 ratio
    # The plain toy has no remedies field: its cells are n/a, with the reason, not an error.
    plain_toy = table[table["study"] == "toy"]
    assert plain_toy["accuracy"].isna().all()
    assert plain_toy["note"].str.contains("not applicable: unknown field 'remedies'").all()

    runs = pd.read_csv(folder / "runs.csv")
    assert len(runs) == 18 and set(runs[runs["study"] == "toy"]["status"]) == {"not_applicable"}
    assert runs["cbp_units_replaced"].isna().all()  # no toy row counts replaced units

    # log10 nc1 = const + k log10 1.5 and accuracy = const - 0.1 k across remedies: r = -1.
    corr = pd.read_csv(folder / "correlations.csv")
    nc1 = corr[(corr["study"] == "rtoy") & (corr["x"] == "nc1")].iloc[0]
    assert nc1["r_remedies"] == pytest.approx(-1) and nc1["n_remedies"] == 3
    assert nc1["n_seeds"] == 3 and nc1["r_remedies_high"] == pytest.approx(-1)
    assert math.isnan(nc1["loo_low"])  # two remedies left: no r
    assert nc1["rho_remedies"] == pytest.approx(-1)
    assert nc1["n_runs"] == 9 and nc1["r_runs"] < -0.99
    missing = corr[(corr["study"] == "rtoy") & (corr["x"] == "dormant_fraction")].iloc[0]
    assert math.isnan(missing["r_remedies"]) and missing["n_remedies"] == 0

    md = (folder / "matrix.md").read_text()
    assert (
        "| remedy | runs | online accuracy | accuracy - plain | NC1, training data | nc1 / pl" in md
    )
    assert "| plain | 3/3 | 0.94 [0.93, 0.95] n=3 |  | 0.2 [0.2, 0.2] n=3 |  |  |" in md
    assert "| redo | 3/3 | 0.74 [0.73, 0.75] n=3 | -0.200 [-0.200, -0.200] n=3 * | 0.45 " in md
    assert "| 0.45 [0.45, 0.45] n=3 | x2.25 [x2.25, x2.25] n=3 * |  |" in md
    assert "| rtoy | log10 nc1 vs accuracy | -1.00 | [-1.00, -1.00] | n/a | -1.00 | 3 | 3 |" in md
    assert "(matrix_heatmap.png)" in md and (folder / "matrix_heatmap.png").stat().st_size > 0
    # The command prints the table: each cell its value and its difference from plain.
    out = capsys.readouterr().out
    assert re.search(r"redo\s+3/3\s+0\.74 \(-0\.200\*\)\s+0\.45 \(x2\.25\*\)", out), out


# --------------------------------------------------------------------------- known answers


def synthetic_runs(study: str, by_remedy: dict[str, dict[str, list[float]]]) -> pd.DataFrame:
    """A run table (as run_values makes) from {remedy: {metric: one value per seed}}."""
    rows = []
    for remedy, metrics in by_remedy.items():
        for seed in range(len(next(iter(metrics.values())))):
            values = {m: v[seed] for m, v in metrics.items()}
            rows.append({"study": study, "remedy": remedy, "seed": seed, "status": "complete",
                         "folder": "", "reason": "", **values})  # fmt: skip
    return pd.DataFrame(rows)


def synthetic_config(remedies, metrics=("accuracy",), correlate=(), seeds=5) -> MatrixConfig:
    return MatrixConfig(
        studies=(StudyEntry("s"),),
        remedies=tuple(remedies),
        seeds=tuple(range(seeds)),
        out="unused",
        metrics=tuple(metrics),
        correlate=tuple(correlate),
        bootstrap=2000,
    )


#: No effect: the remedy moves each seed by +-0.02-0.03 around plain, mean -0.002; seeds 0 and
#: 1 happen to both lie above plain's, as two seeds of no effect do a third of the time.
NO_EFFECT = {
    "plain": {"accuracy": [0.50, 0.51, 0.60, 0.45, 0.55]},
    "redo": {"accuracy": [0.52, 0.53, 0.57, 0.43, 0.55]},
}


def test_a_remedy_with_no_effect_has_an_interval_that_covers_0():
    row = matrix_table(synthetic_runs("s", NO_EFFECT), synthetic_config(NO_EFFECT)).iloc[1]
    assert row["accuracy_diff"] == pytest.approx(-0.002)
    assert row["accuracy_diff_low"] < 0 < row["accuracy_diff_high"]
    assert row["accuracy_excludes_0"] is False and row["accuracy_diff_n"] == 5
    # The naive reading of the 2-seed matrix (the two seeds' min..max ranges do not
    # overlap: "an effect") calls it an effect; the table at those 2 seeds gives no interval.
    two = {r: {"accuracy": v["accuracy"][:2]} for r, v in NO_EFFECT.items()}
    plain, redo = two["plain"]["accuracy"], two["redo"]["accuracy"]
    assert max(plain) < min(redo)
    row = matrix_table(synthetic_runs("s", two), synthetic_config(two, seeds=2)).iloc[1]
    assert math.isnan(row["accuracy_diff_low"]) and row["accuracy_excludes_0"] is None
    assert row["accuracy_diff_n"] == 2 and math.isnan(row["accuracy_low"])


def test_a_small_effect_on_every_seed_excludes_0_when_paired_by_seed():
    # Seeds spread 0.3-0.9; the remedy adds 0.01 to each. Unpaired, the two cells' intervals
    # overlap almost entirely (no difference, says the naive reading); paired, it is exact.
    plain = [0.3, 0.5, 0.7, 0.9, 0.4]
    runs = {"plain": {"accuracy": plain}, "l2_init": {"accuracy": [v + 0.01 for v in plain]}}
    table = matrix_table(synthetic_runs("s", runs), synthetic_config(runs))
    base, row = table.iloc[0], table.iloc[1]
    assert row["accuracy_low"] < base["accuracy_high"]  # the unpaired intervals overlap
    assert row["accuracy_diff_low"] == pytest.approx(0.01)
    assert row["accuracy_excludes_0"] is True and row["accuracy_z"] == math.inf


def test_nc1_is_averaged_on_log10_so_one_seed_cannot_set_the_cell():
    runs = {
        "plain": {"nc1": [0.3, 0.3, 0.3, 0.3, 0.3]},
        "etf_head": {"nc1": [0.3, 0.3, 0.3, 0.3, 8e5]},
    }
    row = matrix_table(synthetic_runs("s", runs), synthetic_config(runs, ["nc1"])).iloc[1]
    assert row["nc1"] == pytest.approx(0.3 * (8e5 / 0.3) ** 0.2)  # geometric mean, ~5.2
    assert row["nc1_diff"] == pytest.approx(math.log10(8e5 / 0.3) / 5)
    assert row["nc1_diff_low"] == pytest.approx(0)  # 4 of 5 seeds unchanged: covers 0
    assert row["nc1_excludes_0"] is False


def test_standardised_difference_is_the_paired_t():
    assert standardised(np.array([1.0, 2.0, 3.0])) == pytest.approx(2 / (1 / math.sqrt(3)))
    assert standardised(np.zeros(4)) == 0.0
    assert standardised(np.full(3, -0.5)) == -math.inf
    assert math.isnan(standardised(np.array([1.0])))


def test_one_large_cell_cannot_wash_out_its_row():
    # A row: a huge but noisy change next to a small, consistent one. Scaled by the row's
    # largest change (the old heatmap) the small one is white; by its own t it saturates.
    z = np.array([0.0, 1.2, math.inf])  # plain, the huge noisy cell, the small sure cell
    assert np.allclose(colour_value(z, "accuracy"), [0, 0.4, 1])
    assert np.allclose(colour_value(z, "pl"), [0, -0.4, -1])  # higher pl is worse: red
    assert np.allclose(colour_value(z, "nc1"), [0, 0.4, 1])  # no better side: higher > 0


def leverage_runs(far_x: float, far_y: float) -> pd.DataFrame:
    """Five remedies with nc1 and accuracy unrelated (r ~ -0.1), and one far out on both."""
    xs = [0.30, 0.40, 0.32, 0.38, 0.35]
    ys = [0.80, 0.81, 0.82, 0.79, 0.78]
    remedies = ["plain", "shrink_perturb", "l2_init", "redo", "weight_decay"]
    jitter = np.array([1.0, 1.01, 0.99, 1.0, 1.005])  # small seed noise, same each remedy
    data = {r: {"nc1": list(x * jitter), "accuracy": list(y * jitter)}
            for r, x, y in zip(remedies, xs, ys, strict=True)}  # fmt: skip
    data["etf_head"] = {"nc1": list(far_x * jitter), "accuracy": list(far_y * jitter)}
    return synthetic_runs("s", data)


def test_leaving_one_remedy_out_shows_a_correlation_made_by_one_remedy():
    runs = leverage_runs(far_x=1e4, far_y=0.2)
    config = synthetic_config(
        list(dict.fromkeys(runs["remedy"])), ["nc1", "accuracy"], [("nc1", "accuracy")]
    )
    row = correlations(runs, config).iloc[0]
    # With it the across-remedy r (log10 nc1) reads strong; the naive report stops here.
    assert row["r_remedies"] < -0.95 and row["n_remedies"] == 6 and row["n_seeds"] == 5
    # Without it the five others are unrelated: the range reaches far from r, and says who.
    assert row["loo_high"] > -0.5 and row["loo_high"] - row["r_remedies"] > 0.5
    assert row["loo_high_without"] == "etf_head"
    # A relation that every remedy carries keeps a tight range.
    names = ["plain", "shrink_perturb", "l2_init", "redo", "weight_decay"]
    line = synthetic_runs("s", {r: {"nc1": [10.0**k] * 5, "accuracy": [0.9 - 0.1 * k] * 5}
                                for k, r in enumerate(names)})  # fmt: skip
    config = synthetic_config(names, ["nc1", "accuracy"], [("nc1", "accuracy")])
    row = correlations(line, config).iloc[0]
    assert row["r_remedies"] == pytest.approx(-1)
    assert row["loo_low"] == pytest.approx(-1) and row["loo_high"] == pytest.approx(-1)


def test_the_heatmap_title_states_n():
    runs = {**NO_EFFECT, "cbp": {"accuracy": [0.4, 0.41, 0.5, 0.35, 0.45]}}
    config = synthetic_config(runs)
    table = matrix_table(synthetic_runs("s", runs), config)
    fig = heatmap_figure(table, config.remedies, config.metrics, "plain", 1)
    assert "n = 5 seeds per cell" in fig._suptitle.get_text()
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["0.522\n(ref.)", "0.52\n-0.002", "0.422\n-0.100*"]


def test_dry_run_lists_cells_and_read_only_runs_nothing(toys, tmp_path, capsys, monkeypatch):
    code, folder = toy_matrix(tmp_path, extra=["--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and not folder.exists()
    assert "18 cells: 9 new, 9 not_applicable" in out
    assert re.search(r"rtoy\s+redo\s+1\s+new\s+\S+/rtoy/redo_seed1_", out)

    import plasticollapse.runs.sweep as sweep

    real_sweep = sweep.run_sweep
    monkeypatch.setattr(sweep, "run_sweep", lambda *a, **k: pytest.fail("read-only ran"))
    code, folder = toy_matrix(tmp_path, extra=["--read-only"])
    assert code == 0
    table = pd.read_csv(folder / "matrix.csv")
    assert table["accuracy"].isna().all() and set(table["runs"]) == {"0/3"}

    monkeypatch.setattr(sweep, "run_sweep", real_sweep)
    assert toy_matrix(tmp_path)[0] == 0
    capsys.readouterr()
    toy_matrix(tmp_path, extra=["--dry-run"])
    assert "18 cells: 9 complete, 9 not_applicable" in capsys.readouterr().out


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
        (('seeds = "0-2"', 'seeds = "2-0"'), ["seeds", "range"]),
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
        # every cell plans, except the ETF head in the regression study (refused: no classes)
        missing = {(c.study, c.remedy) for c in cells if c.spec is None}
        assert missing == {("bitflip_regression", "etf_head")}
    assert len(load_matrix("quick/matrix").seeds) == 5


def test_the_full_matrix_trains_every_study_in_a_compiled_engine():
    """The full matrix's cost estimate (its preset's comment) assumes the compiled engines:
    its mini-batch studies ask for ``fast`` (``auto`` keeps them on autograd)."""
    cells = [c for c in matrix.plan_matrix(load_matrix("full/matrix")) if c.spec is not None]
    for study in ("label_permuted", "random_labels", "class_incremental"):
        assert {c.spec.config["engine"] for c in cells if c.study == study} == {"fast"}
    assert {c.spec.config["batch_size"] for c in cells if c.study == "permuted"} == {1}


def test_the_matrix_names_no_study():
    names = [*studies.study_names(), "toy", "rtoy"]
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for name in names:
            assert not re.search(rf"[\"']{name}[\"']", text), (path, name)


def test_final_value_is_the_mean_of_the_last_finite_values():
    rows = [{"a": 1.0}, {"a": None}, {"a": 3.0, "b": 1}, {"b": 2}, {"a": float("nan")}]
    assert final_value(rows, "a") == 3.0
    assert final_value(rows, "a", last=2) == 2.0
    assert final_value(rows, "a", last=10) == 2.0
    assert math.isnan(final_value(rows, "c"))


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
    bitflip = md.split("### bitflip_regression")[1].split("###")[0]
    assert re.search(r"\| nc1_reg \| 0/2 \| (n/a \|  \| )+not applicable", bitflip)


def test_a_run_total_sums_a_count_over_the_rows_that_hold_it():
    rows = [{"task": 0, "cbp_units_replaced": 2}, {"task": 1}, {"cbp_units_replaced": 3}]
    assert run_total(rows, "cbp_units_replaced") == 5
    assert math.isnan(run_total([{"task": 0}], "cbp_units_replaced"))  # never counted
    assert run_total([{"cbp_units_replaced": 0}], "cbp_units_replaced") == 0  # counted: none


def test_a_difference_at_rounding_level_reads_as_none():
    # Seed differences that cancel leave a float sum of ~1e-17, not a measured difference.
    assert change_text(-2.2e-17, "accuracy") == "0" and change_text(1e-17, "nc1") == "x1"
    assert change_text(-0.00067, "accuracy") == "-0.00067"
    assert change_text(0.0821, "accuracy") == "+0.082"
