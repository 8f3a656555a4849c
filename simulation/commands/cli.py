"""The ``fedfer`` command line. Each subcommand lives in its own ``simulation/commands/cmd_*.py`` module.

Start-up stays light: ``fedfer --help``, ``fedfer CMD --help`` and ``--version`` import no torch, Flower,
Opacus, NumPy or matplotlib; each command imports what it needs inside its handler. The typed errors
that :func:`main` words as one line are therefore matched by name only once their module is loaded
(an error of a class whose module was never imported cannot have been raised).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
from pathlib import Path
from typing import Sequence

from simulation.commands.cli_common import json_stdout

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


#: Libraries whose INFO lines are not fedfer's news (the ONNX exporter logs every graph pass): warnings and
#: errors only, unless --verbose.
NOISY_LOGGERS = ("opacus", "matplotlib", "PIL", "alembic", "onnx_ir", "onnxscript", "torch.onnx", "torch.export",
                 "torch._dynamo", "torch._export")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("flwr").propagate = False  # Flower prints through its own handler
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedfer", description="Federated, differentially private "
                                     "facial emotion recognition on Flower + Opacus.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action=_VersionAction, nargs=0, help="show fedfer's version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


class _VersionAction(argparse.Action):
    """``--version``: reads the installed version only when asked (importlib.metadata costs ~50 ms at start-up)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"fedfer {_version()}")
        parser.exit()


def _version() -> str:
    """The installed package's version (pyproject.toml), or 'unknown' when run from a source tree not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fedfer")
    except PackageNotFoundError:
        return "unknown (not installed)"


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

#: Errors of bad input, worded as one line with exit 2, besides ValueError and missing/existing files (their
#: modules are not imported at start-up: see :func:`_loaded`). ConfigError is a ValueError; named for clarity.
_USAGE_ERRORS = (("fer_models.config.errors", "ConfigError"), ("fer_models.data.errors", "DatasetError"),
                 ("server.checkpoint", "CheckpointError"))
#: The run folder could not be written mid-run: the message says how to resume (exit 1).
_FAILED_ERRORS = (("simulation.launch.launcher", "RunWriteError"),)


def _loaded(names: tuple[tuple[str, str], ...]) -> tuple[type[BaseException], ...]:
    """The exception classes among ``names`` whose module is already imported (no import happens here)."""
    found = (getattr(sys.modules.get(module), cls, None) for module, cls in names)
    return tuple(c for c in found if isinstance(c, type) and issubclass(c, BaseException))


def _os_message(exc: OSError) -> str:
    """``cannot write PATH: reason (space left)`` for errors the atomic writer did not already word."""
    from fer_models.common.atomic import AtomicWriteError, format_bytes, free_bytes

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
        with json_stdout(args):  # --json: the command's prints go to stderr, its one JSON object to stdout
            return int(args.func(args))
    except (FileExistsError, FileNotFoundError, ValueError, *_loaded(_USAGE_ERRORS)) as exc:
        return _error(args, exc, EXIT_USAGE)
    except _loaded(_FAILED_ERRORS) as exc:  # the run folder could not be written mid-run: the message says how to resume
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
