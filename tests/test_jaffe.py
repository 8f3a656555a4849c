"""The JAFFE reader: face crops to 48x48, the documented fallback, labels, poser-disjoint splits."""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_models.common.labels import label_index
from fer_models.data import DatasetError, load_dataset, read_jaffe
from fer_models.data.face_crop import face_detector
from fer_models.data.jaffe import EXPRESSIONS, crop_square, detect_face, fallback_box
from fer_models.data.subjects import check_disjoint

needs_cv2 = pytest.mark.skipif(importlib.util.find_spec("cv2") is None,
                               reason="opencv-python-headless is not installed")

POSERS = ("KA", "KL", "KM", "KR", "MK", "NA", "NM", "TM", "UY", "YM")


def _write(path: Path, *, palette: bool = False, size: int = 64) -> None:
    """A plain grey head-less image (no face to find), optionally as a palette TIFF."""
    image = Image.fromarray(np.full((size, size), 120, dtype=np.uint8), "L")
    (image.convert("P") if palette else image).save(path)


@pytest.fixture()
def jaffe(tmp_path: Path) -> Path:
    root = tmp_path / "jaffe"
    root.mkdir()
    n = 0
    for poser in POSERS:
        for code in ("AN", "HA", "NE"):
            n += 1
            _write(root / f"{poser}.{code}1.{n}.tiff", palette=n % 4 == 0)
    (root / "README.txt").write_text("not an image")
    return root


@needs_cv2
def test_every_image_becomes_a_48x48_crop_labelled_from_its_expression_code(jaffe: Path) -> None:
    store = read_jaffe(path=jaffe)
    assert store.name == "jaffe" and len(store) == 30 and store.image_size == (48, 48)
    for name, label in zip(store.meta["path"], store.labels.tolist()):
        assert label == label_index(EXPRESSIONS[name.split(".")[1][:2]])
    assert set(store.meta["subject"]) == set(POSERS)


def test_the_expression_codes_map_onto_the_canonical_labels() -> None:
    assert EXPRESSIONS == {"AN": "angry", "DI": "disgust", "FE": "fear", "HA": "happy", "NE": "neutral",
                           "SA": "sad", "SU": "surprise"}


@needs_cv2
def test_images_without_a_face_use_the_fallback_crop_and_are_counted(
        jaffe: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fer_models.data.jaffe"):
        store = read_jaffe(path=jaffe)
    assert "no face found in 30 of 30" in caplog.text
    assert store.meta["face_detected"].tolist() == [0] * 30
    assert (store.images == 120).all()  # palette images decode to the same grey


@needs_cv2
def test_splits_are_poser_disjoint_seven_one_two(jaffe: Path) -> None:
    store = read_jaffe(path=jaffe)
    assert check_disjoint(store.meta["subject"], store.splits.numpy()) == []
    posers = [len(np.unique(store.meta["subject"][store.indices(s)])) for s in ("train", "val", "test")]
    assert posers == [7, 1, 2]


def test_the_fallback_box_is_jaffes_median_face_square() -> None:
    assert fallback_box(256, 256) == (50, 65, 161)


@needs_cv2
def test_crop_square_shifts_a_box_that_sticks_out_back_inside_the_image() -> None:
    gray = np.zeros((100, 100), dtype=np.uint8)
    gray[:, 50:] = 200
    crop = crop_square(gray, (80, -10, 40))  # would cover x 80..120, y -10..30
    assert crop.shape == (48, 48) and (crop == 200).all()  # moved to x 60..100, all bright


class _TwoFaces:
    def detectMultiScale(self, gray, **kwargs):  # noqa: N802 - OpenCV's name
        return np.array([[10, 10, 30, 30], [40, 20, 60, 60]])


def test_detect_face_keeps_the_largest_face() -> None:
    assert detect_face(np.zeros((128, 128), np.uint8), detector=_TwoFaces()) == (40, 20, 60)


def test_a_missing_opencv_names_the_package_to_install(jaffe: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` raise ImportError
    face_detector.cache_clear()  # the cascade is loaded once per process
    try:
        with pytest.raises(DatasetError, match=r"pip install \"opencv-python-headless<5\""):
            read_jaffe(path=jaffe)
    finally:
        face_detector.cache_clear()


@needs_cv2
def test_a_tiff_not_named_like_jaffe_is_reported(jaffe: Path) -> None:
    _write(jaffe / "portrait.tiff")
    with pytest.raises(DatasetError, match=r"portrait\.tiff: file name does not follow <poser>"):
        read_jaffe(path=jaffe)


@needs_cv2
def test_an_unknown_expression_code_is_reported(jaffe: Path) -> None:
    _write(jaffe / "KA.XX1.99.tiff")
    with pytest.raises(DatasetError, match=r"KA\.XX1\.99\.tiff: unknown expression code 'XX'"):
        read_jaffe(path=jaffe)


@needs_cv2
def test_load_dataset_detects_a_jaffe_folder(jaffe: Path, cache_dir: Path) -> None:
    assert load_dataset(data_path=str(jaffe), cache_dir=str(cache_dir)).name == "jaffe"


# --- real data ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_jaffe(shared_data: Path):
    return load_dataset(data_path=str(shared_data / "jaffe"))  # disk-cached after the first run


@needs_cv2
def test_real_jaffe_has_213_crops_of_48x48_from_10_posers(real_jaffe, shared_data: Path) -> None:
    assert len(real_jaffe) == 213 and real_jaffe.image_size == (48, 48)
    assert sorted(set(real_jaffe.meta["subject"])) == sorted(POSERS)
    codes = Counter(re.match(r"\w+\.(\w\w)", p.name)[1] for p in (shared_data / "jaffe").glob("*.tiff"))
    assert real_jaffe.class_counts() == {EXPRESSIONS[c]: n for c, n in codes.items()}


@needs_cv2
def test_real_jaffe_faces_are_found_in_nearly_every_image(real_jaffe) -> None:
    assert real_jaffe.meta["face_detected"].sum() >= 200  # 213 of 213 with OpenCV 4.14


@needs_cv2
def test_real_jaffe_splits_are_poser_disjoint(real_jaffe) -> None:
    assert check_disjoint(real_jaffe.meta["subject"], real_jaffe.splits.numpy()) == []
    posers = [len(np.unique(real_jaffe.meta["subject"][real_jaffe.indices(s)])) for s in ("train", "val", "test")]
    assert posers == [7, 1, 2]
