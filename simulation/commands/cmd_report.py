"""``fedfer report RUN_DIR``: (re)write a run folder's rounds.csv, plots and report.md."""

from __future__ import annotations

import argparse
from pathlib import Path

from simulation.commands.cli_common import add_json_flag, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write rounds.csv, plots and report.md for a (finished or "
                       "interrupted) run folder")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run folder written by `fedfer simulate`")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from simulation.launch.output_paths import output_folder
    from simulation.reports.report import write_report

    if args.run_dir.is_dir():  # a missing one is named by write_report
        output_folder(args.run_dir, flag="RUN_DIR", advice="copy the run folder somewhere writable and report there")
    written = write_report(run_dir=args.run_dir)
    if args.json:
        print_json(args, {"run_dir": str(args.run_dir), "written": [str(p) for p in written]})
        return 0
    for path in written:
        print(path)
    return 0
