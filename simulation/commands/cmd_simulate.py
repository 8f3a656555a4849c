"""``fedfer simulate``: a federated experiment on this machine with Flower's simulation engine."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from fer_models.federation.run_folder import ATTENTION_FIGURE, FAILURE_FILE, REPORT_FILE, SUMMARY_FILE
from simulation.commands.cli_common import add_json_flag, add_run_args, print_json, resolve_run_config

if TYPE_CHECKING:
    from fer_models.config import RunConfig

logger = logging.getLogger("fedfer")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="run a federated experiment on this machine (Flower simulation)")
    add_run_args(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run after its last completed "
                   "round, with its own settings (its privacy ledger included)")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="debug logging, and Flower's and Ray's own logs on the terminal too")
    add_json_flag(p)
    p.set_defaults(func=run)


def _resume_config(args: argparse.Namespace) -> "RunConfig":
    """The interrupted run's own settings, pointed at its checkpoint; --set may not change them."""
    from fer_models.config import RunConfig
    from server.checkpoint import CHECKPOINT_FILE, check_resumable, load_checkpoint
    from simulation.launch.experiment import parse_sets

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
    from fer_models.federation.task import client_partitions, load_store
    from fer_models.models import check_private_compatible
    from fer_models.models.from_config import build_model
    from server.run_folder import resolve_run_dir
    from server.strategy import make_strategy
    from server.tracking import check_tracking
    from simulation.commands.console import engine_logs_to_file
    from simulation.commands.headline import failure_headline, run_headline, text_headline
    from simulation.launch.launcher import run_simulation
    from simulation.reports.partition_report import describe_partition, format_table, write_partition_files

    cfg = _resume_config(args) if args.resume else resolve_run_config(args)
    if cfg.client_data == "site":
        image_side = check_sites(cfg)
    else:
        store = load_store(cfg)  # decode (and cache) once, and fail on bad data before the engine starts
        logger.info("dataset %s", store.describe())
        image_side = store.image_size[0]
    model = build_model(cfg, image_size=image_side)  # an unknown model or option, or a too small image
    if cfg.dp == "sample":
        check_private_compatible(model)
    run_dir = resolve_run_dir(out_dir=cfg.out_dir, run_name=cfg.run_name, overwrite=cfg.overwrite,
                              resume=bool(cfg.resume_from))
    if cfg.client_data == "partition":
        parts = client_partitions(cfg, num_partitions=cfg.num_clients)
        report = describe_partition(cfg=cfg, store=store, parts=parts)
        logger.info("client partition:\n%s", format_table(report, max_rows=20))
        write_partition_files(report=report, run_dir=run_dir)
        if cfg.audit_canaries:  # issue 17: the canary plan, for `fedfer audit` (fails here if it cannot be planted)
            from simulation.reports.audit import record_canary_plan
            record_canary_plan(run_dir=run_dir, cfg=cfg, store=store)
    cfg = cfg.replace(overwrite=True)  # the folder is checked; the server may now write into it
    flower_log = engine_logs_to_file(run_dir, verbose=args.verbose)
    if flower_log is not None:
        logger.info("Flower's and Ray's own logs: %s (and Ray's session folder); --verbose shows them here", flower_log)
    make_strategy(cfg)  # settings the strategy refuses stop here, before the engine starts
    check_tracking(cfg)  # ... and a tracking backend that is not installed
    run_simulation(cfg, verbose=args.verbose)
    failure_path = run_dir / FAILURE_FILE
    if failure_path.is_file():
        failure = json.loads(failure_path.read_text())
        logger.error("%s", failure["reason"])
        if args.json:
            print_json(args, failure_headline(failure=failure, run_dir=run_dir, failure_path=failure_path))
            return 1
        print(f"\nthe run FAILED in round {failure['round']}; no final accuracy (rounds completed: "
              f"{failure['last_good_round']}); details in {failure_path}")
        return 1
    summary_path = run_dir / SUMMARY_FILE
    if not summary_path.is_file():
        logger.error("the run ended without writing %s; see the log above", summary_path)
        return 1
    _write_figures(cfg=cfg, run_dir=run_dir)
    summary = json.loads(summary_path.read_text())
    if args.json:
        print_json(args, run_headline(summary=summary, run_dir=run_dir))
        return 0
    print("\n".join(text_headline(summary)))
    print(f"results: {run_dir}")
    return 0


