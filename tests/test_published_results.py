"""The published reports under docs/results are written by code from their committed CSVs.

Each folder's ``render.py`` is run into a temporary folder (figures skipped: they are
drawn by the same script from the same numbers) and the committed report must equal what
it writes, so a number edited by hand in a report, or a CSV changed without re-rendering,
fails here. Re-render with ``PYTHONPATH=src python docs/results/<folder>/render.py``.
"""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
#: folder -> the files its render.py writes that are committed beside it ("." is the index,
#: rendered by render_index.py).
RENDERED = {
    ".": ("README.md",),
    "permuted_fashion": ("report.md", "metric_ranking.csv"),
    "nc_threshold_fashion": ("report.md",),
    "warmstart_fashion": ("report.md",),
    "online_remedies": ("README.md",),
}


def _module(script: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render(folder: str, out: Path) -> Path:
    """Run ``docs/results/<folder>/render.py`` (the index: render_index.py) into ``out``
    without figures."""
    script = RESULTS / "render_index.py" if folder == "." else RESULTS / folder / "render.py"
    module = _module(script, f"render_{folder.strip('.') or 'index'}")
    module.main(str(out), "--no-figures")
    return out


def stale_lines(committed: str, rendered: str) -> list[str]:
    """The lines where a committed file differs from what its script renders (a diff)."""
    diff = difflib.unified_diff(
        committed.splitlines(), rendered.splitlines(), "committed", "rendered", lineterm="", n=0
    )
    return [line for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---")]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    return {f: render(f, tmp_path_factory.mktemp(f.strip(".") or "index")) for f in RENDERED}


@pytest.mark.parametrize("folder", sorted(RENDERED))
def test_committed_reports_are_what_their_scripts_render(folder, rendered):
    for name in RENDERED[folder]:
        committed = (RESULTS / folder / name).read_text()
        stale = stale_lines(committed, (rendered[folder] / name).read_text())
        assert not stale, (
            f"docs/results/{folder}/{name} differs from what render.py writes from the "
            f"committed CSVs; re-render it (PYTHONPATH=src python docs/results/{folder}/"
            f"render.py):\n" + "\n".join(stale[:20])
        )


def test_a_number_edited_by_hand_is_caught(rendered):
    committed = (RESULTS / "nc_threshold_fashion" / "report.md").read_text()
    rendered_text = (rendered["nc_threshold_fashion"] / "report.md").read_text()
    line = next(x for x in committed.splitlines() if x.startswith("| 1-40 | r(acc_0, mean PL_i) |"))
    value = line.split(" | ")[2].split()[0]  # e.g. +0.99
    edited_line = line.replace(value, "+0.12", 1)
    stale = stale_lines(committed.replace(line, edited_line, 1), rendered_text)
    assert stale == [f"-{edited_line}", f"+{line}"]


def test_every_folder_with_a_render_script_is_checked():
    scripts = {p.parent.name for p in RESULTS.glob("*/render.py")}
    assert scripts <= set(RENDERED) | {"matrix"}, scripts - set(RENDERED)


def test_threshold_summarise_writes_what_render_reads(tmp_path):
    """summarise.py on run folders writes runs.csv and summary.csv in the columns render.py
    reads; the render then counts, dedupes and leaves out runs from them."""
    import shutil

    from test_report import threshold_runs

    folder = RESULTS / "nc_threshold_fashion"
    summarise = _module(folder / "summarise.py", "summarise_threshold")
    out = tmp_path / "out"
    out.mkdir()
    summarise.main(str(threshold_runs(tmp_path / "runs")), str(out))
    runs = (out / "runs.csv").read_text().splitlines()
    committed = (folder / "runs.csv").read_text().splitlines()
    assert runs[0] == committed[0]  # the same columns as the committed file
    assert len(runs) == 1 + 8  # the 8 threshold runs, not the E=1 run
    shutil.copy(folder / "provenance.csv", out)
    renderer = _module(folder / "render.py", "render_threshold_check")
    text = renderer.report(*renderer.load(out))
    assert "6 distinct runs from 2 seeds" in text
    assert "none: 2 seeds (a bootstrap needs 3)" in text
