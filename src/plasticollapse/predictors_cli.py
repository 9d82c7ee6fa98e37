"""The ``plasticollapse predictors`` subcommand's arguments, kept apart from
:mod:`plasticollapse.analysis.leaderboard` so that building the CLI's parser imports no
pandas or scipy (the command itself imports them when it runs)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``plasticollapse predictors`` on the CLI's subparsers."""
    p = sub.add_parser(
        "predictors",
        help="the predictor leaderboard: which metric tracks or predicts plasticity loss",
        description="For every study and metric: the detrended within-run association with "
        "the outcome, the lead-lag, and the across-run prediction, each with a seed-bootstrap "
        "interval and its n. Writes predictors.csv, predictors_rank.csv, aliases.csv and "
        "forest plots.",
    )
    p.add_argument("runs", nargs="+", help="run folders, or folders containing them")
    p.add_argument("--out", help="output folder (default: the first RUNS folder's predictors/)")
    p.add_argument(
        "--outcome",
        nargs="+",
        help="outcomes (default: every one a study records: accuracy, pl, full_test_acc, ...)",
    )
    p.add_argument("--metrics", nargs="+", help="only these metrics (default: all predictors)")
    p.add_argument("--by-setting", action="store_true", help="one group per setting of a study")
    p.add_argument("--horizon", type=int, default=1, help="lead-lag: steps ahead k (default 1)")
    p.add_argument(
        "--own-lags",
        type=int,
        default=2,
        help="lead-lag: the outcome's own past changes controlled for, p (default 2)",
    )
    p.add_argument(
        "--degree",
        type=int,
        default=3,
        help="degree of the polynomial trend in the step (default 3)",
    )
    p.add_argument(
        "--early-step",
        type=float,
        help="across runs: the step of the metric (default: the first step)",
    )
    p.add_argument(
        "--late-from",
        type=float,
        help="across runs: the outcome is averaged from this step on (default: mid-range)",
    )
    p.add_argument(
        "--bootstrap", type=int, default=1000, help="seed bootstrap replicates (default 1000)"
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, rest: list[str]) -> int:
    from plasticollapse.analysis.leaderboard import main

    return main(args, rest)
