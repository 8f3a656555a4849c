"""``fedfer simulate``: a federated experiment on this machine with Flower's simulation engine."""

from __future__ import annotations

import argparse
import json
import logging

from simulation.cli_common import add_run_args, resolve_run_config

logger = logging.getLogger("fedfer")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="run a federated experiment on this machine (Flower simulation)")
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fer_models.task import client_partitions, load_store
    from server.run_folder import resolve_run_dir
    from simulation.launcher import run_simulation

    cfg = resolve_run_config(args)
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
