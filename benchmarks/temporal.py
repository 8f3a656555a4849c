"""Does the temporal model help on real expression sequences? (issue 33 item 2, first protocol)

Every model is trained on CK+48 WITHOUT the 10 subjects of ckplus_sequences (their peak frames are in CK+48:
the data README's leakage note), on CK+48's 3-frame clips (T = 3, the same clips, epochs and recipe for all),
and scored on the 40 whole sequences of those 10 subjects (neutral onset to apex, faces cropped by the
product's face crop), as clips of T = 4, 8 and 16 frames spread evenly from onset to apex
(``clip-sampling=uniform``) and as the last T frames (``last``, ending at the apex):

    cnn last frame      the per-frame CNN on the clip's last frame alone (the apex for both samplings)
    cnn mean of frames  the same CNN over the T frames (the mean of the frames' logits: its head is linear)
    cnn_rnn gru / lstm  the hybrid model, a DPGRU / DPLSTM over the frame embeddings, last output
    cnn_rnn attention   the GRU's outputs pooled by softmax attention over time

    python benchmarks/temporal.py --ckplus ../shared/data/ckplus48 --sequences ../shared/data/ckplus_sequences

Accuracy and macro-F1 over the 40 sequences with a 95% interval (normal approximation; n = 40, so about
+-15 points: differences smaller than that are not shown by this protocol). Trained models are plain PyTorch
(fer_models' engine, no Flower); results in benchmarks/results/temporal_ckplus.md / .json.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import markdown_table, write_results  # noqa: E402
from fer_models.data.clips import sequence_clips  # noqa: E402
from fer_models.data.loading import load_dataset  # noqa: E402
from fer_models.models import create_model  # noqa: E402
from fer_models.training import engine  # noqa: E402
from fer_models.training.augment import Augmenter  # noqa: E402
from fer_models.training.metrics import classification_report  # noqa: E402

#: model row -> (registry name, options, frames it is trained and scored on: "clip" or "last")
MODELS = {"cnn last frame": ("cnn", {}, "last"), "cnn mean of frames": ("cnn", {}, "clip"),
          "cnn_rnn gru": ("cnn_rnn", {"rnn": "gru"}, "clip"), "cnn_rnn lstm": ("cnn_rnn", {"rnn": "lstm"}, "clip"),
          "cnn_rnn attention": ("cnn_rnn", {"rnn": "gru", "temporal_attention": True}, "clip")}
COLUMNS = [("model", "model", ""), ("T", "T", ""), ("sampling", "sampling", ""), ("accuracy", "accuracy", ".3f"),
           ("95% interval", "interval", ""), ("macro-F1", "macro_f1", ".3f"), ("sequences", "n", "")]


def ci95(accuracy: float, n: int) -> float:
    return 1.96 * math.sqrt(accuracy * (1 - accuracy) / n) if n else float("nan")


def last_frames(clips):
    """The same samples with only their last frame (T = 1)."""
    from fer_models.data.samples import ClipSet

    return ClipSet(clips.images, clips.frames[:, -1:].contiguous(), clips.labels, real_clips=clips.real_clips)


def train(name: str, *, data, epochs: int, seed: int) -> torch.nn.Module:
    registry, options, frames = MODELS[name]
    torch.manual_seed(seed)
    model = create_model(registry, **options)
    data = last_frames(data) if frames == "last" else data
    optimizer = engine.make_optimizer(model, name="adamw", learning_rate=3e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    augmenter = Augmenter(policy="standard", same_across_frames=True)
    engine.train(model=model, data=data, optimizer=optimizer, epochs=epochs, device=torch.device("cpu"),
                 loader=engine.index_loader(len(data), batch_size=32, seed=seed),
                 augment=lambda x: augmenter(x, generator=generator))
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckplus", required=True, help="CK+48 folder (training, without the sequences' subjects)")
    ap.add_argument("--sequences", required=True, help="ckplus_sequences folder (the 40 sequences scored)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lengths", default="4,8,16", help="clip lengths T scored")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ck = load_dataset(data_path=args.ckplus, data_format="ckplus")
    seqs = load_dataset(data_path=args.sequences, data_format="sequences")
    held_subjects = set(np.asarray(seqs.meta["subject"]).astype(str))
    ck_subjects = np.asarray(ck.meta["subject"]).astype(str)
    keep = np.flatnonzero(~np.isin(ck_subjects, sorted(held_subjects)))
    assert len(keep) < len(ck_subjects), "the sequences' subjects are in CK+48: leaving them out must remove images"
    train_clips = sequence_clips(ck, keep, clip_length=3, sampling="last")
    print(f"training: {len(train_clips)} CK+48 clips of 3 frames from {len(set(ck_subjects[keep]))} subjects; "
          f"scored: {len(set(np.asarray(seqs.meta['sequence']).astype(str)))} sequences of "
          f"{len(held_subjects)} subjects", flush=True)
    everything = np.arange(len(seqs.labels))
    rows = []
    for name, (_, _, frames) in MODELS.items():
        started = time.perf_counter()
        model = train(name, data=train_clips, epochs=args.epochs, seed=args.seed)
        train_s = time.perf_counter() - started
        for length in [int(t) for t in args.lengths.split(",")]:
            for sampling in ("uniform", "last"):
                clips = sequence_clips(seqs, everything, clip_length=length, sampling=sampling)
                clips = last_frames(clips) if frames == "last" else clips
                res = engine.evaluate(model=model, data=clips, batch_size=64, device=torch.device("cpu"))
                report = classification_report(y_true=res.y_true, y_pred=res.y_pred)
                half = ci95(res.accuracy, res.num_examples)
                rows.append({"model": name, "T": length, "sampling": sampling, "accuracy": res.accuracy,
                             "interval": f"{max(0.0, res.accuracy - half):.3f}-{min(1.0, res.accuracy + half):.3f}",
                             "macro_f1": report["macro_f1"], "n": res.num_examples, "train_s": round(train_s, 1),
                             "confusion_matrix": report["confusion_matrix"]})
                print({k: v for k, v in rows[-1].items() if k != "confusion_matrix"}, flush=True)
    table = markdown_table(rows, COLUMNS)
    print(table)
    write_results("temporal_ckplus", results=rows, table=table, notes=(
        f"Trained on CK+48 without the 10 subjects of ckplus_sequences ({len(train_clips)} clips of 3 frames), "
        f"{args.epochs} epochs, AdamW 3e-3, weight decay 1e-4, batch 32, standard augmentation (one transform per "
        f"clip), small encoder, seed {args.seed}; scored on the 40 sequences of those subjects. 'cnn last frame' "
        f"sees one frame (the clip's last: the apex for both samplings), so its rows differ only by T's rounding. "
        f"95% interval: normal approximation over the 40 sequences. The model is trained on peak frames only (CK+48 "
        f"has no onsets), so this protocol asks whether reading the onset-to-apex frames helps a model that learnt "
        f"expressions at their peak; leave-one-subject-out within the sequences (training on onsets too) is next."))


if __name__ == "__main__":
    main()
