"""report and plots: the report renders from synthetic run folders; main_plot writes a file."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from test_analysis import make_runs  # tests/ is on sys.path under pytest's default rootdir

from plasticollapse import report
from plasticollapse.report import plots


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return make_runs(tmp_path_factory.mktemp("runs"), tasks=8, epochs=40)


@pytest.fixture(scope="module")
def out(runs, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    return report.main_report([runs], folder, window=20, stride=5, bootstrap=50, seed=0)


def test_report_files(out):
    for name in ("results.csv", "correlations.csv", "sliding_window.csv", "report.md"):
        assert (out / name).stat().st_size > 0
    pngs = sorted((out / "figures").glob("*.png"))
    assert len(pngs) >= 6
    for png in pngs:
        assert png.stat().st_size > 0
        assert mpimg.imread(png).ndim == 3  # decodes as an image
        assert png.with_suffix(".pdf").exists()


def test_report_html_is_self_contained(out):
    text = (out / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) >= 6
    assert mpimg.imread(io.BytesIO(base64.b64decode(images[0])), format="png").size > 0
    assert "http://" not in text and "https://" not in text  # opens with no network
    assert "<table>" in text


def test_report_md_compares_with_paper(out):
    md = (out / "report.md").read_text()
    assert "| experiment | quantity | paper | reproduced | difference | protocol run |" in md
    assert "-0.94" in md and "61.0%" in md  # the paper's numbers are there
    assert "not run (scheme=nc1_reg)" in md  # absent schemes render, not crash
    assert "—" in md
    assert "1 partial" in md or "partial)" in md


def test_paper_numbers_live_in_one_table():
    assert any(n.value == -0.94 for n in report.PAPER_NUMBERS)
    kinds = {n.kind for n in report.PAPER_NUMBERS}
    assert kinds == {"permuted_r", "permuted_value", "warm_value", "warm_seed_r", "window_r"}


def test_fmt_renders_missing_as_dash():
    assert report.fmt(float("nan")) == "—"
    assert report.fmt(None) == "—"
    assert report.fmt(0.9, "r") == "+0.90"
    assert report.fmt((57.3, 59.8), "%") == "57.3%..59.8%"


def test_report_on_one_experiment_only(runs, tmp_path):
    folder = report.main_report([runs / "permuted"], tmp_path / "r", bootstrap=0)
    md = (folder / "report.md").read_text()
    assert "no warmstart runs" in md
    assert (folder / "figures" / "permuted_nc1_pl.png").exists()


def test_report_without_runs_raises(tmp_path):
    with pytest.raises(ValueError, match="no run folders"):
        report.main_report([tmp_path], tmp_path / "out")


def test_main_plot_writes_a_file(runs, tmp_path):
    path = plots.main_plot([runs], "nc1", out=tmp_path / "nc1.png", experiment="permuted")
    assert path.exists() and path.stat().st_size > 0
    path = plots.main_plot([runs], "full_test_acc", x="nc1", out=tmp_path / "scatter")
    assert path.suffix == ".png" and path.exists()
    with pytest.raises(ValueError, match="experiment"):
        plots.main_plot([runs], "nc1")  # both experiments report nc1
    with pytest.raises(ValueError):
        plots.main_plot([runs], "no_such_metric")
