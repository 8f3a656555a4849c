"""Ablation of the DP-SGD recipe on FER2013 at a fixed privacy budget (issue: a private model that
learns). Each variant is a centralized run (`fedfer simulate` with one client: FedAvg over one
client is plain training, with the same code path), dp=sample, target-epsilon 8, delta 1e-5, and
reports PrivateTest accuracy and macro-F1 from the run's summary.json.

    python benchmarks/dp_ablation.py --data ../shared/data/fer2013 [--epochs 6]
        [--variants plain,scatter,...,tuned,tuned-pixels,...,tuned-federated] [--tuned-epochs 15]

``plain`` is the naive recipe of the issue (AdamW 2e-3, Poisson batch 256, clip 1.0, ReLU, pixels);
``normalized-sgd`` ... ``multiplicity`` each add ONE element of the tuned recipe to it (see
fer_models/config/recipe.py); ``tuned`` is the recipe dp=sample uses by default (dp-recipe=tuned: all
elements but EMA, multiplicity, momentum-carry and cosine); ``tuned-*`` each take ONE element out of
it again, ``tuned+*`` add one it leaves off. Every variant spends the same
epsilon over its epochs; the noise multiplier is computed per variant for its batch and steps.
Finished variants are kept in OUT/<variant>/summary.json and not re-run (use --overwrite).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import markdown_table, run_cell, write_results  # noqa: E402
from fer_models.config.recipe import TUNED  # noqa: E402

COMMON = {"num-clients": 1, "dp": "sample", "target-epsilon": 8.0, "target-delta": 1e-5, "model": "cnn",
          "num-cpus": 2, "local-epochs": 1, "fraction-evaluate": 0.0}
PLAIN = {"dp-recipe": "none", "optimizer": "adamw", "learning-rate": 2e-3, "batch-size": 256,
         "max-grad-norm": 1.0, "activation": "relu", "ema-decay": 0.0}
#: The tuned recipe written out as run-config keys, for the "tuned minus one element" rows.
TUNED_KEYS = {"dp-recipe": "none", "frontend": TUNED.frontend, "activation": TUNED.activation,
              "pretrain-epochs": TUNED.pretrain_epochs, "optimizer": TUNED.optimizer,
              "learning-rate": TUNED.learning_rate, "momentum": TUNED.momentum, "weight-decay": TUNED.weight_decay,
              "optimizer-state": TUNED.optimizer_state, "lr-schedule": TUNED.lr_schedule,
              "max-grad-norm": TUNED.max_grad_norm, "ema-decay": TUNED.ema_decay, "batch-size": TUNED.max_batch,
              "physical-batch-size": TUNED.physical_batch}
VARIANTS: dict[str, dict] = {
    "plain": PLAIN,
    # plain + one element
    "normalized-sgd": {**PLAIN, "optimizer": "sgd", "momentum": TUNED.momentum, "max-grad-norm": TUNED.max_grad_norm,
                       "learning-rate": TUNED.learning_rate, "batch-size": TUNED.max_batch,
                       "physical-batch-size": TUNED.physical_batch},
    "tanh": {**PLAIN, "activation": "tanh"},
    "pretrain": {**PLAIN, "pretrain-epochs": TUNED.pretrain_epochs},
    "scatter": {**PLAIN, "frontend": "scatter"},
    "ema": {**PLAIN, "ema-decay": 0.99},
    "multiplicity": {**PLAIN, "augment": "standard", "augment-multiplicity": 2},
    "tuned": {"dp-recipe": "tuned"},
    "tuned-seed1": {"dp-recipe": "tuned", "seed": 1},  # another seed: how far runs vary by chance alone
    # tuned minus one element, or plus one it leaves off
    "tuned-pixels": {**TUNED_KEYS, "frontend": "pixels"},
    "tuned-no-pretrain": {**TUNED_KEYS, "pretrain-epochs": 0},
    "tuned+momentum-carry": {**TUNED_KEYS, "optimizer-state": "client"},
    "tuned+cosine": {**TUNED_KEYS, "lr-schedule": "cosine"},
    # the same recipe federated: 10 clients, Dirichlet 0.5 label skew, epsilon 8 per client, every
    # client training every round (rounds x 1 local epoch = the same sample-gradients as centralized)
    "tuned-federated": {"dp-recipe": "tuned", "num-clients": 10, "partition": "dirichlet", "dirichlet-alpha": 0.5,
                        "fraction-train": 1.0},
}
COLUMNS = [("variant", "variant", ""), ("epochs", "epochs", ""), ("PrivateTest accuracy", "accuracy", ".4f"),
           ("macro-F1", "macro_f1", ".4f"), ("epsilon", "epsilon", ".2f"), ("wall (s)", "wall_s", ".0f")]


def run_variant(name: str, *, data: str, epochs: int, out: Path, overwrite: bool, num_cpus: float) -> dict:
    settings = {**COMMON, **VARIANTS[name], "num-server-rounds": epochs, "num-cpus": num_cpus}
    return {**run_cell(name, settings, folder=out / f"{name}-{epochs}ep", data=data, overwrite=overwrite),
            "epochs": epochs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=6, help="epochs of every ablation variant")
    ap.add_argument("--tuned-epochs", type=int, default=0, help="also run the tuned recipe this long (0 = no)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "dp-ablation")
    ap.add_argument("--overwrite", action="store_true", help="re-run variants that already have a summary")
    ap.add_argument("--num-cpus", type=float, default=2, help="CPU threads of each run")
    ap.add_argument("--results-name", default="dp_ablation",
                    help="results file name under benchmarks/results (a re-run of a few rows keeps the full table)")
    ap.add_argument("--note", default="", help="extra sentence for the results' notes (e.g. how reused runs were made)")
    args = ap.parse_args()
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    jobs = [(v, args.epochs) for v in args.variants.split(",")]
    if args.tuned_epochs:
        jobs.append(("tuned", args.tuned_epochs))
    rows = []
    for i, (name, epochs) in enumerate(jobs, start=1):
        print(f"[{i}/{len(jobs)}] {name}, {epochs} epochs", flush=True)
        rows.append(run_variant(name, data=args.data, epochs=epochs, out=args.out, overwrite=args.overwrite,
                                num_cpus=args.num_cpus))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "settings"}), flush=True)
    table = markdown_table(rows, COLUMNS)
    print(table)
    write_results(args.results_name, results=rows, table=table,
                  notes=f"Centralized (1 client, `fedfer simulate`), all 28,709 FER2013 Training images, "
                        f"epsilon 8, delta 1e-5, cnn, {args.num_cpus:g} CPU threads per run; accuracy on PrivateTest. `plain` is the "
                        "naive recipe; the rows up to `multiplicity` add one element of the tuned recipe to it; `tuned` is "
                        "what dp=sample uses by default; `tuned-*` rows take one element out of it, `tuned+*` rows add one. Settings per variant are in the JSON. Runs may overlap on "
                        "the cores (wall times are then upper bounds); finished variants are reused from --out." + (
                        f" {args.note}" if args.note else ""))


if __name__ == "__main__":
    main()
