"""Convergence ablation: which federated recipe learns FER2013 at a fixed sample-gradient budget.

Every variant runs the same FedAvg rounds in-process (no Flower, no Ray: the ClientApp's own local
round, fer_models.training.local_round, with its seeds; the weighted mean, then the server step), so a variant
costs its training and nothing else; the recipe chosen here is then run for real by
``benchmarks/time_to_accuracy.py`` (``fedfer simulate``). The server step generalizes FedAvg:
``v = momentum * v + (mean - w); w = w + server_lr * v`` (server_lr 1, momentum 0 = FedAvg;
FedAvgM otherwise: Flower's FedAvgM computes the same update). Local work is ``local-steps``
optimizer steps, or ``local-epochs`` passes (the client's recipe: augmentation, EMA, lr-schedule, class
weights as configured; a fresh optimizer each round); ``pretrain-epochs`` warm-starts the initial model on
the public synthetic faces (fer_models.federation.pretrain, no privacy cost). Accuracy is PrivateTest after
every round; sample gradients are counted.

    python benchmarks/convergence_ablation.py --data ../shared/data/fer2013 --name NAME \\
        --variant "fedavg" --variant "b16:batch-size=16" --variant "m9:server-momentum=0.9,local-steps=9" \\
        [--set model=cnn_rnn] [--clients 10] [--rounds 3]

A variant is ``label[:key=value,...]``: run settings (``fedfer config`` keys; ``server-momentum``
and ``server-learning-rate`` act on the server step here, ``fraction-train`` samples clients).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import markdown_table, parse_pairs, write_results  # noqa: E402
from fer_models.config import RunConfig  # noqa: E402
from fer_models.federation.pretrain import initial_model  # noqa: E402
from fer_models.federation.task import client_data, eval_splits, load_store  # noqa: E402
from fer_models.training import engine  # noqa: E402
from fer_models.training import local_round as core  # noqa: E402
from fer_models.training.metrics import classification_report  # noqa: E402


def server_step(*, global_state: dict[str, torch.Tensor], mean: dict[str, torch.Tensor],
                velocity: dict[str, torch.Tensor], server_lr: float, momentum: float) -> None:
    """In place: FedAvgM on float tensors (FedAvg at lr 1, momentum 0); other tensors take the mean."""
    for key, value in global_state.items():
        if not value.is_floating_point():
            global_state[key] = mean[key]
            continue
        velocity[key] = momentum * velocity.get(key, torch.zeros_like(value)) + (mean[key] - value)
        global_state[key] = value + server_lr * velocity[key]


def local_round(cfg: RunConfig, *, state: dict[str, torch.Tensor], partition_id: int, server_round: int,
                device: torch.device) -> tuple[dict[str, torch.Tensor], engine.TrainStats]:
    """One client's non-private round: the ClientApp's own local round and seeds (a fresh optimizer: no state is
    carried between rounds here), its state and its training statistics (also benchmarks/framework_overhead.py's)."""
    data = client_data(cfg, partition_id=partition_id, num_partitions=cfg.num_clients)
    result = core.local_round(cfg=cfg, train=data, global_state=state, server_round=server_round, private=None,
                              seed=core.round_seed(cfg, partition_id, server_round), device=device)
    return result.state, result.stats


def run_variant(cfg: RunConfig, *, label: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    device = engine.select_device()
    store = load_store(cfg)
    test = eval_splits(cfg, store)["test"]
    model = initial_model(cfg, image_size=store.image_size[0]).to(device)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    velocity: dict[str, torch.Tensor] = {}
    sampler = torch.Generator().manual_seed(cfg.seed)
    per_round = max(1, round(cfg.fraction_train * cfg.num_clients))
    grads, points = 0, []
    for rnd in range(1, cfg.num_server_rounds + 1):
        chosen = sorted(torch.randperm(cfg.num_clients, generator=sampler)[:per_round].tolist())
        replies = [local_round(cfg, state=state, partition_id=pid, server_round=rnd, device=device) for pid in chosen]
        total = sum(st.num_examples for _, st in replies)
        mean = {k: sum(s[k].double() * (st.num_examples / total) for s, st in replies).to(state[k].dtype)
                for k in state}
        server_step(global_state=state, mean=mean, velocity=velocity,
                    server_lr=cfg.server_learning_rate or 1.0, momentum=cfg.server_momentum)
        grads += sum(st.samples_seen for _, st in replies)
        model.load_state_dict(state)
        res = engine.evaluate(model=model, data=test, batch_size=cfg.eval_batch_size, device=device)
        acc = classification_report(y_true=res.y_true, y_pred=res.y_pred)["accuracy"]
        points.append({"round": rnd, "accuracy": acc, "loss": res.loss, "sample_gradients": grads,
                       "wall_s": time.perf_counter() - t0})
        print(f"{label} round {rnd}: accuracy {acc:.4f}, loss {res.loss:.4f}, {grads:,} sample gradients, "
              f"{points[-1]['wall_s']:.0f}s", flush=True)
    return {"variant": label, "final_accuracy": points[-1]["accuracy"],
            "best_accuracy": max(p["accuracy"] for p in points), "sample_gradients": grads,
            "wall_s": time.perf_counter() - t0, "curve": points, "settings": None}


def write_table(name: str, rows: list[dict[str, Any]], *, notes: str, args: dict[str, Any]) -> None:
    for row in rows:
        row["by_round"] = " ".join(f"{p['accuracy']:.3f}" for p in row["curve"])
    table = markdown_table(rows, [("variant", "variant", ""), ("accuracy by round", "by_round", ""),
                                  ("final", "final_accuracy", ".4f"), ("best", "best_accuracy", ".4f"),
                                  ("sample gradients", "sample_gradients", ",d"), ("wall (s)", "wall_s", ".0f")])
    print(table)
    write_results(name, table=table, notes=notes, results={"args": args, "rows": rows})


def merge(name: str, paths: list[str]) -> None:
    """One table from earlier results files of this script (each row keeps its own command)."""
    import json

    rows, commands = [], []
    for path in paths:
        saved = json.loads(Path(path).read_text())
        commands.append(f"`{saved['command']}` (commit {saved['commit'][:10]}, {saved['date']})")
        rows += saved["results"]["rows"]
    notes = ("In-process FedAvg rounds (no Flower), PrivateTest accuracy after every round. Variants: "
             + "; ".join(f"{r['variant']}: {r['settings']}" for r in rows) + ". Merged from: " + "; ".join(commands))
    write_table(name, rows, notes=notes, args={"merged": paths})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data")
    ap.add_argument("--name", default="convergence_ablation")
    ap.add_argument("--variant", action="append", default=[], help="label[:key=value,...]")
    ap.add_argument("--merge", nargs="+", help="results JSON files of earlier runs of this script: one table")
    ap.add_argument("--set", default="", help="key=value,... for every variant")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=float, default=1.0)
    args = ap.parse_args()
    if args.merge:
        merge(args.name, args.merge)
        return
    if not (args.data and args.variant):
        ap.error("--data and at least one --variant are needed (or --merge FILES)")
    engine.configure_threads(args.threads)
    rows = []
    for spec in args.variant:
        label, _, text = spec.partition(":")
        sets = {"model": "cnn_rnn", "num-clients": args.clients, "num-server-rounds": args.rounds, "local-epochs": 1,
                "server-momentum": 0.0, **parse_pairs([x for x in args.set.split(",") if x]),
                **parse_pairs([x for x in text.split(",") if x], flag="--variant"), "data-path": args.data}
        cfg = RunConfig.from_flat({**sets, "num-cpus": args.threads})  # local_round sets torch's threads from it
        row = run_variant(cfg, label=label)
        row["settings"] = {k: v for k, v in sets.items() if k != "data-path"}
        rows.append(row)
    notes = ("In-process FedAvg rounds (no Flower), PrivateTest accuracy after every round. Variants: "
             + "; ".join(f"{r['variant']}: {r['settings']}" for r in rows)
             + f". {args.threads:g} torch thread(s); wall includes data load, pre-training and evaluation.")
    write_table(args.name, rows, notes=notes, args=vars(args))


if __name__ == "__main__":
    main()
