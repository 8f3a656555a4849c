"""The FER2013 CSV reader: labels, splits and pixels exactly as written; clear errors otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fer_models.common.labels import EMOTIONS
from fer_models.data import DatasetError, read_fer2013_csv
from fer_models.data.store import split_code

USAGES = ("Training", "PublicTest", "PrivateTest")
USAGE_SPLIT = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}


def _pixels(row: int) -> np.ndarray:
    return ((np.arange(48 * 48) * 7 + row * 13) % 256).astype(np.uint8)


def _write(path: Path, rows: list[str], header: str = "emotion,pixels,Usage") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _fixture_rows() -> list[tuple[int, str, np.ndarray]]:
    """3 rows per class, one per Usage value: (label, usage, pixels)."""
    rows = []
    for label in range(len(EMOTIONS)):
        for usage in USAGES:
            rows.append((label, usage, _pixels(len(rows))))
    return rows


def _row(label: int | str, pixels: str, usage: str) -> str:
    return f"{label},{pixels},{usage}"


def _good_csv(tmp_path: Path) -> Path:
    rows = [_row(label, " ".join(map(str, px)), usage) for label, usage, px in _fixture_rows()]
    return _write(tmp_path / "fer2013.csv", rows)


def test_csv_labels_splits_and_pixels_are_exact(tmp_path: Path) -> None:
    store = read_fer2013_csv(path=_good_csv(tmp_path))
    expected = _fixture_rows()
    assert len(store) == len(expected) == 21
    assert store.images.shape == (21, 48, 48)
    assert store.name == "fer2013" and not store.synthetic
    for i, (label, usage, px) in enumerate(expected):
        assert int(store.labels[i]) == label
        assert int(store.splits[i]) == split_code(USAGE_SPLIT[usage])
        np.testing.assert_array_equal(store.images[i].numpy(), px.reshape(48, 48))
    for split in ("train", "val", "test"):
        assert store.class_counts(split) == {e: 1 for e in EMOTIONS}


def test_csv_ignores_extra_columns_and_column_order(tmp_path: Path) -> None:
    px = " ".join(map(str, _pixels(0)))
    path = _write(tmp_path / "x.csv", [f"PrivateTest,id7,{px},5"], header="Usage,id,pixels,emotion")
    store = read_fer2013_csv(path=path)
    assert store.labels.tolist() == [5] and store.splits.tolist() == [split_code("test")]


def test_csv_missing_column_lists_columns_found(tmp_path: Path) -> None:
    path = _write(tmp_path / "nousage.csv", ["0," + " ".join(["1"] * 2304)], header="emotion,pixels")
    expected = r"nousage\.csv line 1: missing column\(s\) Usage.*'emotion', 'pixels'"
    with pytest.raises(DatasetError, match=expected):
        read_fer2013_csv(path=path)


def test_csv_bad_pixel_count_names_file_and_line(tmp_path: Path) -> None:
    rows = [_row(0, " ".join(["1"] * 2304), "Training"), _row(1, " ".join(["1"] * 2303), "Training")]
    path = _write(tmp_path / "short.csv", rows)
    with pytest.raises(DatasetError, match=r"short\.csv line 3: got 2303 pixel values, expected 2304"):
        read_fer2013_csv(path=path)


@pytest.mark.parametrize("token, message", [
    ("abc", "'abc' is not an integer"), ("256", "256 is out of range"),
    ("-1", "-1 is out of range"), ("1.5", "'1.5' is not an integer"),
])
def test_csv_bad_pixel_value_names_file_and_line(tmp_path: Path, token: str, message: str) -> None:
    path = _write(tmp_path / "badpx.csv", [_row(0, " ".join(["1"] * 2303 + [token]), "Training")])
    with pytest.raises(DatasetError, match=rf"badpx\.csv line 2: pixel value {message}"):
        read_fer2013_csv(path=path)


@pytest.mark.parametrize("label", ["7", "-1", "happy", ""])
def test_csv_bad_label_names_file_and_line(tmp_path: Path, label: str) -> None:
    path = _write(tmp_path / "badlabel.csv", [_row(label, " ".join(["1"] * 2304), "Training")])
    with pytest.raises(DatasetError, match=r"badlabel\.csv line 2: emotion .* not an integer 0\.\.6"):
        read_fer2013_csv(path=path)


def test_csv_unknown_usage_names_file_line_and_expected_values(tmp_path: Path) -> None:
    path = _write(tmp_path / "usage.csv", [_row(0, " ".join(["1"] * 2304), "Validation")])
    with pytest.raises(DatasetError, match=r"usage\.csv line 2: unknown Usage 'Validation'.*PublicTest"):
        read_fer2013_csv(path=path)


def test_csv_missing_file_and_empty_file_raise(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        read_fer2013_csv(path=tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DatasetError, match=r"empty\.csv is empty"):
        read_fer2013_csv(path=tmp_path / "empty.csv")
    _write(tmp_path / "header.csv", [])
    with pytest.raises(DatasetError, match=r"header\.csv has a header but no data rows"):
        read_fer2013_csv(path=tmp_path / "header.csv")
