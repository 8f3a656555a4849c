"""``fedfer deploy-local``: the run on Flower's Deployment Engine, SuperLink + N SuperNodes on this machine."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fer_models.federation.run_folder import SUMMARY_FILE
from simulation.commands.cli_common import add_json_flag, add_run_args, print_json, resolve_run_config

logger = logging.getLogger("fedfer")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy-local", help="run on Flower's Deployment Engine: a SuperLink and N SuperNode "
                       "processes on loopback (a one-machine trial of a multi-machine deployment)")
    add_run_args(p)
    p.add_argument("--nodes", type=int, metavar="N", help="SuperNodes to start (= num-clients), each taking partition i "
                   "of the run's data; not with --site")
    p.add_argument("--site", action="append", default=[], metavar="NAME=PATH", help="a site with its own data: one "
                   "SuperNode each, given only its own PATH in its node config (client-data=site); the SuperLink and "
                   "ServerApp get no data path (evaluation: federated, or --set eval-data-path=...). Repeat per site")
    p.add_argument("--tls", action="store_true", help="TLS with a throwaway CA made for this run")
    p.add_argument("--auth", action="store_true", help="SuperNode authentication: per-node keys registered "
                   "with the SuperLink (implies --tls)")
    p.add_argument("--round-timeout", type=float, metavar="S", help="seconds a round waits for replies "
                   "(sets round-timeout); nodes that miss it count as dropped")
    p.add_argument("--private-dir", type=Path, metavar="DIR", help="what the server must not hold: each site's "
                   "folder (sites/NAME: its node config, private key and logs; 0700, files 0600) and the SuperLink's "
                   "TLS key (superlink/); default: RUN_FOLDER.private beside the run folder, never inside it")
    p.add_argument("--port", type=int, help="SuperLink port (default: a free one)")
    p.add_argument("--timeout", type=float, default=6 * 3600.0, help="give up after this many seconds")
    p.add_argument("--no-report", action="store_true", help="skip drawing report.md and its plots")
    add_json_flag(p)
    p.set_defaults(func=run)


def deploy_config(args: argparse.Namespace):
    """The run config for N SuperNodes: num-clients = N, min-available-clients = N unless set, out-dir absolute."""
    from fer_models.config import ConfigError
    from simulation.launch.experiment import parse_sets

    if args.site:
        if args.nodes is not None and args.nodes != len(args.site):
            raise ConfigError(f"--nodes {args.nodes} with {len(args.site)} --site: each site is one SuperNode; drop --nodes")
        if args.data:
            raise ConfigError("--data with --site: each site's data goes to its own SuperNode only; drop --data")
        args = argparse.Namespace(**{**vars(args), "nodes": len(args.site)})
    if args.nodes is None or args.nodes < 1:
        raise ConfigError("give --nodes N (N >= 1) SuperNodes, or one --site NAME=PATH per site")
    explicit = parse_sets(args.sets)
    if "num-clients" in explicit and int(explicit["num-clients"]) != args.nodes:
        raise ConfigError(f"num-clients={explicit['num-clients']} differs from --nodes {args.nodes}: each "
                          f"SuperNode is one client")
    extra = [f"num-clients={args.nodes}"]
    if "min-available-clients" not in explicit:
        extra.append(f"min-available-clients={args.nodes}")  # round 1 waits for every SuperNode
    if args.round_timeout is not None:
        extra.append(f"round-timeout={args.round_timeout}")
    if args.site:
        extra += ["client-data=site", "data-path="]  # the server's config holds no site's path
    ns = argparse.Namespace(**{**vars(args), "sets": [*extra, *args.sets]})
    cfg = resolve_run_config(ns)
    return cfg.replace(out_dir=str(Path(cfg.out_dir).resolve()))


def site_node_configs(items: list[str], *, cfg) -> list[dict[str, object]]:
    """Each --site NAME=PATH as the node config a real site's SuperNode would have (it shares evaluation
    counts: the operator of a one-machine trial holds every site; a real site decides in its own node config)."""
    from fer_models.data.loading import parse_data_paths
    from fer_models.federation.sites import SiteSpec

    if not items:
        return []
    pairs = parse_data_paths(",".join(items))
    return [SiteSpec(name=name, data_path=str(Path(path).expanduser().resolve()), face_crop=cfg.face_crop,
                     share_evaluation=True).node_config() for name, path in pairs]


def private_dir_for(run_dir: Path, given: Path | None = None) -> Path:
    """Where the keys and the sites' folders go: ``given``, else ``<run folder>.private`` beside the run folder;
    never inside the run folder (the honest-but-curious server reads it)."""
    from fer_models.config import ConfigError

    run_dir = Path(run_dir).resolve()
    private = Path(given).expanduser().resolve() if given else run_dir.with_name(f"{run_dir.name}.private")
    if private.is_relative_to(run_dir) or run_dir.is_relative_to(private):
        raise ConfigError(f"--private-dir {private} and the run folder {run_dir} must not lie one inside the other: "
                          f"the server reads its run folder; choose a folder beside it")
    return private


def run(args: argparse.Namespace) -> int:
    from server.run_folder import resolve_run_dir
    from server.strategy import make_strategy
    from server.tracking import check_tracking
    from simulation.launch.deploy import DeployError, LocalDeployment
    from simulation.launch.processes import Terminated, signals_raise

    cfg = deploy_config(args)
    sites = site_node_configs(args.site, cfg=cfg)
    make_strategy(cfg)  # settings the strategy refuses stop here, before any process starts
    check_tracking(cfg)  # ... and a tracking backend that is not installed
    run_dir = resolve_run_dir(out_dir=cfg.out_dir, run_name=cfg.run_name, overwrite=cfg.overwrite,
                              resume=bool(cfg.resume_from))
    cfg = cfg.replace(overwrite=True)  # the folder is checked; the ServerApp may now write into it
    work = run_dir / "deploy"
    private = private_dir_for(run_dir, getattr(args, "private_dir", None))
    from simulation.launch.deploy import PROJECT_ROOT

    inside = run_dir.resolve().is_relative_to(PROJECT_ROOT)
    if inside and not run_dir.resolve().is_relative_to(PROJECT_ROOT / "runs"):
        logger.warning("the run folder %s lies inside the project but outside runs/: `flwr run` packages the "
                       "project, so unless it is git-ignored its deploy/ logs and run config travel with the app",
                       run_dir)
    logger.info("deploying %d SuperNodes; the server's logs, FLWR_HOME, CA certificate and node public keys in %s; "
                "private keys, node configs and SuperNode logs (0700) in %s", len(sites) or args.nodes, work, private)
    try:
        deployment = LocalDeployment(work_dir=work, num_nodes=len(sites) or args.nodes, tls=args.tls, auth=args.auth,
                                     superlink_port=args.port, site_configs=sites, private_dir=private)
        with signals_raise():
            try:
                deployment.start()
                summary = deployment.run(cfg.to_flat(), summary=run_dir / SUMMARY_FILE, timeout=args.timeout)
            finally:
                deployment.shutdown()
    except DeployError as exc:
        print(f"fedfer deploy-local: error: {exc}")
        return 1
    except Terminated:
        print("fedfer deploy-local: terminated; every process of the deployment was stopped")
        return 143
    if not args.no_report:
        from simulation.commands.cmd_simulate import _write_figures

        _write_figures(cfg=cfg, run_dir=run_dir)
    if args.json:
        from simulation.commands.headline import run_headline

        print_json(args, {**run_headline(summary=summary, run_dir=run_dir), "nodes": len(sites) or args.nodes,
                          "private_dir": str(private)})
        return 0
    from simulation.commands.headline import text_headline

    print("\n".join(text_headline(summary, where=f" on {len(sites) or args.nodes} SuperNodes")))
    print(f"results: {run_dir}; the sites' folders (node configs, private keys, SuperNode logs): {private}")
    return 0
