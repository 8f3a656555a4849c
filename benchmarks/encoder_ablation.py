"""Ablation of the frame encoder and the centralized recipe on FER2013 (issue 32: a stronger hybrid CNN-RNN).

Each cell is a centralized, non-private run of the product's model (`fedfer simulate` with one client and one
local epoch per round: FedAvg over one client is plain training, on the same code path), trained on all 28,709
Training images and scored on PrivateTest after every epoch (summary.json). The rows change ONE thing at a time:

    small          today's encoder (one conv per stage, 16-32-64-128), no augmentation
    small+aug      + augmentation (flip, shift as pad-and-crop, rotation, brightness/contrast, random erasing)
    vgg+aug        the encoder: two convs per stage, 32-64-128-256 (1.2M parameters)
    resnet+aug     the encoder: residual blocks, 32-64-128-256 (1.3M)
    resnet+aug+ls  + label smoothing 0.1
    resnet+aug+ls+cos  + cosine learning rate over the epochs
    resnet-wide+aug+ls+cos  the encoder: residual blocks, 64-128-256-512 (5.0M)
    small+flat     the frame readout: the last 3x3 maps flattened instead of averaged (frame-readout=flatten)
    small+flat+aug, resnet+aug+flat  the same readout with augmentation, and with the resnet encoder

    python benchmarks/encoder_ablation.py --data ../shared/data/fer2013 [--epochs 20] [--variants small,vgg+aug]

Finished cells are kept in OUT/<variant>-<epochs>ep/ and reused; an interrupted cell (stopped by Ctrl-C or the
end of a session) resumes after its last finished epoch on the next call. Results: benchmarks/results/
<results-name>.md and .json (command, commit, machine, date), with the learning curve of every cell; the rows of
variants this call does not run are kept from that JSON (each with the commit and date it was measured at).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import markdown_table, recorded_results, run_cell, write_results  # noqa: E402

COMMON = {"model": "cnn_rnn", "num-clients": 1, "local-epochs": 1, "dp": "none", "fraction-evaluate": 0.0,
          "batch-size": 64}
AUG = {"augment": "standard"}
LS = {**AUG, "label-smoothing": 0.1}
COS = {**LS, "lr-schedule": "cosine"}
FLAT = {"frame-readout": "flatten"}
VARIANTS: dict[str, dict] = {
    "small": {"encoder": "small"},
    "small+aug": {"encoder": "small", **AUG},
    "vgg+aug": {"encoder": "vgg", **AUG},
    "resnet+aug": {"encoder": "resnet", **AUG},
    "resnet+aug+ls": {"encoder": "resnet", **LS},
    "resnet+aug+ls+cos": {"encoder": "resnet", **COS},
    "resnet-wide+aug+ls+cos": {"encoder": "resnet-wide", **COS},
    "small+flat": {"encoder": "small", **FLAT},
    "small+flat+aug": {"encoder": "small", **FLAT, **AUG},
    "resnet+aug+flat": {"encoder": "resnet", **AUG, **FLAT},
}
COLUMNS = [("variant", "variant", ""), ("encoder", "encoder", ""), ("parameters", "parameters", ","),
           ("epochs", "epochs", ""), ("PrivateTest accuracy", "accuracy", ".4f"), ("best epoch", "best", ".4f"),
           ("macro-F1", "macro_f1", ".4f"), ("wall (s)", "wall_s", ".0f"), ("s / epoch", "epoch_s", ".0f")]


def parameters(settings: dict) -> int:
    from fer_models.models.registry import param_count
    from fer_models.models.stages import ENCODERS

    return param_count(settings["model"], frame_readout=settings.get("frame-readout", "auto"),
                       **ENCODERS[settings["encoder"]])


def in_order(rows: list[dict]) -> list[dict]:
    """Rows in the order of ``VARIANTS``."""
    return sorted(rows, key=lambda r: list(VARIANTS).index(r["variant"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=20, help="epochs of every cell")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "encoder-ablation")
    ap.add_argument("--overwrite", action="store_true", help="re-run cells that already have a summary")
    ap.add_argument("--num-cpus", type=float, default=2, help="CPU threads of each run")
    ap.add_argument("--results-name", default="encoder_ablation", help="results file name under benchmarks/results")
    args = ap.parse_args()
    names = args.variants.split(",")
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    kept = [r for r in recorded_results(args.results_name) or [] if r.get("variant") in VARIANTS
            and r["variant"] not in names]
    rows = []
    for i, name in enumerate(names, start=1):
        settings = {**COMMON, **VARIANTS[name], "num-server-rounds": args.epochs, "num-cpus": args.num_cpus}
        print(f"[{i}/{len(names)}] {name}, {args.epochs} epochs", flush=True)
        row = run_cell(name, settings, folder=args.out / f"{name}-{args.epochs}ep", data=args.data,
                       overwrite=args.overwrite)
        row.update(epochs=args.epochs, encoder=settings["encoder"], parameters=parameters(settings))
        if "accuracy_by_round" in row:
            row["best"] = max(row["accuracy_by_round"])
            row["epoch_s"] = row["wall_s"] / args.epochs if row.get("wall_s") else None
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "settings"}), flush=True)
        rows_now = in_order(kept + rows)
        table = markdown_table(rows_now, COLUMNS)  # written after every cell: an interrupted ablation keeps its rows
        write_results(args.results_name, results=rows_now, table=table, notes=(
            f"Centralized (1 client, `fedfer simulate`, one local epoch per round), non-private, model cnn_rnn "
            f"(T = 1), all 28,709 FER2013 Training images, accuracy on PrivateTest after the last epoch (best epoch: "
            f"the highest PrivateTest accuracy over the epochs, for the learning curve only: it is chosen on the test "
            f"set), AdamW lr 3e-3, weight decay 1e-4, batch 64, {args.num_cpus:g} CPU threads; wall includes Ray "
            f"start-up and the per-epoch evaluation. Settings per cell, the learning curves and the commit and date "
            f"each cell was measured at ('measured') are in the JSON; "
            f"finished cells are reused from --out."))
    print(markdown_table(in_order(kept + rows), COLUMNS))


if __name__ == "__main__":
    main()
