"""A toy study for the sweep and seam tests: runs in milliseconds, fails or dies on request.

``STUDY`` implements :class:`plasticollapse.studies.Experiment`, and the module lives in a
real file, so that spawned processes, Ray
workers and submitit jobs can import it (``tests/`` is on their ``sys.path`` or PYTHONPATH).

Each call of :func:`run` appends a line to ``calls.log`` in its run folder, so tests can count
how often a run was (re)computed and from which step it resumed. :func:`report` makes a
table and a figure from its results with the package's generic helpers: this module plus
one registry line is the whole study (tests/test_study_seam.py).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

NAME = "toy"


@dataclass(frozen=True)
class Config:
    seed: int = 0
    out: str = "runs/toy"
    device: str = "cpu"
    threads: int = 0
    steps: int = 3
    sleep: float = 0.0
    fail: bool = False  # raise at step 1
    die: bool = False  # SIGKILL its own process at step 1, like the OOM killer would


def run_label(config: Config) -> str:
    return f"toy{config.steps}"


def register() -> None:
    """Make ``toy`` a known study in this process (for subprocess-driven tests)."""
    from plasticollapse.studies import register as register_study

    register_study(NAME, f"{__name__}:STUDY")


def run(config: Config, folder) -> dict:
    import torch

    state = folder.load_checkpoint()
    start = state["step"] if state else 0
    with (folder.path / "calls.log").open("a") as f:
        f.write(f"start={start} pid={os.getpid()}\n")
    for step in range(start, config.steps):
        time.sleep(config.sleep)
        if step == 1 and config.fail:
            raise RuntimeError("toy failure on request")
        if step == 1 and config.die:
            os.kill(os.getpid(), signal.SIGKILL)
        folder.append_metrics({"step": step, "value": 10 * config.seed + step})
        folder.save_checkpoint({"step": step + 1})
    return {
        "steps": config.steps,
        "torch_threads": torch.get_num_threads(),
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
        "pid": os.getpid(),
    }


class ToyStudy:
    name = NAME
    title = "a toy study for the sweep tests"
    Config = Config
    step_key = "step"
    setting_keys = ("steps",)

    def run_label(self, config: Config) -> str:
        return run_label(config)

    def estimated_cost(self, config) -> float:
        return float(config["steps"])

    def run(self, config: Config, folder, callbacks=()) -> dict:
        return run(config, folder)

    def summarise(self, specs) -> str:
        return f"{len(specs)} toy run(s)"

    def report(self, results):
        return report(results)


def report(results):
    """A small real report: per setting, the mean final value over seeds (a table) and the
    value per step (one figure), built from the generic helpers alone."""
    import pandas as pd

    from plasticollapse import analysis
    from plasticollapse.report import plots
    from plasticollapse.studies.base import ReportSection

    rows = []
    fig, (ax,) = plots.panels(1)
    for setting, runs in analysis.setting_groups(results.runs, results.settings):
        frame = analysis.curves(results.table, "value", list(runs["run_id"]))
        final = [row.dropna().iloc[-1] for _, row in frame.iterrows()]
        rows.append(
            {
                "setting": analysis.setting_label(setting),
                "runs": len(runs),
                "mean final value": sum(final) / len(final),
            }
        )
        plots.draw_band(ax, frame, plots.group_label(setting))
    ax.set_xlabel(STUDY.step_key)
    ax.set_ylabel("value")
    plots.legend_outside(ax, plots.legend_title(results.settings))
    png = plots.save(fig, results.out / "figures", "toy_value")
    return ReportSection(
        title="Toy: a study in one module",
        protocol=f"{len(results.runs)} toy run(s).",
        tables=[
            ("Final values\nThe last value of each run, averaged over seeds.", pd.DataFrame(rows))
        ],
        figures=[("Toy: value per step (mean ± std over seeds)", png)],
    )


STUDY = ToyStudy()
