"""The ``report`` and ``plot`` subcommands: the commands that read run folders (rather than
run studies), kept apart from :mod:`plasticollapse.cli`, which registers them, as
:mod:`plasticollapse.predictors_cli` is. Both check every config.json they are given before
writing anything, and write beside the first runs folder by default."""

from __future__ import annotations

import argparse
from pathlib import Path

from plasticollapse.runs.config import ConfigError

#: What ``plot --out`` takes as a file rather than a folder.
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``plasticollapse report`` and ``plasticollapse plot`` on the CLI's subparsers."""
    from plasticollapse.studies import study_names

    report = sub.add_parser("report", help="tidy table, each study's figures and a report")
    report.add_argument("runs", nargs="+", help="run folders, or folders containing them")
    report.add_argument("--out", help="output folder (default: the first RUNS folder's report/)")
    report.add_argument(
        "--window", type=int, default=100, help="sliding window of studies that use one, in steps"
    )
    report.add_argument("--stride", type=int, default=5, help="sliding window stride, in steps")
    report.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    report.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    report.set_defaults(handler=cmd_report)

    plot = sub.add_parser("plot", help="one figure, quickly")
    plot.add_argument("runs", nargs="+", help="run folders, or folders containing them")
    plot.add_argument("--metric", default="nc1", help="metric on the y axis (default nc1)")
    plot.add_argument("--x", default="step", help="x axis: step, or another metric")
    plot.add_argument(
        "--experiment",
        choices=study_names(),
        help="the study, when runs of several report the metric",
    )
    plot.add_argument("--group-by", nargs="*", help="setting keys that make separate lines")
    plot.add_argument(
        "--out",
        metavar="DIR",
        help="folder the figure goes into as <metric>.png, or <metric>_vs_<x>.png (default: "
        "the first RUNS folder's plots/); a path ending in .png, .pdf or .svg is the file",
    )
    plot.set_defaults(handler=cmd_plot)


def check_run_configs(paths: list[str]) -> None:
    """Every config.json under ``paths`` must be a run's: a ConfigError naming the first file
    that is not (invalid JSON, or no ``experiment``/``config``), before anything is written."""
    from plasticollapse.runs.folder import CONFIG, read_run_config

    for path in map(Path, paths):
        if not path.exists():
            raise ConfigError(f"{path}: no such file or folder; give run folders or their parents")
        found = [path] if path.name == CONFIG else sorted(path.rglob(CONFIG))
        for config in found:
            read_run_config(config)


def beside_runs(runs: list[str], *parts: str) -> Path:
    """``<first RUNS folder>/<parts>``: where report and plot write by default."""
    first = Path(runs[0])
    return (first.parent if first.is_file() else first).joinpath(*parts)


def cmd_report(args: argparse.Namespace, _: list[str]) -> int:
    from plasticollapse.studies.report_command import main_report

    check_run_configs(args.runs)
    main_report(
        args.runs,
        Path(args.out) if args.out else beside_runs(args.runs, "report"),
        window=args.window,
        stride=args.stride,
        bootstrap=args.bootstrap,
        seed=args.seed,
    )
    return 0


def cmd_plot(args: argparse.Namespace, _: list[str]) -> int:
    from plasticollapse.report.plots import main_plot

    check_run_configs(args.runs)
    name = args.metric if args.x == "step" else f"{args.metric}_vs_{args.x}"
    folder = Path(args.out) if args.out else beside_runs(args.runs, "plots")
    # A path with a figure's suffix names the file itself (as --out did before it was a DIR).
    out = folder if folder.suffix in FIGURE_SUFFIXES else folder / f"{name}.png"
    path = main_plot(
        args.runs,
        metric=args.metric,
        x=args.x,
        out=out,
        experiment=args.experiment,
        group_by=args.group_by,
    )
    print(path)
    return 0
