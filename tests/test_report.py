"""report and plots: the report renders each study's section from synthetic run folders, with
numbers checked against ones computed here from metrics.jsonl; main_plot writes a file."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import shutil
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_analysis import make_runs  # tests/ is on sys.path under pytest's default rootdir

from plasticollapse import analysis, report
from plasticollapse.report import plots
from plasticollapse.report.format import DASH, fmt
from plasticollapse.studies import get_study, report_command, study_names
from plasticollapse.studies.base import StudyResults
from plasticollapse.studies.permuted import report as permuted_report
from plasticollapse.studies.warmstart import report as warmstart_report


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return make_runs(tmp_path_factory.mktemp("runs"), tasks=8, epochs=40)


@pytest.fixture(scope="module")
def out(runs, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    return report_command.main_report([runs], folder, window=20, stride=5, bootstrap=50, seed=0)


def rows(folder: Path, metric: str, step_key: str) -> dict[float, float]:
    """step -> value of one metric, read straight from a run's metrics.jsonl."""
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return {r[step_key]: r[metric] for r in parsed}


def markdown_table(md: str, first_header: str) -> dict[str, list[str]]:
    """Every Markdown table whose header starts with ``first_header`` (one per study), as
    first cell -> that row's cells (the first row of a first cell wins)."""
    out: dict[str, list[str]] = {}
    inside = False
    for line in md.splitlines():
        if line.startswith(f"| {first_header} |"):
            inside = True
        elif not line.startswith("|"):
            inside = False
        elif inside and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            out.setdefault(cells[0], cells)
    return out


def study_results(runs: Path, name: str, out: Path, **options) -> StudyResults:
    loaded = analysis.load([runs])
    table, study_runs = loaded.study(name)
    return StudyResults(
        name,
        table,
        study_runs,
        loaded.settings[name],
        out,
        bootstrap=50,
        options=options,
        summaries=loaded.study_summaries(name),
    )


def test_every_figure_is_drawn_listed_and_decodes(out):
    md = (out / "report.md").read_text()
    linked = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    pngs = sorted(p.relative_to(out).as_posix() for p in out.glob("*/figures/*.png"))
    assert sorted(linked) == pngs
    # Permuted: 2; warm start: NC1, NC-vs-acc (all, <= 100), sliding window, accuracy
    # (no checkpoint after epoch 100 in 40 epochs: that figure is skipped, not empty).
    assert len(pngs) == 7 and not any("after100" in p for p in pngs)
    for png in pngs:
        assert mpimg.imread(out / png).ndim == 3  # decodes as an image
        assert (out / png).with_suffix(".pdf").stat().st_size > 0


