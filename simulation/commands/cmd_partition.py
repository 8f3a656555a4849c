"""``fedfer partition``: show (and save) how an experiment splits the data over its clients."""

from __future__ import annotations

import argparse

from simulation.commands.cli_common import add_json_flag, add_run_args, print_json, resolve_run_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("partition", help="print each client's share (size, group, labels); write "
                       "partition.json and partition.png into --out")
    add_run_args(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fer_models.federation.task import client_partitions, load_store
    from simulation.launch.output_paths import output_folder
    from simulation.reports.partition_report import describe_partition, format_table, write_partition_files

    cfg = resolve_run_config(args)
    out = output_folder(Path(args.out) if args.out else Path(cfg.out_dir), flag="--out")  # before the data is read
    store = load_store(cfg)
    parts = client_partitions(cfg, num_partitions=cfg.num_clients)
    report = describe_partition(cfg=cfg, store=store, parts=parts)
    written = write_partition_files(report=report, run_dir=out)
    if args.json:  # partition.json's keys, the dataset and where the files went
        print_json(args, {**report, "dataset": {"name": store.name, "source": store.source,
                                                "synthetic": store.synthetic, "size": len(store)},
                          "written": [str(p) for p in written]})
        return 0
    print(f"{store.describe()}\n{format_table(report)}")
    for path in written:
        print(f"wrote {path}")
    return 0
