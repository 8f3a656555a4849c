"""The ``fedfer`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from fer_models.config import ConfigError, RunConfig, describe_keys
from fer_models.data import DatasetError

logger = logging.getLogger("fedfer")

EXIT_USAGE = 2


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("flwr").propagate = False  # Flower prints through its own handler
    for noisy in ("opacus", "matplotlib", "PIL", "alembic"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", nargs="?", type=Path, help="YAML experiment file (only what differs "
                   "from the defaults)")
    p.add_argument("--data", help="dataset path: FER2013 CSV or image folder (default: embedded "
                   "synthetic faces)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting (repeatable); `fedfer config` lists the keys")
    p.add_argument("--out", help="run folder (default: runs/<run-name>-<timestamp>)")
    p.add_argument("--overwrite", action="store_true", help="allow replacing results in --out")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (Flower's too)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedfer", description="Federated, differentially private "
                                     "facial emotion recognition on Flower + Opacus.")
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="run a federated experiment on this machine (Flower simulation)")
    _add_run_args(sim)
    sub.add_parser("config", help="list every setting with its default and meaning")
    sub.add_parser("models", help="list the registered models with their parameter counts")
    return parser


def _resolve(args: argparse.Namespace) -> RunConfig:
    from simulation.experiment import resolve_config

    extra: dict[str, object] = {}
    if args.data:
        extra["data-path"] = args.data
    if args.out:
        extra["out-dir"] = args.out
    if args.overwrite:
        extra["overwrite"] = True
    cfg = resolve_config(experiment=args.experiment, sets=args.sets, extra=extra)
    if not cfg.out_dir:
        cfg = cfg.replace(out_dir=str(Path("runs") / f"{cfg.run_name}-{time.strftime('%Y%m%d-%H%M%S')}"))
    return cfg


def cmd_simulate(args: argparse.Namespace) -> int:
    from fer_models.task import client_partitions, load_store
    from server.run_folder import resolve_run_dir
    from simulation.launcher import run_simulation

    cfg = _resolve(args)
    store = load_store(cfg)  # decode (and cache) once, and fail on bad data before the engine starts
    logger.info("dataset %s", store.describe())
    parts = client_partitions(cfg, num_partitions=cfg.num_clients)
    logger.info("%d clients, samples per client: %s", len(parts), ", ".join(str(len(p)) for p in parts))
    run_dir = resolve_run_dir(out_dir=cfg.out_dir, run_name=cfg.run_name, overwrite=cfg.overwrite)
    cfg = cfg.replace(overwrite=True)  # the folder is checked; the server may now write into it
    run_simulation(cfg)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        logger.error("the run ended without writing %s; see the log above", summary_path)
        return 1
    summary = json.loads(summary_path.read_text())
    final = summary["final"]
    tag = " (SYNTHETIC faces)" if summary["dataset"]["synthetic"] else ""
    print(f"\n{summary['dataset']['name']}{tag}: final {final['split']} accuracy {final['accuracy']:.4f}, "
          f"macro-F1 {final['macro_f1']:.4f} after {len(summary['rounds'])} rounds")
    if "epsilon" in summary:
        print(f"privacy: max epsilon {summary['epsilon']['final_max']:.3f} at delta {summary['epsilon']['delta']}")
    print(f"results: {run_dir}")
    return 0


def cmd_config(_: argparse.Namespace) -> int:
    width = max(len(k) for k, _, _ in describe_keys())
    for key, default, help_text in describe_keys():
        print(f"{key:<{width}}  {json.dumps(default):<10}  {help_text}")
    return 0


def cmd_models(_: argparse.Namespace) -> int:
    from fer_models.models import create_model, list_models

    for name in list_models():
        model = create_model(name)
        params = sum(p.numel() for p in model.parameters())
        doc = (type(model).__doc__ or "").strip().splitlines()[0] if type(model).__doc__ else ""
        print(f"{name:<16} {params:>9,d} params  {doc}")
    return 0


COMMANDS = {"simulate": cmd_simulate, "config": cmd_config, "models": cmd_models}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(getattr(args, "verbose", False))
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, DatasetError, FileExistsError, FileNotFoundError) as exc:
        print(f"fedfer {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fedfer: interrupted; completed rounds are saved in the run folder", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
