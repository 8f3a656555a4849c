"""Clips for the temporal model: real sequences (peak frames, padding), pseudo-sequences, single frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fer_models.data import DatasetError, FaceStore, read_ckplus
from fer_models.data.clips import make_clips, sequence_clips


def _store(sequences: list[str], frames: list[int], labels: list[int]) -> FaceStore:
    n = len(sequences)
    return FaceStore(name="seqs", images=torch.arange(n, dtype=torch.uint8)[:, None, None].expand(n, 4, 4).clone(),
                     labels=torch.tensor(labels), splits=torch.zeros(n, dtype=torch.int8),
                     meta={"sequence": np.array(sequences), "frame": np.array(frames)})


@pytest.fixture()
def store() -> FaceStore:
    # index:        0     1     2     3     4     5     6     7
    return _store(["a", "a", "a", "a", "b", "b", "", "a"],
                  [3, 1, 2, 5, 7, 6, -1, 4],
                  [2, 2, 2, 2, 5, 5, 3, 2])


def test_each_sequence_is_one_sample_of_its_last_frames_in_frame_order(store: FaceStore) -> None:
    clips = sequence_clips(store, np.arange(8), clip_length=3)
    assert clips.real_clips and clips.clip_length == 3
    assert clips.frames.tolist() == [[0, 7, 3], [5, 4, 4], [6, 6, 6]]  # a: frames 3,4,5 (peak); b padded
    assert clips.labels.tolist() == [2, 5, 3]


def test_only_the_given_indices_make_up_the_sequences(store: FaceStore) -> None:
    clips = sequence_clips(store, np.array([1, 2, 5]), clip_length=2)
    assert clips.frames.tolist() == [[1, 2], [5, 5]]


def test_a_sequence_with_two_labels_is_reported() -> None:
    with pytest.raises(DatasetError, match=r"sequence 'q' mixes labels \[1, 2\]"):
        sequence_clips(_store(["q", "q"], [1, 2], [1, 2]), np.arange(2), clip_length=2)


def test_real_clips_need_sequence_meta() -> None:
    plain = FaceStore(name="plain", images=torch.zeros(2, 4, 4, dtype=torch.uint8),
                      labels=torch.zeros(2, dtype=torch.int64), splits=torch.zeros(2, dtype=torch.int8))
    with pytest.raises(DatasetError, match=r"plain: has no meta sequence / frame.*clip-source pseudo or none"):
        make_clips(plain, np.arange(2), clip_length=3, clip_source="real")


def test_pseudo_clips_repeat_each_image_and_none_forces_one_frame(store: FaceStore) -> None:
    pseudo = make_clips(store, np.array([4, 6]), clip_length=3, clip_source="pseudo")
    assert pseudo.frames.tolist() == [[4, 4, 4], [6, 6, 6]] and not pseudo.real_clips
    single = make_clips(store, np.array([4, 6]), clip_length=3, clip_source="none")
    assert single.frames.tolist() == [[4], [6]]


def test_bad_clip_source_or_length_is_rejected(store: FaceStore) -> None:
    with pytest.raises(ValueError, match=r"unknown clip_source 'video'"):
        make_clips(store, np.arange(2), clip_length=2, clip_source="video")
    with pytest.raises(ValueError, match=r"clip_length=0 is invalid"):
        sequence_clips(store, np.arange(2), clip_length=0)


# --- real data ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ckplus(shared_data: Path) -> FaceStore:
    return read_ckplus(path=shared_data / "ckplus48")


def test_real_ckplus_gives_309_three_frame_clips_without_contempt_and_327_with(
        ckplus: FaceStore, shared_data: Path) -> None:
    clips = sequence_clips(ckplus, np.arange(len(ckplus)), clip_length=3)
    assert len(clips) == 309 and clips.clip_length == 3
    assert len(np.unique(ckplus.meta["subject"][clips.frames[:, 0].numpy()])) == 106
    seq = ckplus.meta["sequence"][clips.frames.numpy()]
    assert (seq == seq[:, :1]).all()  # the 3 frames of a clip come from one sequence
    frame = ckplus.meta["frame"][clips.frames.numpy()]
    assert (np.diff(frame, axis=1) == 1).all()  # consecutive, in order
    with_contempt = read_ckplus(path=shared_data / "ckplus48", keep_contempt=True)
    all_clips = sequence_clips(with_contempt, np.arange(len(with_contempt)), clip_length=3)
    assert len(all_clips) == 327
    assert len(np.unique(with_contempt.meta["subject"][all_clips.frames[:, 0].numpy()])) == 118


def test_real_ckplus_clips_per_split_come_from_disjoint_subjects(ckplus: FaceStore) -> None:
    subjects = {}
    for split in ("train", "val", "test"):
        clips = make_clips(ckplus, ckplus.indices(split), clip_length=3, clip_source="real")
        subjects[split] = set(ckplus.meta["subject"][clips.frames.numpy().ravel()])
        x, y = clips.batch(torch.arange(min(4, len(clips))))
        assert x.shape == (len(y), 3, 1, 48, 48)
    assert not (subjects["train"] & subjects["val"] or subjects["train"] & subjects["test"]
                or subjects["val"] & subjects["test"])
    assert sum(len(s) for s in subjects.values()) == 106
