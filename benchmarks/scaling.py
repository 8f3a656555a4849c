"""Scaling with the number of virtual clients: wall per round and peak memory of the whole run.

``fedfer simulate`` on SYNTHETIC faces with N = 10, 100, 1000 virtual clients. Every N samples the
same number of clients per round (``fraction-train`` = sampled / N), each holding the same handful
of images, and the dataset itself is the same for every N (generated for the largest N; each run
uses N x samples-per-client of its training images). So the work per round is fixed and only the
number of clients that are NOT sampled changes: neither wall per round nor memory should grow with it.

Memory is the peak resident memory of the whole process tree (the fedfer CLI with its ServerApp,
Ray's GCS and raylet, and every Ray worker), summed over processes from /proc every 0.2 s.

    python benchmarks/scaling.py [--clients 10,100,1000] [--sampled 10] [--samples-per-client 8]
        [--rounds 3] [--num-cpus 1]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, markdown_table, run_fedfer, write_results  # noqa: E402
from fer_models.common.labels import NUM_CLASSES  # noqa: E402
from simulation.launch.launcher import ray_cpus  # noqa: E402


def fraction_for(num_clients: int, sampled: int) -> float:
    """The smallest fraction-train with which FedAvg samples ``sampled`` clients (int(N * f) == sampled)."""
    frac = min(1.0, sampled / num_clients)
    while int(num_clients * frac) < min(sampled, num_clients):
        frac = min(1.0, math.nextafter(frac, 2.0))
    return frac


def pool_size(images: int) -> int:
    """At least ``images``, rounded up to whole classes: the stratified cap keeps round(limit / 7) per class."""
    return NUM_CLASSES * math.ceil(images / NUM_CLASSES)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="10,100,1000", help="comma-separated numbers of virtual clients")
    ap.add_argument("--sampled", type=int, default=10, help="clients sampled for training each round")
    ap.add_argument("--samples-per-client", type=int, default=8, help="training images each client holds")
    ap.add_argument("--rounds", type=int, default=3, help="at least 2: round 1 carries the start-up")
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per client (Ray runs cores / this at once)")
    ap.add_argument("--model", default="cnn")
    args = ap.parse_args()
    counts = [int(c) for c in args.clients.split(",") if c.strip()]
    if args.rounds < 2:
        ap.error("--rounds must be >= 2 (steady rounds are 2..R)")
    if not counts or min(counts) < 1 or args.sampled < 1 or args.samples_per_client < 1:
        ap.error("--clients, --sampled and --samples-per-client must be positive")
    k = args.samples_per_client
    per_class = max(240, math.ceil(max(counts) * k / NUM_CLASSES))  # one dataset for every N
    rows = []
    for n in counts:
        sets = {"num-clients": n, "num-server-rounds": args.rounds, "local-epochs": args.local_epochs,
                "model": args.model, "synthetic-per-class": per_class, "max-train-samples": pool_size(n * k),
                "min-client-samples": k, "fraction-train": fraction_for(n, args.sampled),
                "fraction-evaluate": 0.0, "num-cpus": args.num_cpus, "run-name": f"scaling-{n}"}
        print(f"--- {n} clients: {sets}", flush=True)
        res = run_fedfer(sets, out=REPO / "runs" / "bench" / f"scaling-{n}")
        row = {"clients": n, "settings": sets, **res}
        if "error" in res:
            print(res["error"], file=sys.stderr)
        else:
            sampled = sum(res["clients_sampled"]) / len(res["clients_sampled"])
            row.update({"sampled_per_round": sampled, "per_sampled_client_s": res["per_round_s"] / sampled})
            print(f"{n} clients: {res['per_round_s']:.2f} s/round, start-up {res['startup_s']:.1f} s, "
                  f"peak RSS {res['peak_rss_mb']:.0f} MB (PSS {res['peak_pss_mb']:.0f} MB)", flush=True)
        rows.append(row)
    base = next((r for r in rows if "error" not in r), None)
    for r in rows:
        if base is not None and "error" not in r:
            r["rss_vs_smallest"] = r["peak_rss_mb"] / base["peak_rss_mb"]
            r["round_vs_smallest"] = r["per_round_s"] / base["per_round_s"]
    table = markdown_table(rows, [
        ("clients", "clients", "d"), ("sampled / round", "sampled_per_round", ".0f"),
        ("wall per round (s)", "per_round_s", ".2f"), ("per sampled client (s)", "per_sampled_client_s", ".3f"),
        ("start-up (s)", "startup_s", ".1f"), ("peak RSS, process tree (MB)", "peak_rss_mb", ".0f"),
        ("peak PSS (MB)", "peak_pss_mb", ".0f"), ("processes", "peak_processes", "d"),
        ("RSS vs. smallest N", "rss_vs_smallest", ".2f"), ("round vs. smallest N", "round_vs_smallest", ".2f")])
    print(table)
    cores = ray_cpus()
    notes = (f"SYNTHETIC faces generated once for all N ({per_class} per class, {per_class * NUM_CLASSES} "
             f"training images); each run keeps N x {k} of them (max-train-samples, rounded up to a multiple of 7 for "
             f"the stratified cap), iid, so every client holds {k} (or {k + 1}) images; {args.sampled} clients sampled per round (fraction-train = {args.sampled}/N), "
             f"{args.local_epochs} local epoch(s), batch 64 (one step per client), model {args.model}, "
             f"{args.rounds} rounds, num-cpus={args.num_cpus:g} per client on {cores} Ray CPUs "
             f"({max(1, int(cores // args.num_cpus))} clients at once); the server evaluates val and test "
             "(420 images each) every round. Wall per round = mean over steady rounds 2..R of the server's "
             "per-round `elapsed_s`; start-up (imports, data, Ray engine and actors, round-0 evaluation) = "
             "end of round 1 minus one steady round. Memory: peak over the run, polled every 0.2 s from /proc, "
             "of the sum over the fedfer process and all its descendants (Ray GCS, raylet, workers) of the "
             "resident set (RSS; shared library pages count once per process) and of the proportional set "
             "(PSS; shared pages split between their processes).")
    write_results("scaling", results={"args": vars(args), "runs": rows}, table=table, notes=notes)


if __name__ == "__main__":
    main()
