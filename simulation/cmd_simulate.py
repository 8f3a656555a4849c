"""``fedfer simulate``: a federated experiment on this machine with Flower's simulation engine."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from simulation.cli_common import add_run_args, resolve_run_config

if TYPE_CHECKING:
    from fer_models.config import RunConfig

logger = logging.getLogger("fedfer")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="run a federated experiment on this machine (Flower simulation)")
    add_run_args(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run after its last completed "
                   "round, with its own settings (its privacy ledger included)")
    p.set_defaults(func=run)


def _resume_config(args: argparse.Namespace) -> "RunConfig":
    """The interrupted run's own settings, pointed at its checkpoint; --set may not change them."""
    from fer_models.config import RunConfig
    from server.checkpoint import CHECKPOINT_FILE, check_resumable, load_checkpoint
    from simulation.experiment import parse_sets

    run_dir = Path(args.resume)
    if args.experiment or args.data or args.out:
        raise ValueError("--resume takes the run's own settings: drop the experiment file, --data and --out")
    ckpt = load_checkpoint(run_dir)
    values = {**ckpt["config"], **parse_sets(args.sets), "out-dir": str(run_dir), "overwrite": True,
              "resume-from": str(run_dir / CHECKPOINT_FILE)}
    cfg = RunConfig.from_flat(values, source=f"{run_dir}/{CHECKPOINT_FILE}")
    check_resumable(ckpt["config"], cfg)
    logger.info("resuming %s after round %d of %d", run_dir, ckpt["round"], cfg.num_server_rounds)
    return cfg


def run(args: argparse.Namespace) -> int:
    from fer_models.models import check_private_compatible
    from fer_models.task import build_model, client_partitions, load_store
    from server.run_folder import resolve_run_dir
    from server.strategy import make_strategy
    from simulation.launcher import run_simulation

    cfg = _resume_config(args) if args.resume else resolve_run_config(args)
    make_strategy(cfg)  # settings the strategy refuses stop here, before the engine starts
    if cfg.dp == "sample":
        check_private_compatible(build_model(cfg))
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
