"""runs.csv and summary.csv of docs/results/nc_threshold_fashion from the run folders.

    PYTHONPATH=src python docs/results/nc_threshold_fashion/summarise.py RUNS_DIR [OUT_DIR]

Reads the NC-threshold runs under RUNS_DIR (plasticollapse.analysis) and writes

* runs.csv: one row per threshold run (plasticollapse.studies.permuted.threshold.run_table):
  seed, threshold, pre-training epochs, NC1 after pre-training (nc1_pinv), acc_0, whether
  the threshold was met, which run it duplicates, and per task block (1-40, 41-99) the
  mean later accuracy and the mean PL; ``source`` says where the row came from;
* summary.csv: per task the authors' per-task statistics (``threshold_analysis``: r
  across runs, |r| smoothed, the epochs' r and the partial r given the epochs).

Then ``render.py`` writes report.md and the figure from these two files.
"""

from __future__ import annotations

import sys
from pathlib import Path

from plasticollapse import analysis
from plasticollapse.studies.base import StudyResults
from plasticollapse.studies.permuted.threshold import threshold_analysis, threshold_run_table


def study_results(runs: str, out: Path) -> StudyResults:
    """The Permuted study's runs under ``runs``, as the report hands them to a study."""
    loaded = analysis.load([runs])
    table, study_runs = loaded.study("permuted")
    return StudyResults("permuted", table, study_runs, loaded.settings["permuted"], out)


def main(runs: str, out: str | None = None) -> None:
    out_dir = Path(out) if out else Path(__file__).parent
    results = study_results(runs, out_dir)
    frame = threshold_run_table(results)
    if frame is None:
        raise SystemExit(f"{runs}: fewer than 3 NC-threshold runs; run the command in report.md")
    last = results.runs.set_index("run_id")["last_step"]
    frame["source"] = [f"run folder (run_id), tasks 0-{last[run]:g}" for run in frame["run_id"]]
    frame.to_csv(out_dir / "runs.csv", index=False, float_format="%.6g")
    per_task = threshold_analysis(results)
    if per_task is not None:
        per_task.to_csv(out_dir / "summary.csv", index=False)
    print(f"{out_dir / 'runs.csv'}: {len(frame)} runs")


if __name__ == "__main__":
    main(*sys.argv[1:])
