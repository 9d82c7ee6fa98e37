"""The ``plasticollapse`` command. It only parses arguments and dispatches to the library.

plasticollapse demo                          the quick preset quick/permuted_digits
plasticollapse presets [NAME]                the TOML presets shipped with the package;
                                             with NAME, that preset's TOML
plasticollapse <study> [--config PRESET] [--field value ...] [--dry-run] [--print-config]
                                             one per registered study
plasticollapse sweep PRESET [--grid f=a,b ...] [--seeds 0-4] [--backend ...]
plasticollapse report RUNS_DIR ... [--out DIR]   (default: RUNS_DIR/report)
plasticollapse plot RUNS_DIR ... --metric nc1 [--x step] [--out DIR]
                                             (default: RUNS_DIR/plots; <metric>.png in it)
plasticollapse predictors RUNS_DIR ... [--out DIR]   (default: RUNS_DIR/predictors)

The study subcommands are made from the registry (:mod:`plasticollapse.studies`): this
module names no study, and ``<study> --help`` lists every field of the study's config in
sections (data, model, training, remedies, measuring, execution). ``--dry-run`` prints the
plan (each run's state, varying settings and folder) and runs nothing; ``--print-config``
prints the resolved config as a TOML preset that ``--config`` takes back.

Exit status of the commands that run experiments (``demo``, ``permuted``, ``warmstart``,
``sweep``):

0  every run is complete;
1  a run failed (its traceback is in its folder's error.txt);
2  a usage or config error: nothing ran (a bad value, an ``--out`` that cannot be written,
   a device this machine lacks), or every failed run failed on a config error found once
   its data was loaded (``--train_samples`` above the dataset's size);
3  nothing failed, but some runs are unfinished because another process holds them
   ("running elsewhere"): rerun later, or pass ``--wait`` to wait for them and run any
   whose holder died;
4  every run ended, but some diverged (non-finite or exploding loss): their rows up to the
   divergence are kept, and the sweep's table says ``diverged``.

Errors are one line on stderr (``plasticollapse: error: ...``), without a traceback.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

from plasticollapse import __version__

# The commands that read run folders live beside this module; importable from here too.
from plasticollapse.results_cli import (  # noqa: F401
    FIGURE_SUFFIXES,
    beside_runs,
    check_run_configs,
    cmd_plot,
    cmd_report,
)
from plasticollapse.runs.config import ConfigError

BACKENDS = ("serial", "process", "ray", "slurm")
#: The demo's preset (package data, so the demo runs from an installed wheel too).
DEMO_PRESET = "quick/permuted_digits"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if rest and not getattr(args, "takes_fields", False):
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    try:
        return args.handler(args, rest)
    except (ConfigError, ValueError) as e:
        print(f"plasticollapse: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path that cannot be read or written: name it, no traceback
        where = f"{e.filename}: " if e.filename else ""
        print(f"plasticollapse: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    from plasticollapse.studies import study_names

    parser = argparse.ArgumentParser(
        prog="plasticollapse",
        description="Measure neural collapse and loss of plasticity; run the paper's studies.",
    )
    parser.add_argument("--version", action="version", version=f"plasticollapse {__version__}")
    sub = parser.add_subparsers(dest="command")

    demo = sub.add_parser("demo", help=f"run the quick preset {DEMO_PRESET} (under a minute)")
    demo.add_argument("--out", default="runs/demo", help="where the run folders go")
    demo.set_defaults(handler=cmd_demo)

    presets = sub.add_parser(
        "presets",
        help="list the TOML presets --config and sweep take; with a NAME, print its TOML",
    )
    presets.add_argument("name", nargs="?", help="a preset (quick/permuted_digits): print it")
    presets.set_defaults(handler=cmd_presets)

    for name in study_names():
        add_study_parser(sub, name)

    sweep = sub.add_parser(
        "sweep",
        help="a grid of settings x seeds, resumable, on any backend",
        description="Run a preset's study as a sweep. Any config field can be set as "
        "--field value as for the study's own subcommand (see `plasticollapse <study> --help`).",
        allow_abbrev=False,
    )
    sweep.add_argument(
        "config", help="a preset (name or TOML file) whose `experiment` key names the study"
    )
    sweep.add_argument(
        "--grid",
        nargs="+",
        default=[],
        metavar="FIELD=V1,V2",
        help="one run per combination of the values: --grid lr=0.1,0.01 first_task_epochs=1,10",
    )
    sweep.add_argument("--seeds", nargs="+", default=[], help="seeds: 0 1 2, 0-4 or 0,1,2")
    sweep.add_argument("--out", help="parent folder of the run folders")
    add_execution_flags(sweep)
    sweep.add_argument("--partition", help="slurm: partition")
    sweep.add_argument("--time", type=int, default=240, help="slurm: minutes per run")
    sweep.add_argument("--gpus", type=float, default=0, help="ray/slurm: GPUs per run")
    sweep.add_argument("--cpus", type=float, default=1, help="ray/slurm: CPUs per run")
    sweep.add_argument("--array-parallelism", type=int, default=64, help="slurm: max at once")
    sweep.add_argument(
        "--slurm-cluster",
        choices=("local", "debug"),
        help="slurm: run the job array through submitit's local or debug executor (no SLURM)",
    )
    add_plan_flags(sweep)
    sweep.set_defaults(handler=cmd_sweep, takes_fields=True)

    matrix = sub.add_parser(
        "matrix",
        help="every study x remedy x seed cell of a matrix preset: one table and a heatmap",
        description="Run (resumably) or read every (study x remedy x seed) cell of a matrix "
        "preset, then write matrix.csv, matrix.md, a heatmap and per-study correlations.",
    )
    matrix.add_argument("config", nargs="?", help="a matrix preset (quick/matrix) or TOML file")
    matrix.add_argument("--config", dest="config_option", metavar="PRESET", help="the same")
    matrix.add_argument("--out", help="parent folder of the cells' run folders")
    matrix.add_argument("--report", help="folder of the matrix's files (default <out>/matrix)")
    matrix.add_argument("--seeds", help="seeds: 0-4, 0,1,2 (default: the preset's)")
    matrix.add_argument("--studies", nargs="+", help="only these studies of the preset")
    matrix.add_argument("--remedies", nargs="+", help="only these remedies of the preset")
    matrix.add_argument("--dry-run", action="store_true", help="list the cells and exit")
    matrix.add_argument("--read-only", action="store_true", help="run nothing; read the cells")
    add_execution_flags(matrix)
    matrix.set_defaults(handler=cmd_matrix)

    from plasticollapse.results_cli import add_parsers as add_results_commands

    add_results_commands(sub)
    from plasticollapse.predictors_cli import add_parser as add_predictors

    add_predictors(sub)
    return parser


def add_study_parser(sub: argparse._SubParsersAction, name: str) -> None:
    """The subcommand of one registered study; its ``--help`` lists the config's fields in
    sections, the execution flags among the execution fields."""
    from plasticollapse.studies import get_study

    study = get_study(name)
    p = sub.add_parser(
        name,
        help=study.title,
        usage=f"plasticollapse {name} [--config PRESET] [--FIELD VALUE ...] [--dry-run] "
        "[--print-config]",
        description=textwrap.fill(
            f"{study.title}. Any config field below can be set as --field value; several "
            "values (--seeds 0 1 2, --seeds 0-2, --lr 0.1 0.01, --grid lr=0.1,0.01) make one "
            "run per value, or per combination. Fields left unset keep the preset's value, "
            "else their default.",
            width=88,
        ),
        epilog=fields_help(name, extra={"execution": execution_rows()}),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument(
        "--config",
        metavar="PRESET",
        help="a TOML file, or a preset name such as quick/permuted_digits "
        "(`plasticollapse presets` lists them)",
    )
    add_plan_flags(p)
    p.add_argument("--fields", action="store_true", help="list the config fields and exit")
    add_execution_flags(p, listed=False)
    p.set_defaults(handler=cmd_experiment, experiment=name, takes_fields=True)


def add_plan_flags(p: argparse.ArgumentParser) -> None:
    """``--dry-run`` and ``--print-config``, of every command that plans a study's runs."""
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print each run's state (new, partial, complete), the settings that vary "
        "between the runs, and its folder; run nothing",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config as TOML (save it, and --config FILE runs the same "
        "runs); run nothing",
    )


