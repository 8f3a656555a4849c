"""Expression sequences as data: the folder and manifest layouts, their bad input, and clips of T frames."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fer_models.config import RunConfig
from fer_models.data import DatasetError, FaceStore, load_dataset, read_manifest
from fer_models.data.clips import CLIP_SAMPLINGS, SHORT_RULES, frame_positions, make_clips, sequence_clips
from fer_models.data.face_crop import crop_square, fallback_box
from fer_models.data.loading import DATA_FORMATS
from fer_models.data.sequences import looks_like_sequences, read_sequences
from fer_models.data.subjects import check_disjoint


def _frame(path: Path, value: int, size: tuple[int, int] = (48, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(path)
    return path


def _sequence(root: Path, emotion: str, name: str, numbers, *, base: int = 0) -> list[Path]:
    """Frames ``<root>/<emotion>/<name>/<name>_<number>.png``, frame k's pixels = base + k."""
    return [_frame(root / emotion / name / f"{name}_{k}.png", base + k) for k in numbers]


# --- the folder layout --------------------------------------------------------------------------------------------

def test_frames_are_ordered_by_their_number_and_carry_label_subject_and_sequence(tmp_path: Path) -> None:
    _sequence(tmp_path, "happiness", "S007_002", [1, 2, 10, 3])  # by name: 1, 10, 2, 3
    _sequence(tmp_path, "anger", "S009_001", [4, 5], base=100)
    store = read_sequences(path=tmp_path, face_crop="none")
    assert store.meta["sequence"].tolist() == ["S009_001"] * 2 + ["S007_002"] * 4  # emotion folders sorted
    assert store.meta["frame"].tolist() == [4, 5, 1, 2, 3, 10]
    assert store.images[:, 0, 0].tolist() == [104, 105, 1, 2, 3, 10]  # the frame's own pixels
    assert store.labels.tolist() == [0, 0, 3, 3, 3, 3]  # anger -> angry, happiness -> happy
    assert store.meta["subject"].tolist() == ["S009"] * 2 + ["S007"] * 4
    assert store.meta["path"][2] == "happiness/S007_002/S007_002_1.png"
    assert store.images.shape[1:] == (48, 48) and store.name == tmp_path.name


def test_load_dataset_detects_the_layout_also_under_an_images_folder(tmp_path: Path, cache_dir: Path) -> None:
    root = tmp_path / "my_sequences"
    _sequence(root / "images", "surprise", "S001_001", [1, 2, 3])
    assert looks_like_sequences(root)
    store = load_dataset(data_path=str(root), cache_dir=str(cache_dir))
    assert store.name == "my_sequences" and store.meta["path"][0] == "images/surprise/S001_001/S001_001_1.png"
    assert load_dataset(data_path=str(root), data_format="sequences", cache_dir=str(cache_dir)).name == "my_sequences"


def test_ckplus48_and_fer2013_folders_do_not_look_like_sequences(tmp_path: Path) -> None:
    _frame(tmp_path / "ck" / "anger" / "S010_004_00000017.png", 1)
    _frame(tmp_path / "fer" / "train" / "angry" / "a.png", 1)
    assert not looks_like_sequences(tmp_path / "ck") and not looks_like_sequences(tmp_path / "fer")


def test_splits_keep_every_subject_on_one_side(tmp_path: Path) -> None:
    for subject in range(10):
        for seq in range(2):
            _sequence(tmp_path, ["fear", "sadness"][seq], f"S{subject:03d}_{seq:03d}", [1, 2])
    store = read_sequences(path=tmp_path, face_crop="none")
    assert check_disjoint(store.meta["subject"], store.splits.numpy()) == []
    assert [len(np.unique(store.meta["subject"][store.indices(s)])) for s in ("train", "val", "test")] == [7, 1, 2]


def test_contempt_sequences_are_dropped(tmp_path: Path) -> None:
    _sequence(tmp_path, "contempt", "S001_001", [1, 2])
    _sequence(tmp_path, "disgust", "S001_002", [1, 2])
    assert read_sequences(path=tmp_path, face_crop="none").meta["sequence"].tolist() == ["S001_002"] * 2


