"""Expression sequences on real data: ckplus_sequences (40 CK+ sequences, 10 subjects, 684 whole frames)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fer_models.common.labels import EMOTIONS
from fer_models.config import RunConfig
from fer_models.data import DatasetError, FaceStore, load_dataset, read_manifest
from fer_models.data.clips import sequence_clips
from fer_models.data.face_crop import crop_square, detect_face, face_detector
from fer_models.data.subjects import check_disjoint
from tests.test_sequences import _manifest, _uniform

SUBJECTS = ["S052", "S055", "S074", "S106", "S111", "S113", "S124", "S125", "S130", "S132"]


@pytest.fixture(scope="module")
def real_root(shared_data: Path) -> Path:
    return shared_data / "ckplus_sequences"


@pytest.fixture(scope="module")
def real(real_root: Path) -> FaceStore:
    return load_dataset(data_path=str(real_root))  # disk-cached after the first run


@pytest.fixture(scope="module")
def manifest_rows(real_root: Path) -> list[dict[str, str]]:
    with (real_root / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _by_sequence(store: FaceStore) -> dict[str, list[int]]:
    """Store indices of each sequence sorted by frame number (independent of sequence_clips)."""
    out: dict[str, list[int]] = {}
    for i in sorted(range(len(store)), key=lambda i: (store.meta["sequence"][i], store.meta["frame"][i])):
        out.setdefault(str(store.meta["sequence"][i]), []).append(i)
    return out


def test_real_sequences_are_40_of_10_subjects_with_684_frames_labelled_as_the_readme_says(
        real: FaceStore, manifest_rows: list[dict[str, str]]) -> None:
    assert len(real) == 684 and real.images.shape[1:] == (48, 48)
    assert sorted(np.unique(real.meta["subject"]).tolist()) == SUBJECTS
    seqs = _by_sequence(real)
    assert len(seqs) == 40
    per_label = Counter(EMOTIONS[int(real.labels[idx[0]])] for idx in seqs.values())
    assert per_label == {"angry": 4, "disgust": 9, "fear": 5, "happy": 8, "sad": 5, "surprise": 9}
    lengths = [len(i) for i in seqs.values()]
    assert (min(lengths), int(np.median(lengths)), max(lengths)) == (8, 15, 45)
    truth = {(r["sequence"], int(r["frame"])): r["label"] for r in manifest_rows}
    names = EMOTIONS
    assert {(str(s), int(f)): names[int(y)] for s, f, y in zip(real.meta["sequence"], real.meta["frame"],
                                                               real.labels)} == truth
    assert (real.meta["face_detected"] == 1).all()  # a face found in every sequence


def test_real_frames_run_from_1_to_their_number_in_order_and_splits_are_by_subject(real: FaceStore) -> None:
    for seq, idx in _by_sequence(real).items():
        assert real.meta["frame"][idx].tolist() == list(range(1, len(idx) + 1)), seq
        assert [Path(p).name for p in real.meta["path"][idx]] == [f"{seq}_{k:08d}.png" for k in range(1, len(idx) + 1)]
        assert len(np.unique(real.splits.numpy()[idx])) == 1
    assert check_disjoint(real.meta["subject"], real.splits.numpy()) == []
    assert [len(np.unique(real.meta["subject"][real.indices(s)])) for s in ("train", "val", "test")] == [7, 1, 2]


@pytest.mark.parametrize("sampling", ["last", "uniform"])
def test_real_clips_take_exactly_the_frames_the_sampling_defines(real: FaceStore, sampling: str) -> None:
    seqs = _by_sequence(real)
    for t in (4, 8, 16):
        clips = sequence_clips(real, np.arange(len(real)), clip_length=t, sampling=sampling)
        got = {str(real.meta["sequence"][int(row[0])]): row.tolist() for row in clips.frames}
        for seq, idx in seqs.items():
            n = len(idx)
            want = _uniform(n, t) if sampling == "uniform" else (
                list(range(n - t, n)) if n >= t else list(range(n)) + [n - 1] * (t - n))
            assert got[seq] == [idx[p] for p in want], (seq, t)


def test_real_clips_at_t16_refuse_the_short_sequences_by_name(real: FaceStore) -> None:
    short = sorted(s for s, i in _by_sequence(real).items() if len(i) < 16)
    assert short
    with pytest.raises(DatasetError, match=rf"{len(short)} sequence\(s\) have fewer frames than clip-length=16: "
                                           rf"'{short[0]}'"):
        sequence_clips(real, np.arange(len(real)), clip_length=16, short="refuse")


def test_a_real_sequence_is_cut_with_the_median_face_box_of_its_first_middle_and_last_frames(
        real: FaceStore, real_root: Path) -> None:
    seq, idx = min(_by_sequence(real).items(), key=lambda kv: len(kv[1]))
    frames = [np.asarray(Image.open(real_root / p).convert("L")) for p in real.meta["path"][idx]]
    boxes = [detect_face(frames[k], detector=face_detector()) for k in (0, round((len(idx) - 1) / 2), len(idx) - 1)]
    box = tuple(int(round(float(np.median([b[j] for b in boxes if b])))) for j in range(3))
    assert np.array_equal(real.images[idx].numpy(), np.stack([crop_square(f, box) for f in frames])), seq


def test_real_manifest_rows_give_the_folder_layouts_faces(real: FaceStore, real_root: Path,
                                                          manifest_rows: list[dict[str, str]], tmp_path: Path) -> None:
    keep = {"S052_004", "S130_001", "S055_004"}
    rows = [r for r in manifest_rows if r["sequence"] in keep][::-1]  # any row order
    lines = [f"{real_root / r['path']},{r['label']},{r['subject']},{r['sequence']},{r['frame']}" for r in rows]
    listed = read_manifest(path=_manifest(tmp_path / "some.csv", lines))
    at = {(str(s), int(f)): i for i, (s, f) in enumerate(zip(real.meta["sequence"], real.meta["frame"]))}
    same = [at[(str(s), int(f))] for s, f in zip(listed.meta["sequence"], listed.meta["frame"])]
    assert len(same) == len(rows) and torch.equal(listed.images, real.images[same])


def test_a_run_on_real_sequences_gives_each_client_whole_sequence_clips_of_t_frames(real_root: Path) -> None:
    from fer_models.federation import task

    cfg = RunConfig.from_flat({"data-path": str(real_root), "clip-length": 8, "clip-source": "real",
                               "num-clients": 2})
    store = task.load_store(cfg)
    seen: list[str] = []
    for p in range(2):
        clips = task.client_data(cfg, partition_id=p, num_partitions=2)
        assert clips.real_clips and clips.clip_length == 8
        names = store.meta["sequence"][clips.frames.numpy()]
        assert (names == names[:, :1]).all()  # one sequence per clip
        assert (np.diff(store.meta["frame"][clips.frames.numpy()], axis=1) > 0).all()  # 8+ frames: no padding
        seen += names[:, 0].tolist()
    train_sequences = set(store.meta["sequence"][store.indices("train")])
    assert sorted(seen) == sorted(train_sequences)  # every training sequence once, at one client