#: The flags saying how runs execute: ``(flag, metavar, argparse keywords)``.
EXECUTION_FLAGS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    (
        "--backend",
        "{" + ", ".join(BACKENDS) + "}",
        dict(
            choices=BACKENDS,
            help="how runs execute (default: process, one run per core, for several CPU "
            "runs; else serial)",
        ),
    ),
    ("--workers", "N", dict(type=int, metavar="N", help="parallel runs (default: one per core)")),
    (
        "--wait",
        "",
        dict(
            action="store_true",
            help="wait for runs that another process is running, and run any whose holder "
            "dies (without it they are left to that process, and the command exits 3)",
        ),
    ),
)


def add_execution_flags(p: argparse.ArgumentParser, listed: bool = True) -> None:
    """``--backend``, ``--workers``, ``--wait``; ``listed=False`` keeps them out of
    argparse's own list (a study's ``--help`` shows them in its execution section)."""
    for flag, _, options in EXECUTION_FLAGS:
        p.add_argument(flag, **(options if listed else {**options, "help": argparse.SUPPRESS}))


def execution_rows() -> list[tuple[str, str]]:
    """The execution flags as ``(flag, help)`` rows of a study's field list."""
    return [(f"{flag} {metavar}".strip(), o["help"]) for flag, metavar, o in EXECUTION_FLAGS]


