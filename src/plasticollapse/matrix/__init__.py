"""The benchmark x remedy matrix: every (study x remedy x seed) cell, one table, a heatmap.

``plasticollapse matrix quick/matrix`` (:func:`main_matrix`):

1. reads a matrix preset (:mod:`.config`): studies, each with its preset and field
   overrides, remedies and seeds;
2. plans every cell through each study's normal planning (:mod:`.plan`): a cell is the run
   folder ``plasticollapse <study> --config <preset> ... --remedies <r> --seeds <s> --out
   <out>/<study>`` would make, so it resumes, and is reused, like any run;
3. runs the cells not yet complete with :func:`plasticollapse.runs.sweep.run_sweep`
   (resumable; ``dry_run`` lists the cells and their status; ``read_only`` runs nothing);
4. writes (:mod:`.report`) ``matrix.csv`` (one row per study x remedy: each metric's mean
   over seeds with a seed-bootstrap interval, and its difference from the baseline paired
   by seed, with its interval and whether it excludes 0: :mod:`.table`), ``runs.csv``
   (each run's final values), ``correlations.csv`` (per study, collapse against
   performance across remedies, with a seed-bootstrap interval and the range leaving one
   remedy out), the heatmap (:mod:`.figure`) and ``matrix.md``, and prints the table.

The matrix names no study: the preset does, and the registry resolves them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from plasticollapse.matrix.config import MatrixConfig, StudyEntry, load_matrix
from plasticollapse.matrix.plan import Cell, describe, plan_matrix

__all__ = [
    "Cell",
    "MatrixConfig",
    "StudyEntry",
    "describe",
    "load_matrix",
    "main_matrix",
    "plan_matrix",
]


def main_matrix(
    ref: str | Path,
    *,
    out: str | None = None,
    report: str | Path | None = None,
    seeds: str | list[str] | None = None,
    studies: list[str] | None = None,
    remedies: list[str] | None = None,
    dry_run: bool = False,
    read_only: bool = False,
    backend: str | None = None,
    workers: int | None = None,
    wait: bool = False,
    echo: Callable[[str], None] = print,
) -> int:
    """Plan, run (unless ``dry_run`` or ``read_only``) and write the matrix of preset ``ref``.

    ``out``, ``seeds``, ``studies`` and ``remedies`` replace or restrict the preset's;
    the files go to ``report`` (default ``<out>/matrix``). ``backend`` defaults to a
    process per core when there are several CPU runs. Returns the sweep's exit code (0
    every cell complete, 1 a run failed, 3 runs still running elsewhere; 0 when reading).
    """
    from plasticollapse.runs.runtime import resolve_device
    from plasticollapse.runs.sweep import run_sweep

    config = load_matrix(ref).restricted(studies, remedies, seeds, out)
    cells = plan_matrix(config)
    if dry_run:
        echo(describe(cells))
        return 0
    code = 0
    specs = [c.spec for c in cells if c.spec is not None]
    if not read_only and specs:
        on_cpu = all(resolve_device(s.config.get("device", "cpu")).type == "cpu" for s in specs)
        backend = backend or ("process" if len(specs) > 1 and on_cpu else "serial")
        code = run_sweep(specs, backend=backend, workers=workers, wait=wait, echo=echo).exit_code
    import pandas as pd

    from plasticollapse.matrix.report import printed_table, write_matrix

    folder = Path(report) if report is not None else Path(config.out) / "matrix"
    written = write_matrix(cells, config, folder)
    table = pd.read_csv(folder / "matrix.csv")
    echo(printed_table(table, config.metrics, config.baseline))
    echo(f"matrix written to {folder}/: " + ", ".join(p.name for p in written))
    return code
