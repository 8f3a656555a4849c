"""``fedfer certs DIR``: a throwaway CA and a server certificate for a SuperLink (TLS)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("certs", help="write a throwaway CA + SuperLink server certificate (TLS) into DIR")
    p.add_argument("dir", type=Path, help="folder for ca.crt, ca.key, server.pem, server.key")
    p.add_argument("--host", action="append", default=[], metavar="NAME_OR_IP",
                   help="extra host name or IP address the SuperLink is reached at (repeatable); "
                   "localhost, 127.0.0.1 and ::1 are always included")
    p.add_argument("--days", type=int, default=30, help="validity in days (default 30)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from simulation.launch.certs import generate_certificates
    from simulation.launch.output_paths import output_folder

    output_folder(args.dir, flag="DIR")
    files = generate_certificates(args.dir, hosts=args.host, days=args.days, overwrite=args.overwrite)
    print(f"CA certificate:     {files.ca_cert}   (give to SuperNodes: --root-certificates, and to flwr: "
          f"root-certificates in FLWR_HOME/config.toml)")
    print(f"server certificate: {files.server_cert}   (SuperLink: --ssl-certfile)")
    print(f"server key:         {files.server_key}   (SuperLink: --ssl-keyfile; keep private)")
    print(f"SuperLink: flower-superlink --ssl-ca-certfile {files.ca_cert} --ssl-certfile {files.server_cert} "
          f"--ssl-keyfile {files.server_key}")
    return 0
