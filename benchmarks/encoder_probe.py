"""Short probes of the product's models on FER2013: which part of a wider encoder keeps it from learning (issue 32).

`encoder_ablation.py` measures whole runs (10 epochs of a 1.7M-parameter resnet: ~53 minutes on 2 cores). Its
`resnet+aug+flat` row stayed near the class prior (train loss 1.82 -> 1.77, PrivateTest 0.29 after 10 epochs).
A probe here takes minutes: the product's model (`create_model` with the options a run sets), plain PyTorch,
AdamW lr 3e-3, weight decay 1e-4, batch 64, no augmentation, the first STEPS batches of a fixed shuffle of the
28,709 Training images, accuracy on a fixed 600 of PrivateTest every 100 steps. Each row changes one thing:

    cnn_rnn/small        today's encoder (16-32-64-128, one conv per stage), frame-readout flatten
    cnn_rnn/wide         the same stages, 32-64-128-256
    cnn/wide             the same encoder under `cnn` (a Linear head instead of the GRU)
    cnn_rnn/wide/g32     GroupNorm with 32 groups instead of 8 (1 channel per group in the first stage)
    cnn/wide/g32         both
    cnn_rnn/resnet, cnn/resnet, cnn_rnn/resnet/g32, cnn/resnet/g32   the same with residual stages

    python benchmarks/encoder_probe.py --data ../shared/data/fer2013 [--steps 400] [--variants cnn/wide,cnn_rnn/wide]

Results: benchmarks/results/encoder_probe.{md,json}; rows already measured at the same STEPS are reused (the
first 600 test images and the batch order are fixed by the seed, so a re-run gives the same curve on this
machine up to thread scheduling). One probe is a screen, not a result: learning curves of 400 steps are noisy
(seen here: +-0.04 between options that should not matter); what a probe suggests is then measured by
encoder_ablation.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import markdown_table, recorded_results, write_results  # noqa: E402

WIDE = {"stage": "single", "channels": (32, 64, 128, 256)}
RESNET = {"stage": "residual", "channels": (32, 64, 128, 256)}
VARIANTS: dict[str, tuple[str, dict]] = {
    "cnn_rnn/small": ("cnn_rnn", {}),
    "cnn_rnn/wide": ("cnn_rnn", WIDE),
    "cnn/wide": ("cnn", WIDE),
    "cnn_rnn/wide/g32": ("cnn_rnn", {**WIDE, "norm_groups": 32}),
    "cnn/wide/g32": ("cnn", {**WIDE, "norm_groups": 32}),
    "cnn_rnn/resnet": ("cnn_rnn", RESNET),
    "cnn/resnet": ("cnn", RESNET),
    "cnn_rnn/resnet/g32": ("cnn_rnn", {**RESNET, "norm_groups": 32}),
    "cnn/resnet/g32": ("cnn", {**RESNET, "norm_groups": 32}),
}
TEST_IMAGES, BATCH, EVERY = 600, 64, 100


def probe(*, store, model: str, options: dict, steps: int, seed: int = 0) -> dict:
    """Train ``model`` for ``steps`` batches; its mean training loss and test accuracy every EVERY steps."""
    import torch
    from torch import nn

    from fer_models.data.samples import normalize
    from fer_models.models.registry import create_model, param_count

    g = torch.Generator().manual_seed(seed)
    train = (store.splits == 0).nonzero().squeeze(1)
    train = train[torch.randperm(len(train), generator=g)]
    test = (store.splits == 2).nonzero().squeeze(1)
    test = test[torch.randperm(len(test), generator=g)][:TEST_IMAGES]

    def clips(idx):  # (B, T=1, C=1, 48, 48), normalised as every fedfer model's input
        return normalize(store.images[idx].float().div(255.0)).unsqueeze(1).unsqueeze(1)

    torch.manual_seed(seed)
    net = create_model(model, frontend="pixels", frame_readout="flatten", **options)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    curve, losses, start = [], [], time.time()
    for step in range(steps):
        at = (step * BATCH) % len(train)
        idx = train[at:at + BATCH]
        net.train()
        loss = nn.functional.cross_entropy(net(clips(idx)), store.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (step + 1) % EVERY == 0:
            net.eval()
            with torch.no_grad():
                acc = (net(clips(test)).argmax(1) == store.labels[test]).float().mean().item()
            curve.append({"step": step + 1, "train_loss": sum(losses[-EVERY:]) / EVERY, "accuracy": acc})
            print(f"  step {step + 1}: loss {curve[-1]['train_loss']:.3f}, accuracy {acc:.3f}", flush=True)
    return {"parameters": param_count(net), "curve": curve, "wall_s": round(time.time() - start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a FER2013 folder (Training/PublicTest/PrivateTest)")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    unknown = sorted(set(args.variants.split(",")) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if args.steps < EVERY:
        ap.error(f"--steps must be at least {EVERY}")
    import torch

    from fer_models.data.fer2013 import read_fer2013_folder

    torch.set_num_threads(args.threads)
    store = read_fer2013_folder(path=args.data)
    rows = {(r["variant"], r["steps"]): r for r in recorded_results("encoder_probe") or []}
    for name in args.variants.split(","):
        if (name, args.steps) in rows:
            print(f"{name}: kept from benchmarks/results/encoder_probe.json", flush=True)
            continue
        model, options = VARIANTS[name]
        print(f"{name} ({args.steps} steps)", flush=True)
        result = probe(store=store, model=model, options=options, steps=args.steps)
        rows[(name, args.steps)] = {"variant": name, "steps": args.steps, "model": model,
                                    "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
                                    **result, "accuracy": result["curve"][-1]["accuracy"],
                                    "train_loss": result["curve"][-1]["train_loss"]}
        ordered = sorted(rows.values(), key=lambda r: (r["steps"], list(VARIANTS).index(r["variant"])))
        table = markdown_table(ordered, [("variant", "variant", ""), ("model", "model", ""),
                                         ("parameters", "parameters", ","), ("steps", "steps", ""),
                                         ("train loss (last 100 steps)", "train_loss", ".3f"),
                                         (f"accuracy ({TEST_IMAGES} PrivateTest)", "accuracy", ".3f"),
                                         ("wall (s)", "wall_s", ".0f")])
        write_results("encoder_probe", results=ordered, table=table, notes=(
            "Plain PyTorch, the product's models (create_model, frame-readout flatten), AdamW 3e-3, batch 64, no "
            "augmentation; the learning curves are in the JSON. A screen, not a result: see the module docstring."))


if __name__ == "__main__":
    main()
