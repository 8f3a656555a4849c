"""Time to accuracy: PrivateTest accuracy against wall-clock and against sample gradients.

Each setting is one real ``fedfer simulate`` run (subprocess, engine start-up included) with the
same training budget in sample gradients (``--epochs`` passes over the training set):

- ``centralized``: one client, ``--epochs`` rounds of one local epoch;
- ``iid`` / ``dirichlet`` (alpha 0.5): ``--clients`` clients; every setting in ``--fed-set`` (the
  federated recipe: strategy, local-steps, ...) applies to them, and the rounds are as many as the
  budget allows (``--rounds``: the federated round count; the local work is the recipe's);
- with ``--dp`` every setting also runs DP-SGD at per-client epsilon ``--epsilon`` (sample level).

Reported: accuracy after every round, at the wall time (seconds since the ``fedfer simulate``
process started) and the cumulative sample gradients (the clients' reported samples seen;
under DP the expected count, epochs x images, since DP clients send none); the time to reach each
``--thresholds`` accuracy; one plot per setting (``benchmarks/results/time_to_accuracy*.png``).

    python benchmarks/time_to_accuracy.py --data ../shared/data/fer2013 --epochs 3 --rounds 15 \\
        --fed-set local-steps=9 --fed-set strategy=fedavgm [--dp] [--settings centralized,iid,dirichlet]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, RESULTS, git_commit, markdown_table, parse_pairs, run_fedfer, write_results  # noqa: E402
from fer_models.federation.run_folder import METRICS_FILE  # noqa: E402

SETTINGS = {"centralized": {"num-clients": 1}, "iid": {"partition": "iid"},
            "dirichlet": {"partition": "dirichlet", "dirichlet-alpha": 0.5}}


def cell_settings(setting: str, args: argparse.Namespace) -> dict[str, Any]:
    """The ``--set`` values of one cell (the budget, the recipe, DP)."""
    sets: dict[str, Any] = {"model": args.model, "seed": 0, "num-cpus": args.num_cpus, **parse_pairs(args.set),
                            **SETTINGS[setting], "run-name": f"tta-{setting}"}
    if setting == "centralized":
        sets.update({"num-server-rounds": args.epochs, "local-epochs": 1})
    else:
        sets.update({"num-clients": args.clients, "num-server-rounds": args.rounds, "fraction-train": 1.0,
                     **parse_pairs(args.fed_set, flag="--fed-set")})
    if args.dp:
        sets.update({"dp": "sample", "target-epsilon": args.epsilon, "target-delta": 1e-5})
    return sets


def curve(run: dict[str, Any], *, expected_per_round: float) -> list[dict[str, float]]:
    """(round, wall s, cumulative sample gradients, accuracy) after every round of a finished run."""
    import json

    rows = [json.loads(line) for line in (Path(run["out"]) / METRICS_FILE).read_text().splitlines()]
    points, grads = [], 0.0
    for row, end in zip(rows, run["round_end_s"]):
        grads += float(row.get("samples_seen") or expected_per_round)
        points.append({"round": row["round"], "wall_s": end, "sample_gradients": grads, "accuracy": row["accuracy"]})
    return points


def first_reaching(points: list[dict[str, float]], threshold: float) -> dict[str, float] | None:
    return next((p for p in points if p["accuracy"] >= threshold), None)


def plot(points_by_cell: dict[str, list[dict[str, float]]], *, title: str, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    for ax, x, label in zip(fig.subplots(1, 2), ("wall_s", "sample_gradients"),
                            ("wall-clock (s, engine start-up included)", "sample gradients")):
        for cell, points in points_by_cell.items():
            ax.plot([0] + [p[x] for p in points], [None] + [p["accuracy"] for p in points], marker="o", label=cell)
        ax.set_xlabel(label)
        if x == "sample_gradients":
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:.0f}k"))
        ax.set_ylabel("PrivateTest accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="FER2013 folder (PrivateTest is reported)")
    ap.add_argument("--epochs", type=int, default=3, help="budget: passes over the training set (centralized rounds)")
    ap.add_argument("--rounds", type=int, default=3, help="federated rounds (their local work: --fed-set)")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--model", default="cnn_rnn")
    ap.add_argument("--num-cpus", type=float, default=2.0, help="CPUs per simulated client (2 = one at a time)")
    ap.add_argument("--settings", default="centralized,iid,dirichlet")
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE for every cell")
    ap.add_argument("--fed-set", action="append", default=[], help="KEY=VALUE for the federated cells (the recipe)")
    ap.add_argument("--dp", action="store_true", help="DP-SGD (sample level) at --epsilon in every cell")
    ap.add_argument("--epsilon", type=float, default=8.0)
    ap.add_argument("--thresholds", default="0.40,0.50,0.55")
    ap.add_argument("--train-images", type=int, default=28709,
                    help="training images (FER2013: 28,709): the expected sample gradients of DP rounds")
    ap.add_argument("--name", default="", help="results name (default time_to_accuracy[_dp])")
    ap.add_argument("--add", action="store_true", help="add these settings to the cells already in the results file")
    ap.add_argument("--add-from", default="", help="with --add: the results name whose other cells are kept "
                    "(default: --name), e.g. a centralized cell measured with the same --set")
    args = ap.parse_args()
    name = args.name or ("time_to_accuracy_dp" if args.dp else "time_to_accuracy")
    thresholds = [float(t) for t in args.thresholds.split(",")]
    cells, curves = [], {}
    if args.add:  # keep the cells of an earlier run of the same benchmark (its own command stays with each)
        import json

        earlier = json.loads((RESULTS / f"{args.add_from or name}.json").read_text())["results"]["cells"]
        cells = [c for c in earlier if c["setting"] not in args.settings.split(",")]
        curves = {c["setting"]: c["curve"] for c in cells if "curve" in c}
    for setting in args.settings.split(","):
        sets = cell_settings(setting, args)
        load_before = os.getloadavg()[0]
        run = run_fedfer(sets, out=REPO / "runs" / "bench" / name / setting, data=args.data)
        run["out"] = str(REPO / "runs" / "bench" / name / setting)
        warm = pretraining(Path(run["out"]) / "simulate.log")
        if "error" in run:
            print(f"{setting}: {run['error']}", file=sys.stderr)
            cells.append({"setting": setting, "error": run["error"], "command": run["command"]})
            continue
        rounds = int(sets["num-server-rounds"])
        points = curve(run, expected_per_round=args.epochs * args.train_images / rounds)
        curves[setting] = points
        row: dict[str, Any] = {"setting": setting, "rounds": rounds, "final_accuracy": points[-1]["accuracy"],
                               "best_accuracy": max(p["accuracy"] for p in points),
                               "sample_gradients": points[-1]["sample_gradients"], "wall_s": run["wall_s"],
                               "command": run["command"], "curve": points,
                               "load": f"{load_before:.1f} / {os.getloadavg()[0]:.1f}",
                               "pretraining": warm, "measured": f"commit {git_commit()[:10]}, {time.strftime('%Y-%m-%d %H:%M')}"}
        for t in thresholds:
            hit = first_reaching(points, t)
            row[f"t{t:.2f}_s"] = hit and hit["wall_s"]
            row[f"t{t:.2f}_grads"] = hit and hit["sample_gradients"]
        cells.append(row)
        print(f"{setting}: final {row['final_accuracy']:.4f} after {rounds} rounds, wall {run['wall_s']:.0f}s",
              flush=True)
        report(name, args=args, cells=cells, curves=curves, thresholds=thresholds)


def pretraining(log: Path) -> str:
    """How the cell's warm start was made, from its log: trained (with its seconds), loaded from the disk
    cache (fer_models/federation/pretrain.py), or none."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    if "public pre-training: loaded from the cache" in text:
        return "from the cache"
    hit = re.search(r"public pre-training: \d+ epochs on \d+ synthetic faces \(([\d.]+) s\)", text)
    return f"trained, {hit.group(1)} s" if hit else "none"


