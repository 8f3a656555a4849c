"""What each client holds: a table on the console, ``partition.json`` and a clients x classes heatmap."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fer_models.common.labels import EMOTIONS, NUM_CLASSES
from fer_models.config import RunConfig
from fer_models.data import FaceStore
from fer_models.data.partition import label_histogram, mean_label_entropy
from fer_models.federation.run_folder import PARTITION_FIGURE, PARTITION_FILE, write_json

logger = logging.getLogger(__name__)


def describe_partition(*, cfg: RunConfig, store: FaceStore, parts: Sequence[np.ndarray]) -> dict[str, Any]:
    """Per-client size, group and label histogram, plus the mean label entropy (bits) as a skew measure."""
    hist = label_histogram(store.labels.numpy(), list(parts), NUM_CLASSES)  # parts index the store
    groups = store.meta.get("group")
    clients = []
    for cid, (part, row) in enumerate(zip(parts, hist)):
        entry: dict[str, Any] = {"client": cid, "size": int(len(part)),
                                 "labels": {name: int(c) for name, c in zip(EMOTIONS, row)}}
        if groups is not None and len(part):
            names = sorted(set(groups[part].tolist()))
            entry["group"] = names[0] if len(names) == 1 else "+".join(names)
        clients.append(entry)
    return {"partition": cfg.partition, "num_clients": len(parts), "seed": cfg.seed,
            "dirichlet_alpha": cfg.dirichlet_alpha if cfg.partition == "dirichlet" else None,
            "mean_label_entropy_bits": mean_label_entropy(hist), "max_entropy_bits": float(np.log2(NUM_CLASSES)),
            "clients": clients, "histogram": hist.tolist()}


def format_table(report: dict[str, Any], *, max_rows: int = 60) -> str:
    """A fixed-width table: client, group, size and one column per emotion."""
    has_group = any("group" in c for c in report["clients"])
    head = f"{'client':>6} " + (f"{'group':<12} " if has_group else "") + f"{'size':>7} " + " ".join(
        f"{e[:7]:>7}" for e in EMOTIONS)
    lines = [head, "-" * len(head)]
    for c in report["clients"][:max_rows]:
        lines.append(f"{c['client']:>6} " + (f"{c.get('group', ''):<12} " if has_group else "") + f"{c['size']:>7} "
                     + " ".join(f"{c['labels'][e]:>7}" for e in EMOTIONS))
    if len(report["clients"]) > max_rows:
        lines.append(f"... {len(report['clients']) - max_rows} more clients in partition.json")
    lines.append(f"partition={report['partition']}  mean label entropy {report['mean_label_entropy_bits']:.3f} bits "
                 f"(IID-like ~{report['max_entropy_bits']:.2f} for balanced labels; lower = more label skew)")
    return "\n".join(lines)


def write_partition_files(*, report: dict[str, Any], run_dir: Path) -> list[Path]:
    """``partition.json`` and ``partition.png`` in the run folder."""
    from simulation.reports.report import plot_partition_heatmap

    run_dir.mkdir(parents=True, exist_ok=True)
    json_path = run_dir / PARTITION_FILE
    write_json(json_path, report)
    groups = [c.get("group", "") for c in report["clients"]] if any("group" in c for c in report["clients"]) else None
    png = plot_partition_heatmap(histogram=np.array(report["histogram"]), groups=groups, path=run_dir / PARTITION_FIGURE)
    return [json_path, png]
