"""The bench's table: per-cell figures read from the run folders, a markdown table and its notes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from fer_models.config import local_work_key
from fer_models.federation.run_folder import PARTITION_FILE, SUMMARY_FILE
from simulation.bench.bench_grid import local_work
from simulation.bench.bench_runner import read_json_object

logger = logging.getLogger(__name__)

COLUMNS = ("strategy", "setting", "accuracy", "macro precision", "macro recall", "macro-F1", "epsilon",
           "sample gradients", "wall (s)")
#: How the sample-gradient count was obtained, for the notes.
RECORDED, COMPUTED = "recorded", "computed"


def sample_gradients(*, summary: Mapping[str, Any], partition: Mapping[str, Any] | None) -> tuple[int | None, str]:
    """Sample gradients a run computed: clients' ``samples_seen`` when the server recorded them per
    round, else (rounds x local work x fraction-train) x training images from ``partition.json`` (local work:
    local-epoch-fraction of an epoch, else local-epochs; the planned count)."""
    rounds = summary.get("rounds", [])
    if rounds and all("samples_seen" in r for r in rounds):
        return int(sum(int(r["samples_seen"]) for r in rounds)), RECORDED
    if not partition:
        return None, COMPUTED
    cfg = summary["config"]
    train = sum(int(c["size"]) for c in partition["clients"])
    key = local_work_key(cfg)
    if key == "local-steps":  # steps x batch per client: not planned by the bench, and recorded without DP
        return None, COMPUTED
    local = float(cfg[key])
    passes = round(len(rounds) * local * float(cfg["fraction-train"]), 3)  # to 3 decimals, as the grid plans it
    return int(round(passes * train)), COMPUTED


def _local_work(cfg: Mapping[str, Any]) -> str:
    key = local_work_key(cfg)
    return f"{key} {float(cfg[key]):g}"


def cell_figures(*, summary: Mapping[str, Any], partition: Mapping[str, Any] | None = None,
                 wall_s: float | None = None) -> dict[str, Any]:
    """The table's figures of one finished run (``summary.json`` and ``partition.json``)."""
    final = summary["final"]
    samples, source = sample_gradients(summary=summary, partition=partition)
    return {"accuracy": final["accuracy"], "macro_precision": final.get("macro_precision"),
            "macro_recall": final.get("macro_recall"), "macro_f1": final.get("macro_f1"),
            "epsilon": summary["epsilon"]["final_max"] if "epsilon" in summary else None,
            "delta": summary["epsilon"].get("delta") if "epsilon" in summary else None,
            "sample_gradients": samples, "sample_gradients_source": source,
            "train_images": sum(int(c["size"]) for c in partition["clients"]) if partition else None,
            "rounds": len(summary.get("rounds", [])), "split": final.get("split"), "n": final.get("n"),
            "clients": int(summary["config"].get("num-clients", 0)), "local_work": _local_work(summary["config"]),
            "dataset": summary.get("dataset", {}).get("name"),
            "wall_s": wall_s if wall_s is not None else summary.get("seconds"),
            "wall_source": "bench" if wall_s is not None else "summary (excludes engine start-up)"}