def report(name: str, *, args: argparse.Namespace, cells: list[dict[str, Any]], curves: dict[str, list],
           thresholds: list[float]) -> None:
    """Table, notes and plot of the cells measured so far (rewritten after every cell)."""
    png = RESULTS / f"{name}.png"
    plot(curves, title=f"{args.model}, FER2013 PrivateTest{', DP eps=' + str(args.epsilon) if args.dp else ''}",
         path=png)
    columns = [("setting", "setting", ""), ("rounds", "rounds", "d"), ("final accuracy", "final_accuracy", ".4f"),
               ("best accuracy", "best_accuracy", ".4f"), ("sample gradients", "sample_gradients", ",.0f"),
               ("wall (s)", "wall_s", ".0f"), ("warm start", "pretraining", ""), ("load 1 min, start / end", "load", "")]
    for t in thresholds:
        columns += [(f"to {t:.0%}: s", f"t{t:.2f}_s", ".0f"), (f"to {t:.0%}: grads", f"t{t:.2f}_grads", ",.0f")]
    table = markdown_table(cells, columns)
    print(table)
    notes = (f"Budget: {args.epochs} epoch(s) of sample gradients over the training set; federated cells: "
             f"{args.clients} clients, {args.rounds} rounds, recipe {parse_pairs(args.fed_set, flag='--fed-set') or 'defaults'}; every "
             f"cell {parse_pairs(args.set) or 'no extra settings'}"
             f"{f'; DP-SGD sample level, per-client epsilon {args.epsilon} (delta 1e-5, owner: each client)' if args.dp else ''}. "
             "Wall = seconds since the `fedfer simulate` process started (imports, data, Ray start-up and the "
             "round-0 evaluation included; the server's public pre-training too when pretrain-epochs > 0, unless it "
             "came from the disk cache: column warm start); a "
             "threshold not reached within the budget is empty. The machine's load average is given: other work "
             "running at the same time slows the wall-clock figures, never the sample-gradient ones. "
             f"Plot: `benchmarks/results/{png.name}`. Each cell was measured "
             + "; ".join(f"{c['setting']}: {c.get('measured', 'in an earlier run (before cells carried a date)')}"
                         for c in cells)
             + (f" (--add: cells not named in --settings were kept from {args.add_from or name}.json)" if args.add else "")
             + ". Commands: "
             + "; ".join(f"`{c['command']}`" for c in cells))
    write_results(name, table=table, notes=notes, results={"args": vars(args), "cells": cells})



if __name__ == "__main__":
    main()
