"""face-crop: a site's whole-head photos become FER2013-like 48x48 faces, with faces found / fallbacks counted."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fer_models.data.face_crop as face_crop
from fer_models.data import DatasetError, load_dataset, read_jaffe
from fer_models.data.face_crop import CropCounts, crop_square, face_square, fallback_box, square_resize
from fer_models.data.jaffe import EXPRESSIONS


def _photo(side: int, *, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side + 10), dtype=np.uint8)


def test_none_takes_the_centre_square_and_center_takes_the_fixed_face_square():
    photo = _photo(256)
    assert np.array_equal(face_square(photo, mode="none")[0], square_resize(photo))
    face, how = face_square(photo, mode="center")
    x, y, side = fallback_box(*photo.shape)
    assert side == round(0.63 * 256) and how == face_crop.NOT_SEARCHED
    assert np.array_equal(face, crop_square(photo, (x, y, side)))


def test_auto_searches_faces_in_photos_only_and_a_miss_falls_back_and_is_counted(monkeypatch):
    calls = []
    monkeypatch.setattr(face_crop, "face_detector", lambda: "cascade")
    monkeypatch.setattr(face_crop, "detect_face", lambda gray, detector: calls.append(gray.shape) or None)
    small, how_small = face_square(_photo(48), mode="auto")  # already a face: no search
    big, how_big = face_square(_photo(256), mode="auto")
    assert how_small == face_crop.NOT_SEARCHED and calls == [(256, 266)]
    assert how_big == face_crop.FALLBACK and np.array_equal(big, face_square(_photo(256), mode="center")[0])
    assert CropCounts.of(np.array([1, 0, 0, -1])) == CropCounts(found=1, fallbacks=2, not_searched=1)


def test_an_unknown_face_crop_is_refused_with_the_choices(tmp_path):
    with pytest.raises(DatasetError, match="face-crop='tight': expected one of auto, detect, center, none"):
        load_dataset(data_path=str(tmp_path), face_crop="tight")


def _jaffe_manifest(jaffe: Path, out: Path) -> Path:
    rows = ["path,label,subject"]
    for f in sorted(jaffe.glob("*.tiff")):
        m = re.fullmatch(r"([A-Za-z]+)\.([A-Za-z]{2})\d*\.\d+\.tiff?", f.name)
        rows.append(f"{f},{EXPRESSIONS[m[2].upper()]},{m[1]}")
    out.write_text("\n".join(rows) + "\n")
    return out


def test_whole_head_photos_of_a_manifest_get_the_same_faces_as_the_jaffe_reader(shared_data, tmp_path, cache_dir):
    pytest.importorskip("cv2")
    manifest = _jaffe_manifest(shared_data / "jaffe", tmp_path / "jaffe_photos.csv")
    detect = load_dataset(data_path=str(manifest), face_crop="detect", cache_dir=str(cache_dir))
    center = load_dataset(data_path=str(manifest), face_crop="center", cache_dir=str(cache_dir))
    reader = read_jaffe(path=shared_data / "jaffe")
    found = CropCounts.of(detect.meta["face_detected"])
    assert found.found + found.fallbacks == 213 and found.found > 150  # most heads have a detectable face
    assert found == CropCounts.of(reader.meta["face_detected"])
    by_name = {Path(p).name: i for i, p in enumerate(detect.meta["path"])}
    order = [by_name[name] for name in reader.meta["path"]]
    assert np.array_equal(detect.images.numpy()[order], reader.images.numpy())  # one crop for every dataset
    assert CropCounts.of(center.meta["face_detected"]) == CropCounts(found=0, fallbacks=0, not_searched=213)
    first = np.asarray(Image.open(sorted((shared_data / "jaffe").glob("*.tiff"))[0]).convert("L"))
    assert np.array_equal(center.images[by_name[sorted(by_name)[0]]].numpy(),
                          crop_square(first, fallback_box(*first.shape)))