def test_whole_frames_of_a_sequence_share_one_face_square(tmp_path: Path) -> None:
    gray = np.zeros((60, 120), dtype=np.uint8)
    gray[:, 30:90] = 200
    for k in (1, 2, 3):
        Image.fromarray(np.roll(gray, k - 1, axis=1)).save(_frame(tmp_path / "sad" / "S1_1" / f"f{k}.png", 0))
    store = read_sequences(path=tmp_path, face_crop="center")
    assert fallback_box(60, 120) == (42, 15, 38)  # 0.63 * 60 = 38 wide, centred at (0.51 * 120, 0.57 * 60)
    expected = [crop_square(np.roll(gray, k, axis=1), (42, 15, 38)) for k in range(3)]
    assert np.array_equal(store.images.numpy(), np.stack(expected))  # the face moves inside one fixed window


# --- bad input: a typed error naming the sequence and what to do -------------------------------------------------

def test_a_sequence_folder_with_one_frame_is_refused(tmp_path: Path) -> None:
    _sequence(tmp_path, "fear", "S001_001", [1, 2])
    _sequence(tmp_path, "fear", "S001_002", [7])
    with pytest.raises(DatasetError, match=r"S001_002: sequence 'S001_002' has one frame \(S001_002_7\.png\); a "
                                           r"sequence needs at least 2 frames .*add its other frames"):
        read_sequences(path=tmp_path, face_crop="none")


def test_a_sequence_folder_without_frames_is_refused(tmp_path: Path) -> None:
    _sequence(tmp_path, "fear", "S001_001", [1, 2])
    (tmp_path / "fear" / "S001_002").mkdir()
    (tmp_path / "fear" / "S001_002" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"sequence 'S001_002' has no frame images"):
        read_sequences(path=tmp_path, face_crop="none")


def test_frames_of_different_sizes_are_refused(tmp_path: Path) -> None:
    _sequence(tmp_path, "happy", "S002_001", [1, 2])
    _frame(tmp_path / "happy" / "S002_001" / "S002_001_3.png", 3, size=(50, 48))
    with pytest.raises(DatasetError, match=r"sequence 'S002_001' mixes frame sizes: S002_001_1\.png is 48x48 but "
                                           r"S002_001_3\.png is 50x48; .*resize the odd frames to 48x48"):
        read_sequences(path=tmp_path, face_crop="none")


def test_a_frame_that_cannot_be_read_is_named_with_its_sequence(tmp_path: Path) -> None:
    _sequence(tmp_path, "happy", "S002_001", [1, 2])
    (tmp_path / "happy" / "S002_001" / "S002_001_3.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"sequence 'S002_001': cannot decode image .*S002_001_3\.png .*"
                                           r"re-export it, or remove it"):
        read_sequences(path=tmp_path, face_crop="none")


@pytest.mark.parametrize("files,message", [
    (["S1_1_2.png", "S1_1_02.png"], r"sequence 'S1_1' has frame number 2 twice \(S1_1_02\.png and S1_1_2\.png\)"),
    (["S1_1_1.png", "apex.png"], r"apex\.png: frame file name has no frame number"),
])
def test_frame_numbers_must_be_present_and_distinct(tmp_path: Path, files: list[str], message: str) -> None:
    for name in files:
        _frame(tmp_path / "sad" / "S1_1" / name, 1)
    with pytest.raises(DatasetError, match=message):
        read_sequences(path=tmp_path, face_crop="none")


def test_a_loose_frame_a_second_label_or_a_bad_folder_name_is_refused(tmp_path: Path) -> None:
    _frame(tmp_path / "a" / "sad" / "S1_1_1.png", 1)
    with pytest.raises(DatasetError, match=r"S1_1_1\.png: a frame lies directly in the emotion folder"):
        read_sequences(path=tmp_path / "a", face_crop="none")
    _sequence(tmp_path / "b", "sad", "S1_1", [1, 2])
    _sequence(tmp_path / "b", "fear", "S1_1", [3, 4])
    with pytest.raises(DatasetError, match=r"sequence 'S1_1' has a folder under two emotions"):
        read_sequences(path=tmp_path / "b", face_crop="none")
    _sequence(tmp_path / "c", "bored", "S1_1", [1, 2])
    with pytest.raises(DatasetError, match=r"bored: folder name is not an emotion"):
        read_sequences(path=tmp_path / "c", face_crop="none")


# --- the manifest layout ------------------------------------------------------------------------------------------

