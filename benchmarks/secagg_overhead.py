"""SecAgg+ overhead per round against plain FedAvg: wall time and bytes on the wire.

Part 1, the protocol alone: one round over an in-process federation (simulation/bench/secagg_federation.py:
fedfer's client mods, a stand-in trainer adding a fixed update, so training costs nothing) with the
model's real state dict; plain FedAvg and SecAgg+ run the same strategy. Bytes are the payloads of
every message both ways (arrays, and the protocol's keys, shares and masked vectors); all clients run
one after another in this process, so the wall time is the sum of their work plus the server's.
The difference between the two global models is checked against the reported quantization bound.

Part 2 (``--simulate``), end to end: `fedfer simulate` plain and with secure-aggregation=secaggplus,
same seed and data; the median round time (from round 2, after the engine's start-up) and the largest
difference between the two final models. Part 3 (``--deploy``): the same in `fedfer deploy-local`
(SuperLink and SuperNode processes on loopback; a ClientApp process per message).

``--expansion N ...`` instead times the mask expansion alone for models of N entries: Flower's
``pseudo_rand_gen`` (a 32-bit NumPy seed) against fedfer's (AES-256-CTR keyed by the whole seed,
fer_models/privacy/secagg_prg.py, which the protocol rounds above use); a client runs it once per neighbour
plus once for its self mask per round, the server once per summed client and per dropout's neighbour.

    nice -n 10 python benchmarks/secagg_overhead.py [--clients 3 5 10] [--model cnn] [--simulate] [--deploy]
    nice -n 10 python benchmarks/secagg_overhead.py --expansion 135000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import markdown_table, write_results  # noqa: E402
from fer_models.federation.run_folder import METRICS_FILE, MODEL_FILE  # noqa: E402
from simulation.bench.secagg_federation import protocol_round  # noqa: E402


def mask_expansion(*, entries: int, repeats: int = 7) -> dict:
    """Best-of-``repeats`` milliseconds to expand one 32-byte seed into ``entries`` mask values, both ways."""
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen as flower

    from fer_models.config.secagg_checks import MODULUS_RANGE
    from fer_models.privacy.secagg_prg import pseudo_rand_gen as fedfer

    seed, dims = os.urandom(32), [(entries,)]
    row: dict = {"part": "mask expansion", "params": entries}
    for name, expand in (("flower", flower), ("fedfer", fedfer)):
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            expand(seed, MODULUS_RANGE, dims)
            times.append(time.perf_counter() - began)
        row[f"{name}_ms"] = 1e3 * min(times)
    row["ratio"] = row["fedfer_ms"] / row["flower_ms"]
    return row


def end_to_end(*, engine: str, secure: bool, rounds: int, clients: int, work: Path) -> dict:
    """`fedfer simulate` or `fedfer deploy-local` in a subprocess; round times from metrics.jsonl, the final
    model's arrays."""
    import torch

    out = work / f"{engine}-{'secagg' if secure else 'plain'}"
    sets = [f"num-clients={clients}", f"num-server-rounds={rounds}", "synthetic-per-class=60",
            "synthetic-eval-per-class=10", "local-epochs=1", *(["secure-aggregation=secaggplus"] if secure else [])]
    env = {**os.environ, "FLWR_HOME": str(work / "flwr-home"), "FEDFER_CACHE": str(work / "cache"),
           "RAY_USAGE_STATS_ENABLED": "0"}
    nodes = ["--nodes", str(clients), "--no-report"] if engine == "deploy-local" else []
    cmd = [sys.executable, "-m", "simulation.commands.cli", engine, *nodes, "--out", str(out),
           *[a for s in sets for a in ("--set", s)]]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800,
                          cwd=Path(__file__).resolve().parents[1])
    if proc.returncode:
        raise RuntimeError(f"{engine} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines() if line.strip()]
    ends = [r["elapsed_s"] for r in rows]
    state = torch.load(out / MODEL_FILE, weights_only=False)["state_dict"]
    spans = [b - a for a, b in zip(ends, ends[1:])]
    return {"round_s": statistics.median(spans) if spans else None, "rows": rows,
            "model": {k: v.numpy() for k, v in state.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[3, 5, 10])
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--simulate", action="store_true", help="also run fedfer simulate plain vs secaggplus")
    parser.add_argument("--deploy", action="store_true", help="also run fedfer deploy-local plain vs secaggplus")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--expansion", type=int, nargs="+", metavar="N",
                        help="only time the mask expansion (Flower's vs fedfer's) for models of N entries")
    args = parser.parse_args()
    if args.expansion:
        rows = [mask_expansion(entries=n) for n in args.expansion]
        table = markdown_table(rows, [("model entries", "params", "d"), ("Flower ms", "flower_ms", ".2f"),
                                      ("fedfer ms", "fedfer_ms", ".2f"), ("fedfer / Flower", "ratio", ".2f")])
        write_results("secagg_mask_expansion", results=rows, table=table, notes=(
            "one mask (one seed) expanded to the model's entries, best of 7; Flower: np.random.RandomState of the "
            "32-bit XOR fold of the seed; fedfer: AES-256-CTR keyed by SHA-256(tag + whole seed), 64-bit words "
            "reduced mod 2**32"))
        print(table)
        return
    rows = []
    for k in args.clients:
        plain, secure = (protocol_round(clients=k, model=args.model, secure=s) for s in (False, True))
        diff = max(float(np.abs(secure["model"][n].astype(np.float64) - plain["model"][n]).max()) for n in plain["model"])
        rows.append({"part": "protocol", "clients": k, "params": plain["params"],
                     "plain_s": plain["wall_s"], "secagg_s": secure["wall_s"],
                     "plain_mb": (plain["bytes_sent"] + plain["bytes_received"]) / 1e6,
                     "secagg_mb": (secure["bytes_sent"] + secure["bytes_received"]) / 1e6,
                     "upload_ratio": secure["bytes_received"] / plain["bytes_received"],
                     "max_diff": diff, "bound": secure["bound"]})
        print(rows[-1], flush=True)
    engines = [e for e, on in (("simulate", args.simulate), ("deploy-local", args.deploy)) if on]
    with tempfile.TemporaryDirectory() as tmp:
        # after one round the two global models may differ by the quantization error only; later rounds train
        # from slightly different models, and the difference grows with training
        runs = [(e, r) for e in engines for r in ((1, args.rounds) if e == "simulate" else (args.rounds,))]
        for engine, rounds in runs:
            k = args.clients[0]
            plain, secure = (end_to_end(engine=engine, secure=s, rounds=rounds, clients=k,
                                        work=Path(tmp) / f"r{rounds}") for s in (False, True))
            diff = max(float(np.abs(secure["model"][n] - plain["model"][n]).max()) for n in plain["model"])
            bound = max(r["secagg_quantization_error_max"] for r in secure["rows"])
            rows.append({"part": f"{engine}, {rounds} round(s)", "clients": k, "plain_s": plain["round_s"],
                         "secagg_s": secure["round_s"],
                         "secagg_mb": statistics.median((r["secagg_bytes_sent"] + r["secagg_bytes_received"]) / 1e6
                                                        for r in secure["rows"]),
                         "max_diff": diff, "bound": bound})
            print(rows[-1], flush=True)
    table = markdown_table(rows, [("part", "part", ""), ("clients", "clients", "d"), ("params", "params", "d"),
                                  ("plain s/round", "plain_s", ".2f"), ("SecAgg+ s/round", "secagg_s", ".2f"),
                                  ("plain MB", "plain_mb", ".2f"), ("SecAgg+ MB", "secagg_mb", ".2f"),
                                  ("upload x", "upload_ratio", ".2f"), ("max abs(SecAgg+ - plain)", "max_diff", ".2e"),
                                  ("reported bound/round", "bound", ".2e")])
    notes = ("protocol: one in-process round, clients one after another, stand-in training (no compute); MB = "
             "payload bytes both ways. simulate / deploy-local: median round time from round 2 (training and the "
             "server's evaluation included; the first clients of --clients), final models after all rounds: after one round "
             "they differ by the quantization error only, after more the clients train from slightly different "
             "models and the difference grows with training (the bound column is one round's).")
    write_results("secagg_overhead", results=rows, table=table, notes=notes)
    print(table)


if __name__ == "__main__":
    main()