def collect(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each bench record with its run's figures added (when its run folder holds a finished run)."""
    out = []
    for rec in records:
        row = dict(rec)
        run_dir = Path(rec["run_dir"])
        summary = read_json_object(run_dir / SUMMARY_FILE)
        if rec.get("status") in ("done", "skipped") and summary and "final" in summary:
            row.update(cell_figures(summary=summary, partition=read_json_object(run_dir / PARTITION_FILE),
                                    wall_s=rec.get("wall_s")))
        out.append(row)
    return out


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per cell; cells without figures say why (failed / not run)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        if "accuracy" not in r:
            status = {"failed": "FAILED", "not run": "not run"}.get(r.get("status", "not run"), "no results")
            cells = [r["strategy"], r["setting"], status] + ["-"] * (len(COLUMNS) - 3)
        else:
            eps = "-" if r.get("epsilon") is None else f"{r['epsilon']:.2f}"
            grads = "?" if r.get("sample_gradients") is None else f"{r['sample_gradients']:,}"
            wall = "?" if r.get("wall_s") is None else f"{r['wall_s']:.0f}" + ("*" if r.get("resumed") else "")
            cells = [r["strategy"], r["setting"], _f(r["accuracy"]), _f(r.get("macro_precision")),
                     _f(r.get("macro_recall")), _f(r.get("macro_f1")), eps, grads, wall]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(*, profile: str, budget: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], cores: int | None,
          total_wall_s: float, grid: str) -> str:
    """The table's notes: the profile's budget (epochs, clip length, cores, wall) and how figures were made."""
    epochs = int(budget["epochs"])
    local, key = local_work(budget, where=f"profile {profile}")
    part = key == "local-epoch-fraction"
    fraction = float(budget.get("federated-fraction", 1.0))
    have = [r for r in rows if "accuracy" in r]
    train = next((r["train_images"] for r in have if r.get("train_images")), None)
    split = next((f"{r['dataset']} {_split_name(r)} (n = {r['n']:,})" for r in have if r.get("n")), "the test split")
    sources = {r.get("sample_gradients_source") for r in have}
    how = ("recorded from the clients' samples-seen" if sources == {RECORDED}
           else "computed as epochs x training images: the server does not record the clients' samples-seen"
           if sources == {COMPUTED} else "recorded from the clients' samples-seen where they send them (without DP), "
           "else computed as epochs x training images")
    limit = budget.get("budget-minutes")
    wall = f"total wall {total_wall_s / 60:.1f} min" + (
        f" (budget: under {limit} min, {'met' if total_wall_s <= float(limit) * 60 else 'EXCEEDED'})" if limit else "")
    parts = [
        f"Profile `{profile}` of `{grid}`: every cell computes {epochs} epochs of sample gradients"
        + (f" over the {train:,} training images ({epochs * train:,} sample gradients; {how})." if train else f" ({how})."),
        f"Centralized = 1 client, {epochs} rounds x 1 local epoch; federated = "
        + ("all clients train every round (fraction-train 1.0)" if fraction == 1.0
           else f"a fraction {fraction:g} of the clients, sampled anew, trains each round (fraction-train {fraction:g})")
        + f", {round(epochs / (local * fraction))} rounds x "
        + (f"local-epoch-fraction {local:g} of each client's own epoch (whole batches: a client's steps are rounded, "
           f"so its count may differ slightly)" if part else f"{local:g} local epoch(s)")
        + ". Under DP (Poisson sampling) the count is the expected one.",
        f"Clip length {budget.get('clip-length', 1)}"
        + (f" ({budget.get('clip-source')} clips)" if int(budget.get("clip-length", 1)) > 1 else "")
        + f", num-cpus {budget.get('num-cpus', 1)} and num-gpus {budget.get('num-gpus', 0)} per client, "
        f"{cores if cores else '?'} cores on the machine; max-train-samples {budget.get('max-train-samples', 0)} (0 = all).",
        f"Metrics on {split}: accuracy and macro precision / recall / F1 of the final global model; epsilon = "
        f"the largest per-client epsilon spent (sample-level DP-SGD; image-level, delta = the run's target-delta, each client's own). Wall = the cell's whole `fedfer simulate` "
        f"(engine start-up included); {wall}, summed over the {len(have)} cells with figures.",
    ]
    planned = f"{key} {local:g}"  # as _local_work writes a cell's
    own: dict[str, list[str]] = {}
    for r in have:  # federated cells whose strategy or setting states its own local work (the same budget)
        if r.get("clients", 0) > 1 and r.get("local_work", planned) != planned:
            own.setdefault(f"{r['rounds']} rounds x {r['local_work']}", []).append(r["cell"])
    parts += [f"Federated cells with their own local work (a recipe's choice in the grid; the same epochs of sample "
              f"gradients): {', '.join(cells)}: {work}." for work, cells in own.items()]
    if any(r.get("resumed") for r in have):
        parts.append("* resumed after an interruption: the wall time covers the resumed rounds only.")
    failed = [r for r in rows if r.get("status") == "failed"]
    parts += [f"FAILED {r['cell']}: {r.get('error', '?')} (log: {r.get('log')})" for r in failed]
    missing = [r["cell"] for r in rows if "accuracy" not in r and r.get("status") != "failed"]
    if missing:
        parts.append(f"Not run: {', '.join(missing)}.")
    return "\n\n".join(parts)


def _split_name(row: Mapping[str, Any]) -> str:
    if row.get("dataset", "").lower().startswith("fer2013"):
        return {"test": "PrivateTest", "val": "PublicTest"}.get(row.get("split"), row.get("split"))
    return f"{row.get('split')} split"


def _f(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4f}"