def _manifest(path: Path, rows: list[str]) -> Path:
    path.write_text("path,label,subject,sequence,frame\n" + "\n".join(rows) + "\n")
    return path


def test_a_manifest_of_sequences_reads_like_the_folder_layout(tmp_path: Path) -> None:
    _sequence(tmp_path / "seq", "happy", "S007_002", [1, 2, 10, 3])
    _sequence(tmp_path / "seq", "anger", "S009_001", [4, 5], base=100)
    rows = ["seq/happy/S007_002/S007_002_10.png,happy,S007,S007_002,10", "seq/anger/S009_001/S009_001_5.png,angry,S009,"
            "S009_001,5", "seq/happy/S007_002/S007_002_1.png,happy,S007,S007_002,1", "seq/happy/S007_002/S007_002_3.png,"
            "happy,S007,S007_002,3", "seq/anger/S009_001/S009_001_4.png,angry,S009,S009_001,4",
            "seq/happy/S007_002/S007_002_2.png,happy,S007,S007_002,2"]
    listed = read_manifest(path=_manifest(tmp_path / "m.csv", rows), face_crop="none")
    folder = read_sequences(path=tmp_path / "seq", face_crop="none")
    at = {(s, f): i for i, (s, f) in enumerate(zip(folder.meta["sequence"], folder.meta["frame"].tolist()))}
    same = [at[(s, f)] for s, f in zip(listed.meta["sequence"], listed.meta["frame"].tolist())]
    assert torch.equal(listed.images, folder.images[same]) and torch.equal(listed.labels, folder.labels[same])
    clips = sequence_clips(listed, np.arange(len(listed)), clip_length=4)
    assert clips.frames.tolist() == [[2, 5, 3, 0], [4, 1, 1, 1]]  # frames 1,2,3,10 and 4,5 (padded)


@pytest.mark.parametrize("rows,message", [
    (["a.png,sad,p,q,1", "b.png,fear,p,q,2"], r"m\.csv line 3: sequence 'q' has another label than on line 2"),
    (["a.png,sad,p,q,1", "b.png,sad,p,r,1"], r"m\.csv: sequence 'q' has one frame \(line 2 \(a\.png\)\); a sequence "
                                             r"needs at least 2 frames"),
    (["a.png,sad,p,q,1", "b.png,sad,p,q,1"], r"m\.csv: sequence 'q' has frame number 1 twice \(line 2 \(a\.png\) and "
                                             r"line 3 \(b\.png\)\)"),
    (["a.png,sad,p,q,1", "b.png,sad,p,q,"], r"m\.csv line 3: sequence 'q' row has an empty frame"),
    (["a.png,sad,p,q,1", "wide.png,sad,p,q,2"], r"m\.csv: sequence 'q' mixes frame sizes: line 2 \(a\.png\) is 48x48 "
                                                r"but line 3 \(wide\.png\) is 60x48"),
])
def test_bad_sequences_in_a_manifest_are_named(tmp_path: Path, rows: list[str], message: str) -> None:
    _frame(tmp_path / "a.png", 1)
    _frame(tmp_path / "b.png", 2)
    _frame(tmp_path / "wide.png", 3, size=(60, 48))
    with pytest.raises(DatasetError, match=message):
        read_manifest(path=_manifest(tmp_path / "m.csv", rows), face_crop="none")


# --- clips of T frames --------------------------------------------------------------------------------------------

def _uniform(n: int, t: int) -> list[int]:
    """Independent: k (n-1) / (t-1) rounded half up, exactly (fractions), or the last frame for t = 1."""
    if t == 1:
        return [n - 1]
    return [int(Fraction(k * (n - 1), t - 1) + Fraction(1, 2)) for k in range(t)]


def test_uniform_last_and_padded_positions_match_their_definitions() -> None:
    for n in range(1, 50):
        for t in range(1, 18):
            assert frame_positions(n, t, sampling="uniform").tolist() == _uniform(n, t), (n, t)
            last = list(range(n - t, n)) if n >= t else list(range(n)) + [n - 1] * (t - n)
            assert frame_positions(n, t, sampling="last").tolist() == last, (n, t)
    assert frame_positions(15, 8, sampling="uniform").tolist() == [0, 2, 4, 6, 8, 10, 12, 14]
    assert frame_positions(3, 8, sampling="uniform").tolist() == [0, 0, 1, 1, 1, 1, 2, 2]


