"""Wall time of one non-private FER2013 training epoch per model (28,709 images, T = 1) on this CPU.

    python benchmarks/epoch_time.py --data ../shared/data/fer2013 [--threads 2] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import markdown_table, write_results  # noqa: E402
from fer_models.data import load_dataset  # noqa: E402
from fer_models.data.samples import static_clips  # noqa: E402
from fer_models.models import create_model, list_models  # noqa: E402
from fer_models.training import engine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--models", nargs="*", default=list_models())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    store = load_dataset(data_path=args.data)
    data = static_clips(store, store.indices("train"), clip_length=1)
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = create_model(name)
        opt = engine.make_optimizer(model, name="adamw", learning_rate=1e-3, weight_decay=0.0)
        loader = engine.index_loader(len(data), batch_size=args.batch_size, seed=0)
        t = time.perf_counter()
        stats = engine.train(model=model, data=data, optimizer=opt, loader=loader, epochs=1,
                             device=torch.device("cpu"))
        wall = time.perf_counter() - t
        rows.append({"model": name, "params": sum(p.numel() for p in model.parameters()), "epoch_s": wall,
                     "images_per_s": len(data) / wall, "train_accuracy": stats.accuracy})
        print(rows[-1], flush=True)
    table = markdown_table(rows, [("model", "model", ""), ("params", "params", ","),
                                  ("FER2013 epoch (s)", "epoch_s", ".1f"), ("images/s", "images_per_s", ".0f"),
                                  ("train acc after 1 epoch", "train_accuracy", ".3f")])
    print(table)
    write_results("epoch_time", results=rows, table=table,
                  notes=f"one epoch over the 28,709 Training images, batch {args.batch_size}, AdamW, "
                        f"{args.threads} torch threads, no augmentation, non-private.")


if __name__ == "__main__":
    main()
