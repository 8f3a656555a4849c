"""The FER2013 image-folder reader: splits from file-name prefixes, clear errors, real counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fer_models.common.labels import label_index
from fer_models.data import DatasetError, load_dataset, read_fer2013_folder
from fer_models.data.store import split_code


def _face(value: int, size: tuple[int, int] = (48, 48)) -> Image.Image:
    h, w = size[1], size[0]
    return Image.fromarray(((np.arange(h * w).reshape(h, w) + value) % 256).astype(np.uint8), "L")


def _write_image(path: Path, value: int, size: tuple[int, int] = (48, 48)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _face(value, size).save(path)


def _make_prefixed(root: Path) -> dict[str, tuple[str, int]]:
    """Kaggle layout with official prefixes; returns relative path -> (split, value)."""
    files = {
        "train/happy/Training_001.png": ("train", 1),
        "train/angry/Training_002.png": ("train", 2),
        "test/sad/PublicTest_003.png": ("val", 3),
        "test/disgust/PrivateTest_004.png": ("test", 4),
        "test/neutral/PublicTest_005.jpg": ("val", 5),
        "test/surprise/PrivateTest_006.jpg": ("test", 6),
        "train/fear/Training_007.jpg": ("train", 7),
    }
    for rel, (_, value) in files.items():
        _write_image(root / rel, value)
    return files


def test_folder_splits_come_from_file_name_prefixes(tmp_path: Path) -> None:
    files = _make_prefixed(tmp_path)
    (tmp_path / "train" / "happy" / "notes.txt").write_text("not an image")
    store = read_fer2013_folder(path=tmp_path)
    assert list(store.meta["path"]) == sorted(files)
    assert store.images.shape == (7, 48, 48)
    for i, rel in enumerate(store.meta["path"]):
        split, value = files[rel]
        assert int(store.splits[i]) == split_code(split)
        assert int(store.labels[i]) == label_index(rel.split("/")[1])
        if rel.endswith(".png"):  # lossless: exact pixels
            np.testing.assert_array_equal(store.images[i].numpy(), np.asarray(_face(value)))


def test_folder_without_prefixes_uses_the_split_folders(tmp_path: Path) -> None:
    _write_image(tmp_path / "train" / "Happiness" / "a.png", 1)
    _write_image(tmp_path / "validation" / "surprised" / "b.bmp", 2)
    _write_image(tmp_path / "test" / "anger" / "c.tif", 3)
    store = read_fer2013_folder(path=tmp_path)
    assert list(store.meta["path"]) == ["test/anger/c.tif", "train/Happiness/a.png",
                                        "validation/surprised/b.bmp"]
    assert store.splits.tolist() == [split_code("test"), split_code("train"), split_code("val")]
    assert store.labels.tolist() == [label_index("angry"), label_index("happy"), label_index("surprise")]


def test_folder_is_deterministic(tmp_path: Path) -> None:
    _make_prefixed(tmp_path)
    a, b = read_fer2013_folder(path=tmp_path), read_fer2013_folder(path=tmp_path)
    assert a.images.equal(b.images) and a.labels.equal(b.labels) and a.splits.equal(b.splits)


def test_unknown_class_folder_is_named(tmp_path: Path) -> None:
    _write_image(tmp_path / "train" / "contempt" / "a.png", 1)
    with pytest.raises(DatasetError, match=r"train/contempt: class folder name is not an emotion"):
        read_fer2013_folder(path=tmp_path)


def test_image_of_another_size_is_named_with_both_sizes(tmp_path: Path) -> None:
    _make_prefixed(tmp_path)
    _write_image(tmp_path / "train" / "happy" / "Training_big.png", 9, size=(64, 50))
    with pytest.raises(DatasetError, match=r"Training_big\.png: image is 64x50, expected 48x48"):
        read_fer2013_folder(path=tmp_path)


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    _make_prefixed(tmp_path)
    (tmp_path / "train" / "happy" / "Training_broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DatasetError, match=r"Training_broken\.jpg: cannot decode image"):
        read_fer2013_folder(path=tmp_path)


def test_image_outside_a_class_folder_is_named(tmp_path: Path) -> None:
    _write_image(tmp_path / "train" / "loose.png", 1)
    with pytest.raises(DatasetError, match=r"loose\.png is not inside a class folder"):
        read_fer2013_folder(path=tmp_path)


def test_missing_path_and_wrong_layout_raise(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nowhere does not exist"):
        read_fer2013_folder(path=tmp_path / "nowhere")
    _write_image(tmp_path / "happy" / "a.png", 1)
    with pytest.raises(DatasetError, match=r"neither a train/ nor a test/ folder: expected <root>/train/"):
        read_fer2013_folder(path=tmp_path)
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match=r"contains no images"):
        read_fer2013_folder(path=tmp_path)


def test_load_dataset_picks_the_folder_reader(tmp_path: Path, cache_dir: Path) -> None:
    _make_prefixed(tmp_path / "fer")
    store = load_dataset(data_path=str(tmp_path / "fer"))
    assert len(store) == 7 and store.meta["path"][0] == "test/disgust/PrivateTest_004.png"
    assert list(cache_dir.glob("*.npz")), "real datasets are cached on disk"
    (tmp_path / "faces.txt").write_text("x")
    with pytest.raises(DatasetError, match="cannot tell its format"):
        load_dataset(data_path=str(tmp_path / "faces.txt"))


TRAIN = {"angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "neutral": 4965, "sad": 4830,
         "surprise": 3171}
TEST_FOLDER = {"angry": 958, "disgust": 111, "fear": 1024, "happy": 1774, "neutral": 1233, "sad": 1247,
               "surprise": 831}
PRIVATE = {"angry": 491, "disgust": 55, "fear": 528, "happy": 879, "neutral": 626, "sad": 594,
           "surprise": 416}


def test_real_fer2013_folder_has_the_official_split_counts(shared_data: Path, cache_dir: Path) -> None:
    store = load_dataset(data_path=str(shared_data / "fer2013"), cache_dir=str(cache_dir))
    assert store.image_size == (48, 48) and len(store) == 35_887
    assert store.class_counts("train") == {k: TRAIN[k] for k in store.class_counts()}
    assert store.class_counts("val") == {k: TEST_FOLDER[k] - PRIVATE[k] for k in store.class_counts()}
    assert store.class_counts("test") == {k: PRIVATE[k] for k in store.class_counts()}
    # FER2013's known exact duplicates across splits are found, and each example really is one
    from fer_models.data.duplicates import cross_split_duplicates

    found = cross_split_duplicates(store)
    assert found.groups > 0 and found.images >= found.groups
    path_index = {p: i for i, p in enumerate(store.meta["path"])}
    for example in found.examples:
        first, *others = (path_index[part.rsplit(" (", 1)[0]] for part in example.split(" = "))
        assert others and all(torch.equal(store.images[first], store.images[i]) for i in others)
