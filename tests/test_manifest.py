"""The manifest CSV reader: paths, labels, resizing, the three split rules and line-numbered errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_models.common.labels import label_index
from fer_models.data import DatasetError, load_dataset, read_manifest
from fer_models.data.face_crop import square_resize
from fer_models.data.loading import clear_memo
from fer_models.data.subjects import check_disjoint


def _image(path: Path, value: int = 100, size: tuple[int, int] = (48, 48), mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, value, value)).save(path)
    return path


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_paths_labels_and_any_image_size_become_48x48_faces(tmp_path: Path) -> None:
    _image(tmp_path / "img" / "a.png", 10)
    _image(tmp_path / "img" / "b.jpg", 200, size=(100, 60), mode="RGB")
    absolute = _image(tmp_path / "elsewhere" / "c.bmp", 50, size=(30, 30))
    csv_path = _csv(tmp_path / "faces.csv", "path,label",
                    ["img/a.png,anger", "img/b.jpg,Happy", f"{absolute},6"])
    store = read_manifest(path=csv_path)
    assert store.name == "faces" and len(store) == 3 and store.image_size == (48, 48)
    assert store.labels.tolist() == [label_index("angry"), label_index("happy"), label_index("neutral")]
    assert abs(int(store.images[1].float().mean()) - 200) <= 2
    assert list(store.meta["path"]) == ["img/a.png", "img/b.jpg", str(absolute)]


def test_square_resize_keeps_the_centre_square() -> None:
    gray = np.zeros((48, 96), dtype=np.uint8)
    gray[:, 24:72] = 255  # the centre square is white, the sides black
    assert (square_resize(gray) == 255).all()
    assert square_resize(np.zeros((200, 100), np.uint8)).shape == (48, 48)


def test_the_split_column_decides_the_split_and_meta_columns_are_kept(tmp_path: Path) -> None:
    for n in range(3):
        _image(tmp_path / f"{n}.png", n)
    csv_path = _csv(tmp_path / "m.csv", "path,label,group,subject,sequence,frame,split",
                    ["0.png,sad,siteA,p1,p1_s1,2,train", "1.png,sad,siteA,p1,p1_s1,1,train",
                     "2.png,fear,siteB,p2,,,test"])
    store = read_manifest(path=csv_path)
    assert store.splits.tolist() == [0, 0, 2]
    assert list(store.meta["group"]) == ["siteA", "siteA", "siteB"]
    assert list(store.meta["sequence"]) == ["p1_s1", "p1_s1", ""]
    assert store.meta["frame"].tolist() == [2, 1, -1]


def test_without_a_split_column_subjects_never_share_two_splits(tmp_path: Path) -> None:
    rows = []
    for subject in range(10):
        for k in range(4):
            rows.append(f"{_image(tmp_path / f's{subject}_{k}.png', k).name},{k % 7},s{subject}")
    store = read_manifest(path=_csv(tmp_path / "m.csv", "path,label,subject", rows))
    assert check_disjoint(store.meta["subject"], store.splits.numpy()) == []
    assert [len(np.unique(store.meta["subject"][store.indices(s)])) for s in ("train", "val", "test")] == [7, 1, 2]


def test_without_subjects_images_are_split_stratified_by_class(tmp_path: Path) -> None:
    rows = [f"{_image(tmp_path / f'{i}.png', i).name},{i % 2}" for i in range(40)]
    store = read_manifest(path=_csv(tmp_path / "m.csv", "path,label", rows))
    for split, expected in (("train", 14), ("val", 3), ("test", 3)):
        assert store.class_counts(split)["angry"] == expected and store.class_counts(split)["disgust"] == expected


@pytest.mark.parametrize("header,row,message", [
    ("file,label", "a.png,happy", r"m\.csv line 1: missing column\(s\) path"),
    ("path,label", "a.png,bored", r"m\.csv line 2: label 'bored' is not an emotion"),
    ("path,label", "a.png,9", r"m\.csv line 2: label '9' is not an emotion"),
    ("path,label", "missing.png,happy", r"m\.csv line 2: image .*missing\.png does not exist"),
    ("path,label", "broken.png,happy", r"m\.csv line 2: cannot decode image .*broken\.png"),
    ("path,label,split", "a.png,happy,holdout", r"m\.csv line 2: split 'holdout' is not one of train"),
    ("path,label,subject", "a.png,happy,", r"m\.csv line 2: empty subject"),
    ("path,label,frame", "a.png,happy,x", r"m\.csv line 2: frame 'x' is not an integer"),
])
def test_bad_rows_are_reported_with_the_csv_and_its_line(tmp_path: Path, header: str, row: str, message: str) -> None:
    _image(tmp_path / "a.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=message):
        read_manifest(path=_csv(tmp_path / "m.csv", header, [row]))


def test_a_sequence_split_across_two_splits_is_reported(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png")
    csv_path = _csv(tmp_path / "m.csv", "path,label,sequence,split", ["a.png,sad,q,train", "b.png,sad,q,test"])
    with pytest.raises(DatasetError, match=r"m\.csv line 3: sequence 'q' is in split test but in train on line 2"):
        read_manifest(path=csv_path)


def test_an_image_listed_twice_is_used_once_and_counted(tmp_path: Path, caplog) -> None:
    for n in range(4):
        _image(tmp_path / f"{n}.png", 10 * n)
    rows = ["0.png,sad", "1.png,happy", "./0.png,sad", "2.png,fear", "3.png,fear", f"{tmp_path / '1.png'},happy"]
    with caplog.at_level("WARNING"):
        store = read_manifest(path=_csv(tmp_path / "m.csv", "path,label", rows))
    assert len(store) == 4 and sorted(store.meta["path"]) == ["0.png", "1.png", "2.png", "3.png"]
    assert "2 rows repeat an image" in caplog.text


@pytest.mark.parametrize("second, what", [("a.png,happy,train", "label"), ("a.png,sad,test", "split")])
def test_an_image_listed_twice_with_another_label_or_split_is_refused(tmp_path: Path, second, what) -> None:
    _image(tmp_path / "a.png")
    csv_path = _csv(tmp_path / "m.csv", "path,label,split", ["a.png,sad,train", second])
    with pytest.raises(DatasetError, match=rf"m\.csv line 3: image .*a\.png is listed again \(first on line 2\) "
                                           rf"with another {what}"):
        read_manifest(path=csv_path)


def test_identical_pixels_in_train_and_test_are_reported(tmp_path: Path) -> None:
    from fer_models.data.duplicates import cross_split_duplicates

    for name, value in (("a", 10), ("b", 10), ("c", 90), ("d", 90), ("e", 150)):
        _image(tmp_path / f"{name}.png", value)
    rows = ["a.png,sad,train", "b.png,sad,test", "c.png,sad,train", "d.png,sad,train", "e.png,sad,val"]
    found = cross_split_duplicates(read_manifest(path=_csv(tmp_path / "m.csv", "path,label,split", rows)))
    assert (found.images, found.groups) == (1, 1)  # a/b cross splits; c/d are both train
    assert found.examples == ("a.png (train) = b.png (test)",)


def test_load_dataset_detects_a_manifest_and_rejects_an_unknown_csv(tmp_path: Path, cache_dir: Path) -> None:
    _image(tmp_path / "a.png")
    store = load_dataset(data_path=str(_csv(tmp_path / "m.csv", "path,label", ["a.png,sad"])))
    assert store.name == "m" and len(store) == 1
    with pytest.raises(DatasetError, match=r"other\.csv line 1: header has neither path,label"):
        load_dataset(data_path=str(_csv(tmp_path / "other.csv", "image,emotion", ["a.png,sad"])))


def test_the_cache_notices_an_edited_image(tmp_path: Path, cache_dir: Path) -> None:
    image = _image(tmp_path / "a.png", 10)
    csv_path = _csv(tmp_path / "m.csv", "path,label", ["a.png,sad"])
    assert int(load_dataset(data_path=str(csv_path)).images[0, 0, 0]) == 10
    clear_memo()
    _image(image, 99)
    os.utime(image, ns=(1, 1))  # a different mtime even on coarse file systems
    assert int(load_dataset(data_path=str(csv_path)).images[0, 0, 0]) == 99
