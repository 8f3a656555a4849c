"""Ablation of the DP-SGD recipe on FER2013 at a fixed privacy budget (issue: a private model that
learns). Each variant is a centralized run (`fedfer simulate` with one client: FedAvg over one
client is plain training, with the same code path), dp=sample, target-epsilon 8, delta 1e-5, and
reports PrivateTest accuracy and macro-F1 from the run's summary.json.

    python benchmarks/dp_ablation.py --data ../shared/data/fer2013 [--epochs 6] [--max-train 0]
        [--variants plain,large-batch,multiplicity,ema,all]

Every variant spends the same epsilon over the same number of epochs; the noise multiplier is
computed per variant for its own batch size and steps.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import write_results  # noqa: E402

BASE = {"num-clients": 1, "dp": "sample", "target-epsilon": 8.0, "target-delta": 1e-5, "model": "cnn",
        "optimizer": "adamw", "learning-rate": 2e-3, "batch-size": 256, "max-grad-norm": 1.0,
        "num-cpus": 2}
VARIANTS: dict[str, dict] = {
    "plain": {},
    "large-batch": {"batch-size": 1024, "physical-batch-size": 256, "learning-rate": 4e-3},
    "multiplicity": {"augment": "standard", "augment-multiplicity": 4},
    "ema": {"ema-decay": 0.99},
    "all": {"batch-size": 1024, "physical-batch-size": 256, "learning-rate": 4e-3, "augment": "standard",
            "augment-multiplicity": 4, "ema-decay": 0.99},
}


def run_variant(name: str, *, data: str, epochs: int, max_train: int, out: Path) -> dict:
    settings = {**BASE, **VARIANTS[name], "num-server-rounds": epochs, "local-epochs": 1,
                "max-train-samples": max_train}
    cmd = [sys.executable, "-m", "simulation.cli", "simulate", "--data", data, "--out", str(out / name),
           "--overwrite", *[a for k, v in settings.items() for a in ("--set", f"{k}={v}")]]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        return {"variant": name, "error": proc.stderr[-800:], "settings": settings}
    s = json.loads((out / name / "summary.json").read_text())
    return {"variant": name, "settings": settings, "accuracy": s["final"]["accuracy"],
            "macro_f1": s["final"]["macro_f1"], "epsilon": s["epsilon"]["final_max"], "wall_s": wall,
            "accuracy_by_round": [r["accuracy"] for r in s["rounds"]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--max-train", type=int, default=0)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "dp-ablation")
    args = ap.parse_args()
    rows = []
    for name in args.variants.split(","):
        rows.append(run_variant(name, data=args.data, epochs=args.epochs, max_train=args.max_train, out=args.out))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "settings"}), flush=True)
    lines = ["| variant | PrivateTest accuracy | macro-F1 | epsilon | wall (s) |", "|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | failed | | | |")
        else:
            lines.append(f"| {r['variant']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['epsilon']:.2f} | "
                         f"{r['wall_s']:.0f} |")
    table = "\n".join(lines)
    print(table)
    write_results("dp_ablation", results=rows, table=table,
                  notes=f"centralized (1 client), {args.epochs} epochs, max-train-samples={args.max_train} "
                        f"(0 = all 28,709), epsilon 8, delta 1e-5; settings per variant in the JSON.")


if __name__ == "__main__":
    main()
