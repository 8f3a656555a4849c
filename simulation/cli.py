"""The ``fedfer`` command line. Each subcommand lives in its own ``simulation/cmd_*.py`` module."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from fer_models.config import ConfigError
from fer_models.data import DatasetError
from server.checkpoint import CheckpointError

EXIT_USAGE = 2

#: Modules that each expose ``register(subparsers)``; add a line to add a command.
COMMAND_MODULES = (
    "simulation.cmd_simulate",
    "simulation.cmd_info",
    "simulation.cmd_partition",
    "simulation.cmd_report",
    "simulation.cmd_evaluate",
    "simulation.cmd_predict",
    "simulation.cmd_export",
    "simulation.cmd_deploy",
    "simulation.cmd_certs",
    "simulation.cmd_bench",
    "simulation.cmd_audit",
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
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except (ConfigError, DatasetError, CheckpointError, FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"fedfer {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # output piped into e.g. `head`
        return 0
    except KeyboardInterrupt:
        print("fedfer: interrupted; completed rounds are saved in the run folder", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
