"""`fedfer predict --video` with the recurrent state carried per face, on a video composed from a real sequence.

A tiny cnn_rnn is trained for a few seconds on CK+48 without the 10 subjects of ``ckplus_sequences``
(their peak frames are also in CK+48: the data README's leakage note), then a video is composed at test
time from one of those sequences (neutral onset to apex, upscaled, on a textured background). CK+48 has
no neutral class, so "neutral" cannot be read off this model: what is asserted is that the probability
of the sequence's label rises as the frames advance from onset to apex, and that the apex is labelled so.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_models.common.labels import EMOTIONS
from fer_models.serving.runtime import TorchPredictor
from fer_models.serving.video.compose import compose_video
from simulation.predict.video_predict import TIMELINE_JSON, open_source, run_video
from tests.test_streaming import _real_sequence

SEQUENCE_SUBJECTS = {"S052", "S055", "S074", "S106", "S111", "S113", "S124", "S125", "S130", "S132"}
SEQUENCES = ["S052_001", "S130_013"]  # surprise and happy, 15 frames each
HOLD = 2  # video frames per sequence frame


def _train_tiny(ckplus48: Path, *, epochs: int = 5) -> torch.nn.Module:
    from fer_models.data.ckplus import read_ckplus
    from fer_models.data.samples import normalize
    from fer_models.models import create_model

    store = read_ckplus(path=ckplus48)
    keep = torch.from_numpy(np.array([s not in SEQUENCE_SUBJECTS for s in store.meta["subject"]]))
    assert int(keep.sum()) < len(keep)  # the held-out subjects are in CK+48: leaving them out matters
    x = normalize(store.images[keep].float().div(255.0))[:, None, None]  # (N, T=1, 1, 48, 48)
    y = store.labels[keep]
    torch.manual_seed(0)
    model = create_model("cnn_rnn", channels=(8, 8, 16, 16), dropout=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=6e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 64):
            idx = order[i:i + 64]
            flip = (torch.rand(len(idx), generator=gen) < 0.5)[:, None, None, None, None]
            loss = torch.nn.functional.cross_entropy(model(torch.where(flip, x[idx].flip(-1), x[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def tiny_model(shared_data: Path) -> torch.nn.Module:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_tiny(shared_data / "ckplus48")
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("sequence", SEQUENCES)
def test_timeline_moves_toward_the_sequence_label_as_frames_advance(shared_data: Path, tiny_model, sequence: str,
                                                                    tmp_path: Path, one_thread) -> None:
    crops, label = _real_sequence(shared_data, sequence)
    frames = HOLD * len(crops)
    video = tmp_path / "sequence.mp4"
    truth = compose_video(video, faces=[list(crops)], frames=frames, face_side=144, hold=HOLD, size=(360, 480))
    cap, fps, name = open_source(video=video)
    boxes = iter(truth)
    predictor = TorchPredictor(tiny_model, clip_length=3, image_size=48, source="tiny")
    summary = run_video(cap=cap, fps=fps, name=name, predictor=predictor, out=tmp_path / "out", smooth=1.0,
                        detector=lambda gray: next(boxes))
    assert summary["state"] == "carried" and summary["faces"] == 1
    timeline = json.loads((tmp_path / "out" / TIMELINE_JSON).read_text())["timeline"]
    assert len(timeline) == frames and all(len(f["faces"]) == 1 for f in timeline)
    p = np.array([f["faces"][0]["probabilities"][label] for f in timeline])
    third = frames // 3
    assert p[-third:].mean() > p[:third].mean() + 0.2, p.round(2)  # onset → apex: toward the label
    assert label in EMOTIONS and timeline[-1]["faces"][0]["label"] == label  # the apex is read as the label