def test_report_html_is_self_contained(out):
    text = (out / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == len(list(out.glob("*/figures/*.png")))
    assert mpimg.imread(io.BytesIO(base64.b64decode(images[0])), format="png").size > 0
    assert "http://" not in text and "https://" not in text  # opens with no network


def test_results_csv_is_the_tidy_table(runs, out):
    back = pd.read_csv(out / "results.csv")
    assert len(back) == len(analysis.load_results([runs]))
    assert set(back["experiment"]) == {"permuted", "warmstart"}


def test_paper_comparison_cells_hold_the_reproduced_numbers(runs, out):
    md = (out / "report.md").read_text()
    table = markdown_table(md, "quantity")
    # Permuted headline, for the paper's setting (E=1): r across tasks of the per-task
    # means over the E=1 runs, the killed run counting for the tasks it reached.
    folders = sorted((runs / "permuted").glob("perm-e1-*")) + [runs / "permuted" / "perm-partial"]
    nc1 = np.full((len(folders), 8), np.nan)
    acc = np.full((len(folders), 8), np.nan)
    for i, f in enumerate(folders):
        for t, v in rows(f, "nc1", "task").items():
            nc1[i, t] = v
        for t, v in rows(f, "accuracy", "task").items():
            acc[i, t] = v
    r = np.corrcoef(np.nanmean(nc1, axis=0), np.nanmean(acc, axis=0))[0, 1]
    headline = table["r(mean NC1, mean accuracy) across tasks 0-139 (r of per-task means)"]
    assert headline[1:3] == ["-0.94", fmt(r, "r")]
    # 8 tasks, not the paper's 140, and configs that lack some of the paper's fields:
    # the value stands alone, with no difference, and the cells say why.
    assert headline[3].startswith("not like for like: train_samples None (paper 0)")
    assert headline[4].startswith("mnist, MLP 100-100-100, lr 0.01, E=1, 8/8 tasks, 4 seeds")
    assert "r over tasks 0-7 only" in headline[4] and "exact nc1" in headline[4]
    # The paper's late tasks were not reached: no value is made up for them.
    late = table["accuracy, mean of tasks 130-139"]
    assert late[2] == DASH and "runs end at task 7" in late[4]
    # Warm start: full-data accuracy at epoch 5 (plain), in percent, mean over seeds 7, 8.
    plain = [rows(runs / "warm" / f"ws-plain-s{s}", "full_test_acc", "epoch")[5] for s in (7, 8)]
    assert table["full-data test acc at epoch 5 (plain)"][2] == f"{100 * np.mean(plain):.1f}%"
    # A scheme that was not run, and an epoch that was not reached, render as such.
    assert table["full-data test acc at epoch 5 (NC1-reg)"][2:5] == [
        DASH,
        DASH,
        "not run (scheme=nc1_reg)",
    ]
    late = table["NC1 (authors' convention) at warm-up epoch 350 (plain)"]
    assert late[2] == DASH and "epoch 350 not reached" in late[4]
    # These warm-start runs hold only the exact NC1 in eval mode: shown, never compared.
    early = table["NC1 (authors' convention) at warm-up epoch 5 (plain)"]
    assert early[3].startswith("not like for like")


def test_correlations_csv_and_bootstrap_interval(runs, out):
    perm = pd.read_csv(out / "permuted" / "correlations.csv")
    e5 = perm[perm["label"] == "first_task_epochs=5"].iloc[0]
    nc1 = np.array([list(rows(f, "nc1", "task").values()) for f in runs.glob("permuted/perm-e5-*")])
    acc = np.array(
        [list(rows(f, "accuracy", "task").values()) for f in runs.glob("permuted/perm-e5-*")]
    )
    want = stats.pearsonr(nc1.mean(axis=0), acc.mean(axis=0))
    assert e5["pearson_r"] == pytest.approx(want[0])
    # no p-value from an autocorrelated n of tasks, in the CSV or the report
    assert not {"pearson_p", "spearman_p"} & set(perm.columns)
    # (a resample of the three seeds in another order gives the estimate to rounding)
    assert e5["ci_low"] - 1e-12 <= e5["pearson_r"] <= e5["ci_high"] + 1e-12
    assert e5["ci_low"] < e5["ci_high"] and e5["n_seeds"] == 3
    per_seed = sorted(float(v) for v in e5["per_seed_r"].split())
    assert per_seed == pytest.approx(
        sorted(stats.pearsonr(a, b)[0] for a, b in zip(nc1, acc, strict=True))
    )


def test_sliding_window_and_checkpoint_table(runs, out):
    windows = pd.read_csv(out / "warmstart" / "sliding_window.csv")
    one = windows[(windows["run_id"] == "ws-plain-s8") & (windows["window_end"] == 40)]
    nc1 = rows(runs / "warm" / "ws-plain-s8", "nc1", "epoch")
    acc = rows(runs / "warm" / "ws-plain-s8", "full_test_acc", "epoch")
    inside = [e for e in nc1 if 20 < e <= 40]  # window 20: epochs 25, 30, 35, 40
    assert one["n_points"].item() == 4
    assert one["r"].item() == pytest.approx(
        stats.pearsonr([nc1[e] for e in inside], [acc[e] for e in inside])[0]
    )
    md = (out / "report.md").read_text()
    checkpoints = markdown_table(md, "setting | epoch")
    nc1_at_5 = [rows(runs / "warm" / f"ws-plain-s{s}", "nc1", "epoch")[5] for s in (7, 8)]
    plain_5 = next(v for k, v in checkpoints.items() if k == "scheme=plain")
    assert plain_5[1] == "5"
    assert plain_5[2] == f"{fmt(np.mean(nc1_at_5))} ± {fmt(np.std(nc1_at_5))}"


def test_each_studys_paper_numbers_can_all_be_reproduced(runs, tmp_path):
    # Every number of a study goes through its reproduce function (no unknown kind), and
    # the paper's headline lives in the study's own table.
    assert any(n.value == -0.944 for n in permuted_report.PAPER_NUMBERS)
    perm = study_results(runs, "permuted", tmp_path)
    for ref in permuted_report.PAPER_NUMBERS:
        got = permuted_report.reproduce(perm, ref, *perm_setting(perm))
        # 8 tasks: the values at task 0 and the headline exist; late tasks and the
        # threshold analysis (no threshold runs) do not, and are never comparable.
        early = ref.kind == "headline_r" or ref.params.get("tasks") == (0, 0)
        assert math.isfinite(got.value) == early
        assert not got.comparable or ref.params.get("tasks") == (0, 0)
    ws = study_results(runs, "warmstart", tmp_path, window=20, stride=5)
    corr, windows = warmstart_report.seed_correlations(ws), warmstart_report.sliding_windows(ws)
    setting, group = analysis.setting_groups(ws.runs, ws.settings)[0]
    for ref in warmstart_report.PAPER_NUMBERS:
        warmstart_report.reproduce(ws, corr, windows, ref, setting, group)


def perm_setting(results: StudyResults):
    return analysis.setting_groups(results.runs, results.settings)[0]


def test_study_analyses_on_synthetic_runs(runs, tmp_path):
    perm = study_results(runs, "permuted", tmp_path)
    rows_ = permuted_report.headline_correlations(perm, max_tasks=6)
    assert [r["setting"]["first_task_epochs"] for r in rows_] == [1, 5]
    assert all(r["pearson_r"] < -0.8 and r["n"] == 6 for r in rows_)
    ws = study_results(runs, "warmstart", tmp_path)
    seeds = warmstart_report.seed_correlations(ws, split=30)
    assert {r["range"] for r in seeds} == {"all checkpoints", "epochs <= 30", "epochs > 30"}
    first = next(r for r in seeds if r["range"] == "epochs <= 30" and r["label"] == "scheme=plain")
    assert first["n"] == 6 and first["n_seeds"] == 2
    assert first["pearson_r"] == pytest.approx(np.mean(first["per_seed_r"]))
    # No threshold runs among these: the threshold analysis does not mix them in.
    assert permuted_report.threshold_analysis(perm) is None


def test_fmt_renders_missing_as_dash():
    assert report.fmt(float("nan")) == DASH
    assert report.fmt(None) == DASH
    assert report.fmt(0.9, "r") == "+0.90"
    assert report.fmt((57.3, 59.8), "%") == "57.3%..59.8%"


def test_report_on_one_study_only(runs, tmp_path):
    folder = report_command.main_report([runs / "permuted"], tmp_path / "r", bootstrap=0)
    md = (folder / "report.md").read_text()
    absent = ", ".join(n for n in study_names() if n != "permuted")
    assert f"Registered studies with no runs here: {absent}." in md
    assert get_study("warmstart").title.split(" (")[0] not in md
    assert (folder / "permuted" / "figures" / "permuted_nc1_pl.png").exists()
    assert not (folder / "warmstart").exists()
    # No bootstrap: no interval, but the correlation itself is still there.
    perm = pd.read_csv(folder / "permuted" / "correlations.csv")
    assert perm["ci_low"].isna().all() and perm["pearson_r"].notna().all()


def test_report_without_runs_raises(tmp_path):
    with pytest.raises(ValueError, match="no run folders"):
        report_command.main_report([tmp_path], tmp_path / "out")


def test_main_plot_writes_a_file(runs, tmp_path):
    path = plots.main_plot([runs], "nc1", out=tmp_path / "nc1.png", experiment="permuted")
    assert mpimg.imread(path).ndim == 3
    path = plots.main_plot([runs], "full_test_acc", x="nc1", out=tmp_path / "scatter")
    assert path.suffix == ".png" and path.exists()
    with pytest.raises(ValueError, match="experiment"):
        plots.main_plot([runs], "nc1")  # both studies report nc1
    with pytest.raises(ValueError, match="no run reports"):
        plots.main_plot([runs], "no_such_metric")
    with pytest.raises(ValueError, match="unknown setting key"):
        plots.main_plot([runs], "nc1", experiment="permuted", group_by=["nope"])


# --------------------------------------------------------------------------- like for like


PAPER_LIKE = {
    **permuted_report.PAPER_CONFIG,  # the paper's protocol, as the report knows it
    "tasks": 140,
    "first_task_epochs": 1,
    "nc1_threshold": None,
}


def write_permuted(folder: Path, config: dict, rows_: list[dict]) -> None:
    from test_analysis import _write_run

    _write_run(folder, "permuted", config, rows_, {"status": "complete"})


def paper_like_runs(root: Path) -> Path:
    """Two runs of the paper's exact protocol over 140 tasks (synthetic numbers)."""
    rng = np.random.default_rng(4)
    for seed in (0, 1):
        series = [
            {
                "task": t,
                "accuracy": 0.92 - 0.0008 * t + 0.003 * rng.standard_normal(),
                "nc1": 0.23 + 0.001 * t + 0.01 * rng.standard_normal(),
                "nc1_pinv": 0.22 + 0.001 * t + 0.01 * rng.standard_normal(),
            }
            for t in range(140)
        ]
        write_permuted(root / f"paper-s{seed}", {**PAPER_LIKE, "seed": seed}, series)
    return root


def test_a_difference_only_like_for_like(tmp_path):
    runs = paper_like_runs(tmp_path / "runs")
    folder = report_command.main_report([runs], tmp_path / "r", bootstrap=0)
    table = markdown_table((folder / "report.md").read_text(), "quantity")
    curves = {
        m: np.array(
            [
                [r[m] for r in map(json.loads, (f / "metrics.jsonl").open())]
                for f in (runs / "paper-s0", runs / "paper-s1")
            ]
        )
        for m in ("accuracy", "nc1_pinv")
    }
    r = np.corrcoef(curves["nc1_pinv"].mean(0), curves["accuracy"].mean(0))[0, 1]
    headline = table["r(mean NC1, mean accuracy) across tasks 0-139 (r of per-task means)"]
    assert headline[2:4] == [fmt(r, "r"), fmt(r + 0.944, "r")]  # NC1 in the authors' convention
    late = table["NC1 (authors' convention), mean of tasks 130-139"]
    value = curves["nc1_pinv"].mean(0)[130:140].mean()
    assert late[2:4] == [fmt(value), f"{value - 0.34:+.3g}"]
    # The same runs with another dataset: values, but no difference.
    other = tmp_path / "digits"
    for f in sorted(runs.iterdir()):
        config = json.loads((f / "config.json").read_text())["config"]
        lines = [json.loads(line) for line in (f / "metrics.jsonl").open()]
        write_permuted(other / f.name, {**config, "dataset": "digits"}, lines)
    folder = report_command.main_report([other], tmp_path / "r2", bootstrap=0)
    table = markdown_table((folder / "report.md").read_text(), "quantity")
    headline = table["r(mean NC1, mean accuracy) across tasks 0-139 (r of per-task means)"]
    assert headline[2] == fmt(r, "r")
    assert headline[3] == "not like for like: dataset digits (paper mnist)"


def threshold_runs(root: Path) -> Path:
    """Six threshold runs whose later PL grows with their NC1 after pre-training, plus one
    E=1 run whose numbers would break that relation if it were mixed in."""
    rng = np.random.default_rng(7)
    for i, (threshold, seed) in enumerate([(t, s) for t in (0.6, 0.5, 0.4) for s in (1, 2)]):
        nc1_0 = threshold - 0.02 * rng.random()
        series = [{"task": 0, "accuracy": 0.9, "pl": 0.0, "nc1_pinv": nc1_0, "task_epochs": 3 + i}]
        for t in range(1, 100):
            pl = 0.2 * nc1_0 + 0.0005 * t + 0.004 * rng.standard_normal()
            series.append({"task": t, "accuracy": 0.9 - pl, "pl": pl, "nc1_pinv": 0.5})
        config = {**PAPER_LIKE, "tasks": 100, "seed": seed, "nc1_threshold": threshold}
        config.update(threshold_metric="nc1_pinv", first_task_epochs=30)
        write_permuted(root / f"thr{threshold}-s{seed}", config, series)
    # seed 2 met thresholds 0.4 and 0.35 in the same epoch: the same run twice
    write_permuted(root / "thr0.35-s2", {**config, "nc1_threshold": 0.35}, series)
    # seed 3 never met 0.3 within the safety cap: not a run of the variant, left out
    capped = [{**series[0], "nc1_pinv": 0.45, "task_epochs": 30, "nc1_threshold_reached": False}]
    capped += [{**row, "pl": 0.5, "accuracy": 0.4} for row in series[1:]]
    write_permuted(root / "thr0.3-s3", {**config, "nc1_threshold": 0.3, "seed": 3}, capped)
    outlier = [
        {"task": t, "accuracy": 0.5, "pl": 0.4 - 0.1 * t, "nc1_pinv": 9.0} for t in range(100)
    ]
    write_permuted(root / "plain", {**PAPER_LIKE, "tasks": 100, "seed": 0}, outlier)
    return root


def test_threshold_analysis_uses_the_threshold_runs_only(tmp_path):
    from scipy.ndimage import gaussian_filter1d

    runs = threshold_runs(tmp_path / "runs")
    perm = study_results(runs, "permuted", tmp_path)
    frame = permuted_report.threshold_analysis(perm)
    # thr0.35-s2 is thr0.4-s2 again (counted once); thr0.3-s3 stopped at the cap
    folders = sorted(f for f in runs.glob("thr*") if f.name not in ("thr0.35-s2", "thr0.3-s3"))
    nc1_0 = [rows(f, "nc1_pinv", "task")[0] for f in folders]
    pl = np.array([[rows(f, "pl", "task")[t] for t in range(1, 100)] for f in folders])
    want = np.array([stats.pearsonr(nc1_0, pl[:, i])[0] for i in range(99)])
    assert frame["task"].tolist() == list(range(1, 100))
    assert np.allclose(frame["r_nc1_pl"], want)
    assert np.allclose(frame["abs_r_smoothed"], gaussian_filter1d(np.abs(want), 4))
    assert (frame["runs"] == 6).all() and frame["nc1_metric"].iloc[0] == "nc1_pinv"
    # beyond the authors: NC1's r with the pre-training epochs held fixed (residuals of a
    # least-squares line on the epochs, by brute force)
    epochs = np.array(
        [json.loads((f / "metrics.jsonl").open().readline())["task_epochs"] for f in folders],
        dtype=float,
    )

    def residual(v):
        return v - np.polyval(np.polyfit(epochs, v, 1), epochs)

    partial = [np.corrcoef(residual(np.array(nc1_0)), residual(pl[:, i]))[0, 1] for i in range(99)]
    assert np.allclose(frame["r_nc1_pl_given_epochs"], partial)
    folder = report_command.main_report([runs], tmp_path / "r", bootstrap=0)
    table = markdown_table((folder / "report.md").read_text(), "quantity")
    row = next(v for k, v in table.items() if k.startswith("threshold") and "1-40" in k)
    assert row[2] == fmt(np.mean(gaussian_filter1d(np.abs(want), 4)[:40]), "r")
    assert "across 6 threshold runs" in row[4]
    text = (folder / "report.md").read_text()
    assert (
        "8 threshold runs (1 the same run as another; 1 left out, stopped at the epoch cap" in text
    )
    assert "thr0.3-s3" in text
    assert (folder / "permuted" / "figures" / "permuted_nc1_threshold.png").exists()
    assert (folder / "permuted" / "threshold.csv").exists()


def test_the_threshold_analysis_says_why_it_is_missing(tmp_path):
    """One seed that met three thresholds in the same epoch is one run, not three; and runs
    that end at task 0 have no PL_i: each reason is said, not "fewer than 3 runs"."""
    series = [{"task": 0, "accuracy": 0.9, "pl": 0.0, "nc1_pinv": 0.1, "task_epochs": 4}]
    series += [{"task": t, "accuracy": 0.8, "pl": 0.1, "nc1_pinv": 0.5} for t in (1, 2)]
    config = {**PAPER_LIKE, "tasks": 3, "seed": 1, "threshold_metric": "nc1_pinv"}
    for threshold in (0.3, 0.2, 0.15):
        write_permuted(
            tmp_path / f"same{threshold}", {**config, "nc1_threshold": threshold}, series
        )
    perm = study_results(tmp_path, "permuted", tmp_path / "out")
    assert permuted_report.threshold_analysis(perm) is None
    why = permuted_report.threshold_missing(perm, None)
    assert why.startswith("r across runs needs 3 runs with different NC1 after task 0, and the 3")
    assert "give 1 (nc1_pinv equal across the others" in why
    # Three distinct runs, but none goes past task 0.
    for seed, nc1 in ((2, 0.11), (3, 0.12), (4, 0.13)):
        row = {**series[0], "nc1_pinv": nc1}
        short = {**config, "seed": seed, "tasks": 1, "nc1_threshold": 0.3}
        write_permuted(tmp_path / f"short{seed}", short, [row])
    for folder in tmp_path.glob("same*"):
        shutil.rmtree(folder)
    perm = study_results(tmp_path, "permuted", tmp_path / "out")
    why = permuted_report.threshold_missing(perm, permuted_report.threshold_analysis(perm))
    assert why == "the threshold runs have no task in 1-99 (r is with PL_i after pre-training)"


def test_titles_and_r_labels_say_what_was_run(runs, tmp_path, monkeypatch):
    saved = {}

    def keep(fig, folder, name):
        texts = [t.get_text() for ax in fig.axes for t in (ax.title,)]
        texts.append(fig._suptitle.get_text() if fig._suptitle else "")
        legends = [
            t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().texts
        ]
        saved[name] = (" ".join(texts), legends)
        plots.plt.close(fig)
        return Path(folder) / f"{name}.png"

    monkeypatch.setattr(plots, "save", keep)
    perm = study_results(runs, "permuted", tmp_path)
    permuted_report.report(perm)
    title, legend = saved["permuted_nc1_vs_accuracy"]
    assert "tasks 0-7" in title and "140" not in title and "mnist" in title
    assert all("r of means" in text for text in legend)
    ws = study_results(runs, "warmstart", tmp_path, window=20, stride=5)
    section = warmstart_report.report(ws)
    title, legend = saved["warmstart_nc_vs_acc_all"]
    assert "cifar10" in title
    # The figure's r is the table's: the mean of the per-seed r.
    seeds = warmstart_report.seed_correlations(ws)
    plain = next(
        r for r in seeds if r["label"] == "scheme=plain" and r["range"] == "all checkpoints"
    )
    assert f"plain: mean seed r {fmt(plain['pearson_r'], 'r')}" in legend
    assert section.files[0].name == "correlations.csv"


def test_a_permuted_only_report_lists_only_what_it_wrote(runs, tmp_path):
    folder = report_command.main_report([runs / "permuted"], tmp_path / "r", bootstrap=0)
    md = (folder / "report.md").read_text()
    listed = [
        name
        for line in re.findall(r"Files: ([^\n]+)", md)
        for name in re.findall(r"[\w/.-]+\.(?:csv|parquet)", line)
    ]
    assert "permuted/correlations.csv" in listed
    for name in listed:
        assert (folder / name).exists(), name
    assert "sliding_window" not in md


def test_a_geometric_band_stays_on_a_log_axis():
    """On a log axis the band is exp(mean log x +- std log x): seeds at 1, 10 and 100 give a
    line at 10 and a band 10^(1 +- 0.816) = 1.53..65.5, where the arithmetic mean +- std
    (37 +- 44.6) falls below zero; a step where every seed agrees has a zero-width band."""
    frame = pd.DataFrame({0: [1.0, 10.0, 100.0], 1: [2.0, 2.0, 2.0]})
    spread = np.std(np.log10([1.0, 10.0, 100.0]))  # population std, as the bands use
    fig, (ax,) = plots.panels(1)
    try:
        line = plots.draw_band(ax, frame, "g", geometric=True)
        np.testing.assert_allclose(line.get_ydata(), [10.0, 2.0])
        band = ax.collections[0].get_paths()[0].vertices[:, 1]
        np.testing.assert_allclose(
            [band.min(), band.max()], [10 ** (1 - spread), 10 ** (1 + spread)]
        )
        line = plots.draw_band(ax, frame, "a")
        np.testing.assert_allclose(line.get_ydata(), [37.0, 2.0])
        band = ax.collections[1].get_paths()[0].vertices[:, 1]
        assert band.min() < 0
    finally:
        plots.plt.close(fig)


def test_legends_below_side_by_side_panels_do_not_overlap():
    # long setting labels (remedies mixed) used to run under the next panel's legend
    fig, axes = plots.panels(2, width=4.8, height=4.0)
    label = "first_task_epochs=1, remedies=shrink_perturb,redo, tasks=4: r of means +0.63"
    for ax in axes:
        for i in range(3):
            ax.scatter([i], [i], label=label.replace("=1,", f"={i},"))
        plots.legend_below(ax)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    left, right = (ax.get_legend().get_window_extent(renderer) for ax in axes)
    assert left.x1 <= right.x0
    texts = [t.get_text() for t in axes[0].get_legend().texts]
    assert all("r of means +0.63" in t and "remedies=shrink_perturb,redo" in t for t in texts)
    plots.plt.close(fig)
