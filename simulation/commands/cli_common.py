"""Pieces shared by the ``fedfer`` subcommands: run-setting flags and config resolution."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fer_models.config import RunConfig


def add_run_args(p: argparse.ArgumentParser) -> None:
    """The flags every command that builds a run config takes."""
    p.add_argument("experiment", nargs="?", type=Path, help="YAML experiment file (only what differs "
                   "from the defaults)")
    p.add_argument("--data", help="dataset path: FER2013 CSV or image folder (default: embedded "
                   "synthetic faces)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting (repeatable); `fedfer config` lists the keys")
    p.add_argument("--out", help="run folder (default: runs/<run-name>-<timestamp>)")
    p.add_argument("--overwrite", action="store_true", help="allow replacing results in --out")


def resolve_run_config(args: argparse.Namespace) -> RunConfig:
    """Defaults ← experiment file ← --data/--out/--overwrite ← --set; out-dir filled in."""
    from simulation.launch.experiment import resolve_config

    extra: dict[str, object] = {}
    if getattr(args, "data", None):
        extra["data-path"] = args.data
    if getattr(args, "out", None):
        extra["out-dir"] = args.out
    if getattr(args, "overwrite", False):
        extra["overwrite"] = True
    cfg = resolve_config(experiment=args.experiment, sets=args.sets, extra=extra)
    if not cfg.out_dir:
        cfg = cfg.replace(out_dir=str(Path("runs") / f"{cfg.run_name}-{time.strftime('%Y%m%d-%H%M%S')}"))
    return cfg