# --------------------------------------------------------------------------- handlers


def fields_help(name: str, extra: dict | None = None) -> str:
    """The field list of a study's ``--help`` (and of ``--fields``)."""
    from plasticollapse.runs.describe import describe_fields
    from plasticollapse.studies import get_study

    return describe_fields(get_study(name).Config, f"config fields of {name}:", extra)


def cmd_experiment(args: argparse.Namespace, fields: list[str]) -> int:
    from plasticollapse.studies.base import plan_from_file

    if args.fields:
        print(fields_help(args.experiment))
        return 0
    if args.print_config:
        print(resolved_toml(args.experiment, args.config, fields), end="")
        return 0
    specs = plan_from_file(args.experiment, args.config, fields)
    if args.dry_run:
        print_plan(specs, args.backend)
        return 0
    return execute_and_summarise(
        args.experiment, specs, args.backend, args.workers, {}, wait=args.wait
    )


def resolved_toml(experiment: str, config: str | None, fields: list[str]) -> str:
    """``--print-config``: the study as the preset and the fields resolve it, as TOML."""
    from plasticollapse.runs.config import parse_study
    from plasticollapse.runs.describe import study_toml
    from plasticollapse.studies import get_study

    study = parse_study(get_study(experiment).Config, config, fields, experiment=experiment)
    argv = [experiment, *(["--config", config] if config else []), *fields]
    return study_toml(experiment, study, "plasticollapse " + shlex.join(argv))


def cmd_demo(args: argparse.Namespace, _: list[str]) -> int:
    from plasticollapse.runs.config import preset_experiment
    from plasticollapse.studies.base import plan_from_file

    experiment = preset_experiment(DEMO_PRESET)
    print(f"plasticollapse demo: the {experiment} study of the preset {DEMO_PRESET}")
    specs = plan_from_file(experiment, DEMO_PRESET, ["--out", args.out])
    code = execute_and_summarise(experiment, specs, "process", None, {})
    out = shlex.quote(args.out)
    print(f"\nNext: {command()} report {out}    (writes {args.out}/report)")
    return code


def command() -> str:
    """This command as a new shell can run it: a virtual environment's script by its path
    (``.venv/bin/plasticollapse``; it is on PATH only while the environment is activated),
    else ``plasticollapse`` when it is on PATH, else ``python -m plasticollapse``."""
    scripts = Path(sys.prefix) / ("Scripts" if os.name == "nt" else "bin")
    script = scripts / "plasticollapse"
    if sys.prefix != sys.base_prefix and script.exists():
        relative = os.path.relpath(script)
        return shlex.quote(relative if not relative.startswith("..") else str(script))
    if shutil.which("plasticollapse"):
        return "plasticollapse"
    return f"{shlex.quote(sys.executable)} -m plasticollapse"


