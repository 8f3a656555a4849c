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
        [--protocol held-out|loso|both] [--loso-length 8]

``--protocol loso`` (leave one subject out within the sequences): each model, first trained as above, is then
fine-tuned on the sequences of 9 of the 10 subjects (a fresh random window of T frames per sequence each epoch,
onset frames included) and scored on the 10th subject's sequences; every sequence is scored once, by the fold
that left its subject out.

Accuracy and macro-F1 over the 40 sequences with a 95% interval (normal approximation; n = 40, so about
+-15 points: differences smaller than that are not shown by this protocol). Trained models are plain PyTorch
(fer_models' engine, no Flower); results in benchmarks/results/temporal_ckplus.md / .json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import markdown_table, write_results  # noqa: E402
from benchmarks.cultures import ci95  # noqa: E402  (the normal-approximation 95% interval, defined once)
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


def last_frames(clips):
    """The same samples with only their last frame (T = 1)."""
    from fer_models.data.samples import ClipSet

    return ClipSet(clips.images, clips.frames[:, -1:].contiguous(), clips.labels, real_clips=clips.real_clips)


def train(name: str, *, data, epochs: int, seed: int, start: dict | None = None, learning_rate: float = 3e-3) -> torch.nn.Module:
    """Train model row ``name`` (from ``start``'s weights if given) for ``epochs`` passes; ``data`` is a ClipSet,
    or a function of the epoch returning one (fresh random windows every epoch)."""
    registry, options, frames = MODELS[name]
    torch.manual_seed(seed)
    model = create_model(registry, **options)
    if start is not None:
        model.load_state_dict(start)
    optimizer = engine.make_optimizer(model, name="adamw", learning_rate=learning_rate, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    augmenter = Augmenter(policy="standard", same_across_frames=True)
    for epoch in range(epochs):
        clips = data(epoch) if callable(data) else data
        clips = last_frames(clips) if frames == "last" else clips
        engine.train(model=model, data=clips, optimizer=optimizer, epochs=1, device=torch.device("cpu"),
                     loader=engine.index_loader(len(clips), batch_size=32, seed=seed + epoch),
                     augment=lambda x: augmenter(x, generator=generator))
    return model.eval()


def score(model: torch.nn.Module, clips, *, frames: str) -> tuple[np.ndarray, np.ndarray]:
    clips = last_frames(clips) if frames == "last" else clips
    res = engine.evaluate(model=model, data=clips, batch_size=64, device=torch.device("cpu"))
    return res.y_true, res.y_pred


def row(model: str, length: int, sampling: str, y_true: np.ndarray, y_pred: np.ndarray, **extra) -> dict:
    report = classification_report(y_true=y_true, y_pred=y_pred)
    acc, n = report["accuracy"], report["n"]
    half = ci95(acc, n)
    return {"model": model, "T": length, "sampling": sampling, "accuracy": acc,
            "interval": f"{max(0.0, acc - half):.3f}-{min(1.0, acc + half):.3f}", "macro_f1": report["macro_f1"],
            "n": n, "confusion_matrix": report["confusion_matrix"], **extra}


def loso(name: str, *, seqs, start: dict, length: int, epochs: int, seed: int) -> list[dict]:
    """Leave one subject out within the sequences: fine-tune ``start`` on 9 subjects, score the 10th."""
    subjects = np.asarray(seqs.meta["subject"]).astype(str)
    frames = MODELS[name][2]
    truth: dict[str, list[np.ndarray]] = {"uniform": [], "last": []}
    pred: dict[str, list[np.ndarray]] = {"uniform": [], "last": []}
    for held in sorted(set(subjects)):
        train_idx, test_idx = np.flatnonzero(subjects != held), np.flatnonzero(subjects == held)
        model = train(name, data=lambda epoch: sequence_clips(seqs, train_idx, clip_length=length, sampling="random",
                                                             seed=(seed, epoch)),
                      epochs=epochs, seed=seed, start=start, learning_rate=1e-3)
        for sampling in truth:
            y, p = score(model, sequence_clips(seqs, test_idx, clip_length=length, sampling=sampling), frames=frames)
            truth[sampling].append(y)
            pred[sampling].append(p)
    return [row(name, length, f"{sampling} (LOSO)", np.concatenate(truth[sampling]), np.concatenate(pred[sampling]))
            for sampling in truth]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckplus", required=True, help="CK+48 folder (training, without the sequences' subjects)")
    ap.add_argument("--sequences", required=True, help="ckplus_sequences folder (the 40 sequences scored)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lengths", default="4,8,16", help="clip lengths T scored")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--protocol", choices=("held-out", "loso", "both"), default="both")
    ap.add_argument("--loso-length", type=int, default=8, help="clip length T of the leave-one-subject-out folds")
    ap.add_argument("--loso-epochs", type=int, default=30)
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
        new: list[dict] = []
        if args.protocol in ("held-out", "both"):
            for length in [int(t) for t in args.lengths.split(",")]:
                for sampling in ("uniform", "last"):
                    clips = sequence_clips(seqs, everything, clip_length=length, sampling=sampling)
                    new.append(row(name, length, sampling, *score(model, clips, frames=frames),
                                   train_s=round(train_s, 1)))
        if args.protocol in ("loso", "both"):
            new += loso(name, seqs=seqs, start=model.state_dict(), length=args.loso_length, epochs=args.loso_epochs,
                        seed=args.seed)
        for r in new:
            print({k: v for k, v in r.items() if k != "confusion_matrix"}, flush=True)
        rows += new
    table = markdown_table(rows, COLUMNS)
    print(table)
    write_results("temporal_ckplus", results=rows, table=table, notes=(
        f"Trained on CK+48 without the 10 subjects of ckplus_sequences ({len(train_clips)} clips of 3 frames), "
        f"{args.epochs} epochs, AdamW 3e-3, weight decay 1e-4, batch 32, standard augmentation (one transform per "
        f"clip), small encoder, seed {args.seed}; scored on the 40 sequences of those subjects. 'cnn last frame' "
        f"sees one frame (the clip's last: the apex for both samplings), so its rows differ only by T's rounding. "
        f"95% interval: normal approximation over the 40 sequences. The model is trained on peak frames only (CK+48 "
        f"has no onsets), so this protocol asks whether reading the onset-to-apex frames helps a model that learnt "
        f"expressions at their peak. Rows marked (LOSO): leave one subject out within the sequences, each model "
        f"fine-tuned from its CK+48 weights for {args.loso_epochs} epochs (AdamW 1e-3) on 9 subjects' sequences as "
        f"random windows of T = {args.loso_length} (onsets included), scored on the 10th subject's; every sequence "
        f"scored once."))


if __name__ == "__main__":
    main()