def test_random_windows_are_consecutive_seeded_and_cover_every_start() -> None:
    starts = Counter()
    for seed in range(400):
        pos = frame_positions(12, 8, sampling="random", rng=np.random.default_rng(seed)).tolist()
        assert pos == list(range(pos[0], pos[0] + 8))
        starts[pos[0]] += 1
    assert sorted(starts) == [0, 1, 2, 3, 4] and min(starts.values()) > 40  # uniform over 0..n-T
    with pytest.raises(ValueError, match="needs a seeded generator"):
        frame_positions(12, 8, sampling="random")


def _store(lengths: dict[str, int]) -> FaceStore:
    seq = [name for name, n in lengths.items() for _ in range(n)]
    frame = [k + 1 for n in lengths.values() for k in range(n)]
    n = len(seq)
    return FaceStore(name="seqs", images=torch.zeros(n, 4, 4, dtype=torch.uint8), labels=torch.zeros(n, dtype=torch.int64),
                     splits=torch.zeros(n, dtype=torch.int8), meta={"sequence": np.array(seq), "frame": np.array(frame)})


def test_a_random_window_depends_on_the_seed_and_the_sequence_only() -> None:
    store = _store({"a": 20, "b": 30, "": 1})
    both = sequence_clips(store, np.arange(51), clip_length=6, sampling="random", seed=[3, 1])
    alone = sequence_clips(store, np.arange(20, 50), clip_length=6, sampling="random", seed=[3, 1])
    assert both.frames[1].tolist() == alone.frames[0].tolist()
    name = int.from_bytes(hashlib.sha256(b"b").digest()[:8], "little")
    start = np.random.default_rng([3, 1, name]).integers(0, 30 - 6 + 1)  # the documented draw
    assert alone.frames[0].tolist() == list(range(20 + start, 26 + start))
    others = {tuple(sequence_clips(store, np.arange(51), clip_length=6, sampling="random", seed=s).frames[1].tolist())
              for s in range(20)}
    assert len(others) > 5 and both.frames[2].tolist() == [50] * 6  # the still stays repeated


def test_a_sequence_shorter_than_t_is_refused_by_name_or_padded(caplog) -> None:
    store = _store({"S1_1": 8, "S2_1": 3, "S3_1": 5})
    with pytest.raises(DatasetError, match=r"seqs: 2 sequence\(s\) have fewer frames than clip-length=6: 'S2_1' "
                                           r"\(3 frames\), 'S3_1' \(5 frames\); lower clip-length to at most 3, or "
                                           r"set clip-short=pad"):
        make_clips(store, np.arange(16), clip_length=6, clip_source="real", short="refuse")
    with caplog.at_level(logging.INFO, logger="fer_models.data.clips"):
        padded = make_clips(store, np.arange(16), clip_length=6, clip_source="real", sampling="uniform")
    assert padded.frames.tolist()[1] == [8 + p for p in _uniform(3, 6)]
    assert "2 sequence(s) shorter than clip-length=6 padded" in caplog.text
    assert len(make_clips(store, np.arange(16), clip_length=3, clip_source="real", short="refuse")) == 3


def test_pseudo_clips_of_a_store_with_sequences_say_to_use_real_clips(caplog) -> None:
    store = dataclasses.replace(_store({"a": 3}), name="seqs-hint")
    with caplog.at_level(logging.WARNING, logger="fer_models.data.clips"):
        make_clips(store, np.arange(3), clip_length=4, clip_source="pseudo")
        make_clips(store, np.arange(3), clip_length=4, clip_source="pseudo")
    assert caplog.text.count("set clip-source=real") == 1


def test_the_run_settings_offer_exactly_the_samplings_and_rules_the_clips_implement() -> None:
    choices = {f.name: f.metadata["choices"] for f in dataclasses.fields(RunConfig)}
    assert choices["clip_sampling"] == CLIP_SAMPLINGS and choices["clip_short"] == SHORT_RULES
    assert set(choices["data_format"]) == set(DATA_FORMATS) and "sequences" in DATA_FORMATS
    assert (RunConfig().clip_sampling, RunConfig().clip_short) == ("last", "pad")