def cmd_presets(args: argparse.Namespace, _: list[str]) -> int:
    from plasticollapse.runs.config import preset_names, preset_summary, resolve_config_file

    if args.name:
        print(resolve_config_file(args.name).read_text(), end="")
        return 0
    names = preset_names()
    width = max(map(len, names), default=0) + 2
    for name in names:
        # The whole first sentence, wrapped under its column rather than cut.
        summary = preset_summary(resolve_config_file(name))
        print(
            textwrap.fill(
                summary, 100, initial_indent=name.ljust(width), subsequent_indent=" " * width
            )
        )
    return 0


def cmd_sweep(args: argparse.Namespace, fields: list[str]) -> int:
    from plasticollapse.runs.config import preset_experiment
    from plasticollapse.studies import study_names
    from plasticollapse.studies.base import plan_from_file

    experiment = preset_experiment(args.config)
    if experiment not in study_names():
        raise ConfigError(
            f"{args.config}: experiment = {experiment!r} is not a registered study; "
            f"studies: {', '.join(study_names())}"
        )
    overrides = list(fields)
    for spec in args.grid:
        overrides += ["--grid", spec]
    if args.seeds:
        overrides += ["--seeds", *args.seeds]
    if args.out:
        overrides += ["--out", args.out]
    if args.print_config:
        print(resolved_toml(experiment, args.config, overrides), end="")
        return 0
    specs = plan_from_file(experiment, args.config, overrides)
    if args.dry_run:
        print_plan(specs, args.backend)
        return 0
    options = {
        "partition": args.partition,
        "time_min": args.time,
        "gpus": args.gpus,
        "cpus": args.cpus,
        "array_parallelism": args.array_parallelism,
        "slurm_cluster": args.slurm_cluster,
    }
    return execute_and_summarise(
        experiment, specs, args.backend, args.workers, options, wait=args.wait
    )


def execute_and_summarise(
    experiment: str,
    specs: list,
    backend: str,
    workers: int | None,
    options: dict,
    wait: bool = False,
) -> int:
    """Run the sweep, print the study's summary; return the exit status (module docstring)."""
    from plasticollapse.runs.sweep import run_sweep
    from plasticollapse.studies import get_study

    result = run_sweep(
        specs,
        backend=backend or default_backend(specs),
        workers=workers,
        options=options,
        wait=wait,
    )
    print(get_study(experiment).summarise(specs))
    if result.elsewhere:  # the table said so; say it again as the last line
        print(result.unfinished_line())
    return result.exit_code


def print_plan(specs: list, backend: str | None) -> None:
    """``--dry-run``: the planned runs, and the CPU-time notice of a study too large for
    this machine's CPU (runs.preflight.cpu_notice)."""
    from plasticollapse.runs.describe import plan_table
    from plasticollapse.runs.preflight import cpu_notice

    print(plan_table(specs))
    notice = cpu_notice(specs, backend or default_backend(specs))
    if notice:
        print(notice)


def default_backend(specs: list) -> str:
    """Several CPU runs spread over the cores; one run, or runs sharing a GPU, go serially."""
    from plasticollapse.runs.runtime import resolve_device

    if len(specs) > 1 and all(resolve_device(s.config["device"]).type == "cpu" for s in specs):
        return "process"
    return "serial"


def cmd_matrix(args: argparse.Namespace, _: list[str]) -> int:
    from plasticollapse.matrix import main_matrix

    ref = args.config or args.config_option
    if ref is None:
        raise ConfigError("matrix needs a preset: plasticollapse matrix quick/matrix")
    return main_matrix(
        ref,
        out=args.out,
        report=args.report,
        seeds=args.seeds,
        studies=args.studies,
        remedies=args.remedies,
        dry_run=args.dry_run,
        read_only=args.read_only,
        backend=args.backend,
        workers=args.workers,
        wait=args.wait,
    )


if __name__ == "__main__":
    raise SystemExit(main())
