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
    "warmstart_seeds": ("report.md",),
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


def _warmstart_runs(root: Path, reg_shift: float) -> Path:
    """Tiny run folders of the warm-start sweep: plain, S&P and the NC1 regulariser, 3
    seeds, 12 checkpoints. Plain's probe accuracy follows NC1 exactly over the first half
    (r = 1) and alternates around a constant over the second (r near 0); the regulariser's
    accuracies are plain's shifted by ``reg_shift``; its seed 2 diverges after epoch 40."""
    import json

    import numpy as np

    for scheme in ("plain", "shrink_perturb", "nc1_reg"):
        for seed in (0, 1, 2):
            folder = root / f"{scheme}_seed{seed}"
            folder.mkdir(parents=True)
            config = {"scheme": scheme, "weight_decay": None, "seed": seed}
            config |= {"finetune_target_acc": 0.99, "warmup_epochs": 60, "checkpoint_every": 5}
            config |= {"train_samples": 500, "warmup_fraction": 0.5, "finetune_max_epochs": 25}
            (folder / "config.json").write_text(json.dumps({"config": config}))
            last = 40 if (scheme, seed) == ("nc1_reg", 2) else 60
            rows = []
            for e in range(5, last + 1, 5):
                nc1 = 3 * np.exp(-e / 20) + 0.01 * seed
                acc = 0.7 + 0.02 * nc1 if e <= 30 else 0.71 + 0.005 * (-1) ** (e // 5 + seed)
                shift = reg_shift if scheme == "nc1_reg" else 0.0
                rows.append(
                    {"epoch": e, "nc1": nc1, "warmup_test_acc": 0.5 + e / 300 + shift}
                    | {"full_test_acc": acc + shift, "finetune_epochs": 10}
                    | {"finetune_train_acc": 1.0, "warmup_train_acc": 1.0}
                )
            if last < 60:
                rows.append({"epoch": last + 1, "diverged": True})
            (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            status = "complete" if last == 60 else "diverged"
            summary = {"status": status, "fresh_full_test_acc": 0.72}
            summary |= {"fresh_finetune_epochs": 20, "fresh_finetune_train_acc": 0.99}
            (folder / "summary.json").write_text(json.dumps(summary))
    return root


@pytest.mark.parametrize("shift", [0.01, -0.01])
def test_warmstart_seeds_summarise_and_verdicts(tmp_path, shift):
    """summarise.py writes the columns of the committed CSVs and the paper's per-seed r;
    render.py's verdicts on (b) and (c) follow the data."""
    import shutil

    import numpy as np
    import pandas as pd

    folder = RESULTS / "warmstart_seeds"
    summarise = _module(folder / "summarise.py", "summarise_warmstart_seeds")
    out = tmp_path / "out"
    out.mkdir()
    summarise.main(str(_warmstart_runs(tmp_path / "runs", shift)), str(out))
    for name in ("runs.csv", "summary.csv", "sliding_window.csv"):
        header = (out / name).read_text().splitlines()[0]
        assert header == (folder / name).read_text().splitlines()[0], name
    summary = pd.read_csv(out / "summary.csv").set_index(["scheme", "seed"])
    runs = pd.read_csv(out / "runs.csv")
    plain0 = runs[(runs["scheme"] == "plain") & (runs["seed"] == 0)]
    by_hand = np.corrcoef(plain0["nc1"], plain0["full_test_acc"])[0, 1]
    assert summary.loc[("plain", 0), "r_all"] == pytest.approx(by_hand, abs=1e-5)
    assert summary.loc[("plain", 0), "r_early"] == pytest.approx(1.0, abs=1e-5)
    assert summary.loc[("nc1_reg", 2), "status"] == "diverged"
    assert summary.loc[("nc1_reg", 2), "checkpoints"] == 8
    shutil.copy(folder / "provenance.csv", out)
    renderer = _module(folder / "render.py", "render_warmstart_seeds_check")
    text = renderer.report(*renderer.load(out))
    assert "**(b) holds at this scale**" in text
    if shift > 0:
        assert "**(c) holds at this scale**" in text
        assert "+1.0 [+1.0, +1.0]" in text  # the regulariser's paired difference, points
    else:
        assert "**(c) does not hold at this scale; the regulariser is worse**" in text
