"""Pieces shared by the ``fedfer`` subcommands: run-setting flags, config resolution and ``--json`` output."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:  # the config is resolved by the handlers; `fedfer --help` does not load it
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


def add_json_flag(p: argparse.ArgumentParser) -> None:
    """``--json``: the command's result as one JSON object on stdout (see :func:`json_stdout`)."""
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout instead of "
                   "text (logs and progress go to stderr)")


@contextlib.contextmanager
def json_stdout(args: argparse.Namespace) -> Iterator[None]:
    """Under ``--json``: while the command runs, whatever prints to stdout goes to stderr, so that stdout holds
    only the object :func:`print_json` writes; without ``--json`` nothing changes."""
    if not getattr(args, "json", False):
        yield
        return
    args.json_stream = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        yield


def print_json(args: argparse.Namespace, obj: Any) -> None:
    """The command's one JSON object on the real stdout: strict (NaN and infinity become null), ``indent=2``."""
    from fer_models.federation.run_folder import strict_json

    stream = getattr(args, "json_stream", None) or sys.stdout
    stream.write(strict_json(obj, indent=2, default=str) + "\n")
    stream.flush()
