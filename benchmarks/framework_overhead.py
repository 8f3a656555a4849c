"""Framework overhead: fedfer (Flower + Ray simulation) vs. the same FedAvg rounds in a plain loop.

Both sides do the same serial work on the same data: each round, every client of the same
partition (``client_data``) trains the global model for ``local-epochs`` with the same optimizer,
batch size and per-(client, round) seed as fedfer's ClientApp; the updates are averaged weighted
by sample count (FedAvg); the global model is evaluated on the server's held-out splits (val and
test, with the classification report), and the initial model once before round 1. fedfer runs
with ``num-cpus`` = all cores per client, so Ray runs one client at a time, like the plain loop.

Per-round times are steady-state rounds (2..R) on both sides; fedfer's one-time start-up
(imports, data, Ray engine and actor, round-0 evaluation) is reported separately.

    python benchmarks/framework_overhead.py [--data ../shared/data/fer2013] [--clients 4] [--rounds 3]
        [--local-epochs 1] [--model cnn] [--max-train-samples 0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, markdown_table, run_fedfer, write_results  # noqa: E402
from benchmarks.convergence_ablation import local_round  # noqa: E402  (the client's non-DP round, its seeds)
from fer_models.config import RunConfig  # noqa: E402
from fer_models.federation.task import client_data, eval_splits, load_store  # noqa: E402
from fer_models.models.from_config import build_model
from fer_models.training import engine  # noqa: E402
from fer_models.training.metrics import classification_report  # noqa: E402
from simulation.launch.launcher import ray_cpus  # noqa: E402


def evaluate_global(cfg: RunConfig, model: torch.nn.Module, splits: dict, device: torch.device) -> tuple[float, float]:
    """What the server's GlobalEvaluator does each round: every held-out split, report on test.

    Returns (accuracy, loss) on the reported split."""
    out = (0.0, 0.0)
    for name, data in splits.items():
        res = engine.evaluate(model=model, data=data, batch_size=cfg.eval_batch_size, device=device)
        if name == ("test" if "test" in splits else "val"):
            out = (classification_report(y_true=res.y_true, y_pred=res.y_pred)["accuracy"], res.loss)
    return out


#: Where a round's time goes (the keys of fedfer's metrics.jsonl rows, server/recorder.py), in table order.
PHASES = (("client_train_s", "clients' local training (engine.train), summed"),
          ("client_setup_s", "clients' set-up and reply around it (data, model, optimizer, the reply's arrays)"),
          ("eval_s", "server evaluation of the global model (val and test)"),
          ("write_s", "server writes (model.pt, resumable checkpoint)"),
          ("rest_s", "the rest: FedAvg, and for fedfer Flower messages, Ray transfers and scheduling"))


def mean_phases(rows: list[dict[str, Any]], *, per_round: float) -> dict[str, float] | None:
    """Mean seconds per steady round of each phase in PHASES (the rest = the round minus the others);
    None when the rows lack a phase (a run of an older fedfer, or under DP, where clients send no timing)."""
    keys = ("client_train_s", "client_round_s", "eval_s", "write_s")
    if not rows or not all(k in r for r in rows for k in keys):
        return None
    mean = {k: statistics.mean(float(r[k]) for r in rows) for k in keys}
    out = {"client_train_s": mean["client_train_s"], "client_setup_s": mean["client_round_s"] - mean["client_train_s"],
           "eval_s": mean["eval_s"], "write_s": mean["write_s"]}
    out["rest_s"] = per_round - sum(out.values())
    return out


def plain_rounds(cfg: RunConfig) -> dict[str, Any]:
    """FedAvg by hand with fer_models' engine: the client work of client/training.py, serially."""
    t0 = time.perf_counter()
    threads = engine.configure_threads(cfg.num_cpus)
    device = engine.select_device()
    store = load_store(cfg)
    n = cfg.num_clients
    for pid in range(n):  # partitions computed (and memoised) up front, as a fedfer worker does once
        client_data(cfg, partition_id=pid, num_partitions=n)
    splits = eval_splits(cfg, store)
    server_model = build_model(cfg, image_size=store.image_size[0]).to(device)
    global_state = {k: v.clone() for k, v in server_model.state_dict().items()}
    accs = [evaluate_global(cfg, server_model, splits, device)]  # round 0, as the server does
    setup = time.perf_counter() - t0
    rounds, phases = [], []
    for rnd in range(1, cfg.num_server_rounds + 1):
        t = time.perf_counter()
        updates = [local_round(cfg, state=global_state, partition_id=pid, server_round=rnd, device=device)
                   for pid in range(n)]
        clients = time.perf_counter() - t
        total = sum(st.num_examples for _, st in updates)
        global_state = {k: sum(s[k].double() * (st.num_examples / total) for s, st in updates) for k in updates[0][0]}
        server_model.load_state_dict(global_state)
        evaluated = time.perf_counter()
        accs.append(evaluate_global(cfg, server_model, splits, device))
        rounds.append(time.perf_counter() - t)
        phases.append({"client_train_s": sum(st.seconds for _, st in updates), "client_round_s": clients,
                       "eval_s": rounds[-1] - (evaluated - t), "write_s": 0.0})
    steady = rounds[1:] or rounds
    return {"setup_s": setup, "round_s": rounds, "per_round_s": statistics.mean(steady), "threads": threads,
            "phases": mean_phases(phases[1:] or phases, per_round=statistics.mean(steady)),
            "final_accuracy": accs[-1][0], "accuracy_by_round": [a for a, _ in accs[1:]],
            "loss_by_round": [loss for _, loss in accs[1:]],
            "samples_per_round": sum(len(client_data(cfg, partition_id=p, num_partitions=n)) for p in range(n))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="dataset path (default: embedded synthetic faces)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="at least 2: round 1 carries fedfer's start-up")
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--max-train-samples", type=int, default=0, help="cap the training set (0 = all)")
    ap.add_argument("--skip-plain", action="store_true", help="only run fedfer (for debugging)")
    args = ap.parse_args()
    if args.rounds < 2:
        ap.error("--rounds must be >= 2 (steady rounds are 2..R)")
    cores = ray_cpus()
    sets = {"num-clients": args.clients, "num-server-rounds": args.rounds, "local-epochs": args.local_epochs,
            "model": args.model, "max-train-samples": args.max_train_samples, "num-cpus": cores,
            "fraction-train": 1.0, "fraction-evaluate": 0.0, "run-name": "framework-overhead"}
    cfg = RunConfig.from_flat({**sets, **({"data-path": args.data} if args.data else {})})

    plain = None if args.skip_plain else plain_rounds(cfg)
    if plain:
        print(f"plain: setup {plain['setup_s']:.1f}s, rounds {[round(x, 2) for x in plain['round_s']]}", flush=True)
    fed = run_fedfer(sets, out=REPO / "runs" / "bench" / "framework_overhead", data=args.data)
    if "error" in fed:
        print(fed["error"], file=sys.stderr)
    else:
        print(f"fedfer: start-up {fed['startup_s']:.1f}s, steady rounds {[round(x, 2) for x in fed['steady_round_s']]}, "
              f"tear-down {fed['teardown_s']:.1f}s", flush=True)

    ratio = fed["per_round_s"] / plain["per_round_s"] if plain and "error" not in fed else None
    # the same computation on both sides shows as the same held-out loss every round (to float rounding)
    same = (max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(plain["loss_by_round"], fed["loss_by_round"]))
            if plain and "error" not in fed else None)
    rows = [{"side": "plain PyTorch loop", "per_round_s": plain and plain["per_round_s"],
             "startup_s": plain and plain["setup_s"], "final_accuracy": plain and plain["final_accuracy"],
             "final_loss": plain and plain["loss_by_round"][-1]},
            {"side": "fedfer simulate", "per_round_s": fed.get("per_round_s"), "startup_s": fed.get("startup_s"),
             "teardown_s": fed.get("teardown_s"), "final_accuracy": fed.get("final_accuracy"),
             "final_loss": (fed.get("loss_by_round") or [None])[-1],
             "ratio": ratio, "peak_rss_mb": fed.get("peak_rss_mb"), **({"error": 1} if "error" in fed else {})}]
    table = markdown_table(rows, [("run", "side", ""), ("wall per round (s)", "per_round_s", ".2f"),
                                  ("start-up (s)", "startup_s", ".1f"), ("tear-down (s)", "teardown_s", ".1f"),
                                  ("fedfer / plain per round", "ratio", ".3f"),
                                  ("final accuracy", "final_accuracy", ".4f"),
                                  ("final held-out loss", "final_loss", ".5f"),
                                  ("peak RSS, process tree (MB)", "peak_rss_mb", ".0f")])
    fed_phases = None if "error" in fed else mean_phases(fed["steady_rows"], per_round=fed["per_round_s"])
    if plain and fed_phases:
        split = [{"phase": label, "plain": plain["phases"][key], "fedfer": fed_phases[key],
                  "extra": fed_phases[key] - plain["phases"][key]} for key, label in PHASES]
        split.append({"phase": "round", "plain": plain["per_round_s"], "fedfer": fed["per_round_s"],
                      "extra": fed["per_round_s"] - plain["per_round_s"]})
        table += "\n\nWhere a steady round's time goes (mean seconds per round):\n\n" + markdown_table(
            split, [("phase", "phase", ""), ("plain (s)", "plain", ".2f"), ("fedfer (s)", "fedfer", ".2f"),
                    ("fedfer - plain (s)", "extra", "+.2f")])
    print(table)
    data = f"`{args.data}`" if args.data else "the embedded SYNTHETIC faces"
    notes = (f"{args.clients} clients, all trained every round, {args.rounds} rounds, {args.local_epochs} local "
             f"epoch(s), model {args.model}, {data}"
             f"{f', at most {args.max_train_samples} training images' if args.max_train_samples else ''}; "
             f"{plain['samples_per_round'] if plain else '?'} training samples per round. "
             f"fedfer: num-cpus={cores} per client on {cores} Ray CPUs, so one client trains at a time "
             f"(as in the plain loop, {cores} torch threads on both sides). Wall per round = mean over steady "
             f"rounds 2..{args.rounds} (fedfer: from the server's per-round `elapsed_s` in metrics.jsonl; "
             "plain: timed in-process); a round = train every client + FedAvg + evaluate val and test. "
             "fedfer start-up = end of round 1 (seconds since the process started; anchored by watching "
             "metrics.jsonl) minus one steady round: imports, data, Ray engine and actor, the actor's data "
             "load and the round-0 evaluation. Plain start-up = data, partitions and the round-0 evaluation. "
             "Target: fedfer / plain per round <= 1.10. fedfer's rounds also save model.pt and a resumable checkpoint "
             "each round; the plain loop does not. Ray's client worker runs at nice 0 (simulation/launch/launcher.py "
             "RAY_ENVIRONMENT; Ray's default 15 let every other process of the run preempt it), and the run's "
             "memory is sampled every 2 s (benchmarks/common.py run_fedfer), not at every 0.2 s poll. "
             f"Same computation check: largest relative difference of the per-round held-out loss "
             f"between the two sides = {same if same is None else f'{same:.1e}'} (FedAvg summation order and "
             "precision differ, so not exactly 0). Phases: fedfer's from its metrics.jsonl rows (the clients' "
             "train-seconds and round-seconds summed, the server's eval_s and write_s; write_s of a row is the "
             "previous round's writes, which fall inside that row's span); the plain loop's timed the same way "
             "in-process; the rest = the round minus the timed phases.")
    write_results("framework_overhead", table=table, notes=notes,
                  results={"args": vars(args), "plain": plain, "fedfer": fed, "fedfer_phases": fed_phases,
                           "ratio_per_round": ratio,
                           "loss_max_rel_diff": same})


if __name__ == "__main__":
    main()