def check_sites(cfg: "RunConfig") -> int:
    """client-data=site: decode (and cache) every virtual site's data once before the engine starts.

    A site whose data cannot be used is logged and left in: its client refuses each round with the same
    message, and the run goes on with the others while min-train-clients allows (as in a deployment).
    Under privacy-unit=person the simulation's operator holds every site, so it checks what no site can: that no
    subject id sits at two sites (a person there would get the composition of both sites' epsilons).
    Returns the model's image side."""
    import numpy as np

    from fer_models.common.labels import IMAGE_SIDE
    from fer_models.data.person_split import SITE_ADVICE, check_one_client_per_person
    from fer_models.federation.sites import SiteDataError, SiteSpec, simulated_site_config, site_data
    from server.evaluation import make_evaluator

    usable, holdings = 0, {}
    for i in range(cfg.num_clients):
        spec = SiteSpec.from_node_config(simulated_site_config(cfg, partition_id=i))
        try:
            local = site_data(cfg, spec)
        except SiteDataError as exc:
            logger.error("virtual client %d: %s; it will refuse every round", i, exc)
            continue
        usable += 1
        subjects = local.store.meta.get("subject")
        if subjects is not None:
            holdings[f"site {spec.name}"] = np.asarray(subjects).astype(str)[local.train.frames[:, 0].numpy()]
        logger.info("virtual client %d = site %s: %d training samples, held-out split %s (%s)", i, spec.name,
                    len(local.train), local.held_out or "none", spec.data_path)
    if cfg.privacy_unit == "person":
        check_one_client_per_person(holdings=holdings, advice=SITE_ADVICE)
    if usable < cfg.min_train_clients:
        raise ValueError(f"only {usable} of {cfg.num_clients} sites have usable data but min-train-clients="
                         f"{cfg.min_train_clients}: fix the sites named above")
    if cfg.eval_data_path:
        make_evaluator(cfg=cfg)  # the server's own evaluation set: fail now if it cannot be read
    return IMAGE_SIDE


def _write_figures(*, cfg: "RunConfig", run_dir: Path) -> None:
    """The attention grid (attention models) and report.md with its plots; a failure here only warns."""
    from simulation.reports.report import write_report

    try:
        if cfg.model == "cnn_attention" and cfg.client_data == "partition":
            _attention_grid(cfg=cfg, run_dir=run_dir)
        written = write_report(run_dir=run_dir)
        logger.info("report: %s (%d files)", run_dir / REPORT_FILE, len(written))
    except Exception as exc:  # noqa: BLE001 - the run's results are already saved
        logger.warning("could not draw the report (%s: %s); `fedfer report %s` retries", type(exc).__name__, exc,
                       run_dir)


def _attention_grid(*, cfg: "RunConfig", run_dir: Path, count: int = 16) -> None:
    import numpy as np
    import torch

    from fer_models.data.samples import static_clips
    from fer_models.federation.task import load_store, report_split
    from simulation.predict.model_io import load_model_file
    from simulation.reports.report import plot_attention_grid

    model, _ = load_model_file(path=run_dir)
    store = load_store(cfg)
    idx = np.random.default_rng(cfg.seed).choice(store.indices(report_split(cfg, store)), size=count, replace=False)
    clips = static_clips(store, np.sort(idx), clip_length=cfg.clip_length)
    x, y = clips.batch(torch.arange(len(clips)))
    with torch.no_grad():
        pred = model(x).argmax(1)
        maps = model.attention_map(x, upsample=True)[:, 0]
    plot_attention_grid(images=store.images[clips.frames[:, 0]].numpy(), maps=maps.numpy(), labels=y.tolist(),
                        predictions=pred.tolist(), path=run_dir / ATTENTION_FIGURE)
