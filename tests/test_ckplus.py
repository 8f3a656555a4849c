"""The CK+ reader: canonical labels, contempt handling, sequence meta, subject-disjoint splits."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_models.common.labels import EMOTIONS, label_index
from fer_models.data import DatasetError, load_dataset, read_ckplus
from fer_models.data.subjects import SplitError, check_disjoint, split_counts, subject_split


def _write(path: Path, value: int, size: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8), "L").save(path)


def _sequence(root: Path, cls: str, subject: int, seq: int, frames: range) -> None:
    for f in frames:
        _write(root / cls / f"S{subject:03d}_{seq:03d}_{f:08d}.png", (subject * 10 + f) % 256)


@pytest.fixture()
def ck(tmp_path: Path) -> Path:
    root = tmp_path / "ck"
    _sequence(root, "anger", 10, 4, range(17, 20))
    _sequence(root, "sadness", 10, 5, range(7, 10))
    _sequence(root, "contempt", 11, 1, range(1, 4))
    _sequence(root, "happy", 12, 2, range(30, 33))
    _sequence(root, "surprise", 13, 1, range(5, 8))
    _sequence(root, "disgust", 14, 3, range(2, 5))
    _sequence(root, "fear", 15, 2, range(9, 12))
    return root


def test_labels_map_onto_canonical_names_and_contempt_is_dropped_with_a_log(
        ck: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fer_models.data.ckplus"):
        store = read_ckplus(path=ck)
    assert store.name == "ckplus" and len(store) == 18 and store.image_size == (48, 48)
    assert "dropped 3 contempt" in caplog.text
    by_path = dict(zip(store.meta["path"], store.labels.tolist()))
    assert by_path["anger/S010_004_00000017.png"] == label_index("angry")
    assert by_path["sadness/S010_005_00000007.png"] == label_index("sad")
    assert store.class_counts() == {"angry": 3, "disgust": 3, "fear": 3, "happy": 3, "sad": 3,
                                    "surprise": 3, "neutral": 0}


def test_keep_contempt_files_it_under_disgust(ck: Path) -> None:
    store = read_ckplus(path=ck, keep_contempt=True)
    assert len(store) == 21 and store.class_counts()["disgust"] == 6


def test_meta_names_subject_sequence_frame_and_path(ck: Path) -> None:
    store = read_ckplus(path=ck)
    i = list(store.meta["path"]).index("anger/S010_004_00000018.png")
    assert store.meta["subject"][i] == "S010"
    assert store.meta["sequence"][i] == "S010_004"
    assert store.meta["frame"][i] == 18 and store.meta["frame"].dtype == np.int64


def test_splits_are_by_subject_and_every_split_gets_a_subject(ck: Path) -> None:
    store = read_ckplus(path=ck)
    assert check_disjoint(store.meta["subject"], store.splits.numpy()) == []
    assert all(store.has_split(s) for s in ("train", "val", "test"))
    assert read_ckplus(path=ck).splits.equal(store.splits)  # seeded: same split every time


def test_a_file_not_named_like_ckplus_is_reported(ck: Path) -> None:
    _write(ck / "happy" / "face01.png", 1)
    with pytest.raises(DatasetError, match=r"face01\.png: file name does not follow S<subject>"):
        read_ckplus(path=ck)


def test_an_unknown_class_folder_is_reported(ck: Path) -> None:
    _sequence(ck, "boredom", 20, 1, range(1, 2))
    with pytest.raises(DatasetError, match=r"boredom: class folder name is not an emotion"):
        read_ckplus(path=ck)


def test_an_image_that_is_not_48x48_is_reported(ck: Path) -> None:
    _write(ck / "happy" / "S030_001_00000001.png", 5, size=64)
    with pytest.raises(DatasetError, match=r"S030_001_00000001\.png: image is 64x64, expected 48x48"):
        read_ckplus(path=ck)


def test_a_missing_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nowhere does not exist"):
        read_ckplus(path=tmp_path / "nowhere")


def test_load_dataset_detects_a_ckplus_folder(ck: Path, cache_dir: Path) -> None:
    store = load_dataset(data_path=str(ck), cache_dir=str(cache_dir))
    assert store.name == "ckplus" and len(store) == 18
    assert load_dataset(data_path=str(ck), data_format="ckplus", cache_dir=str(cache_dir)) is store


@pytest.mark.parametrize("n,expected", [(0, [0, 0, 0]), (1, [1, 0, 0]), (2, [1, 0, 1]), (3, [1, 1, 1]),
                                        (10, [7, 1, 2]), (106, [74, 16, 16]), (118, [82, 18, 18])])
def test_split_counts_give_every_split_a_subject_from_three_on(n: int, expected: list[int]) -> None:
    assert split_counts(n).tolist() == expected


def test_subject_split_is_seeded_and_never_puts_a_subject_in_two_splits() -> None:
    subjects = np.random.default_rng(1).integers(0, 40, size=500).astype(str)
    a, b = subject_split(subjects, seed=3), subject_split(subjects, seed=3)
    assert a.dtype == np.int8 and a.tolist() == b.tolist()
    assert check_disjoint(subjects, a) == [] and set(a.tolist()) == {0, 1, 2}
    assert subject_split(subjects, seed=4).tolist() != a.tolist()


def test_bad_split_fractions_are_rejected() -> None:
    with pytest.raises(SplitError, match=r"summing to 1"):
        subject_split(np.array(["a", "b"]), seed=0, fractions=(0.5, 0.5, 0.5))


# --- real data ------------------------------------------------------------------------------------

REAL_COUNTS = {"angry": 135, "disgust": 177, "fear": 75, "happy": 207, "sad": 84, "surprise": 249,
               "neutral": 0}


@pytest.fixture(scope="module")
def real_ck(shared_data: Path):
    return read_ckplus(path=shared_data / "ckplus48"), read_ckplus(path=shared_data / "ckplus48",
                                                                   keep_contempt=True)


def test_real_ckplus_without_contempt_has_927_images_309_sequences_106_subjects(real_ck) -> None:
    store, _ = real_ck
    assert len(store) == 927 and store.image_size == (48, 48)
    assert store.class_counts() == REAL_COUNTS
    assert len(np.unique(store.meta["sequence"])) == 309 and len(np.unique(store.meta["subject"])) == 106


def test_real_ckplus_with_contempt_has_981_images_327_sequences_118_subjects(real_ck) -> None:
    _, store = real_ck
    assert len(store) == 981 and store.class_counts() == {**REAL_COUNTS, "disgust": 177 + 54}
    assert len(np.unique(store.meta["sequence"])) == 327 and len(np.unique(store.meta["subject"])) == 118


def test_real_ckplus_splits_are_subject_disjoint_near_70_15_15(real_ck) -> None:
    for store in real_ck:
        assert check_disjoint(store.meta["subject"], store.splits.numpy()) == []
        per_split = [len(np.unique(store.meta["subject"][store.indices(s)])) for s in ("train", "val", "test")]
        total = sum(per_split)
        assert abs(per_split[0] / total - 0.7) < 0.02 and min(per_split) >= 0.14 * total
    assert set(EMOTIONS[i] for i in real_ck[0].labels.unique().tolist()) == set(REAL_COUNTS) - {"neutral"}
