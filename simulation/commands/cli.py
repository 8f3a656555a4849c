"""The ``fedfer`` command line. Each subcommand lives in its own ``simulation/cmd_*.py`` module."""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
from pathlib import Path
from typing import Sequence

from fer_models.common.atomic import AtomicWriteError, format_bytes, free_bytes
from fer_models.config import ConfigError
from fer_models.data import DatasetError
from server.checkpoint import CheckpointError
from simulation.launch.launcher import RunWriteError

EXIT_USAGE = 2  # bad input, refused before (or without) any work: nothing to retry as it is
EXIT_FAILED = 1  # the work itself failed (e.g. the disk filled up mid-run): what completed is kept

#: Modules that each expose ``register(subparsers)``; add a line to add a command.
COMMAND_MODULES = (
    "simulation.commands.cmd_simulate",
    "simulation.commands.cmd_info",
    "simulation.commands.cmd_partition",
    "simulation.commands.cmd_report",
    "simulation.commands.cmd_evaluate",
    "simulation.commands.cmd_predict",
    "simulation.commands.cmd_export",
    "simulation.commands.cmd_deploy",
    "simulation.commands.cmd_certs",
    "simulation.commands.cmd_bench",
    "simulation.commands.cmd_audit",
)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("flwr").propagate = False  # Flower prints through its own handler
    for noisy in ("opacus", "matplotlib", "PIL", "alembic"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedfer", description="Federated, differentially private "
                                     "facial emotion recognition on Flower + Opacus.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"fedfer {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _version() -> str:
    """The installed package's version (pyproject.toml), or 'unknown' when run from a source tree not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fedfer")
    except PackageNotFoundError:
        return "unknown (not installed)"


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _os_message(exc: OSError) -> str:
    """``cannot write PATH: reason (space left)`` for errors the atomic writer did not already word."""
    if isinstance(exc, AtomicWriteError) or not exc.filename:
        return str(exc)
    free = free_bytes(Path(exc.filename).parent) if exc.errno in _DISK_FULL else None
    space = f"; {format_bytes(free)} free there: free some space and run it again" if free is not None else ""
    return f"cannot use {exc.filename}: {exc.strerror or exc}{space}"


def _error(args: argparse.Namespace, exc: object, code: int) -> int:
    logging.getLogger("fedfer").debug("details", exc_info=True)  # -v: the traceback too
    print(f"fedfer {args.command}: error: {exc}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except (ConfigError, DatasetError, CheckpointError, FileExistsError, FileNotFoundError, ValueError) as exc:
        return _error(args, exc, EXIT_USAGE)
    except RunWriteError as exc:  # the run folder could not be written mid-run: the message says how to resume
        return _error(args, exc, EXIT_FAILED)
    except BrokenPipeError:  # output piped into e.g. `head`
        return 0
    except OSError as exc:  # a file that cannot be written or read: one line naming it, never a traceback
        return _error(args, _os_message(exc), EXIT_FAILED if exc.errno in _DISK_FULL else EXIT_USAGE)
    except KeyboardInterrupt:
        print("fedfer: interrupted; completed rounds are saved in the run folder", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
