"""The on-disk dataset cache: decode once, invalidate on any change, survive a damaged file."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fer_models.data import FaceStore, cached_load, read_fer2013_folder


class CountingReader:
    """Wraps the folder reader and counts how often decoding really happened."""

    def __init__(self, root: Path) -> None:
        self.root, self.calls = root, 0

    def __call__(self) -> FaceStore:
        self.calls += 1
        return read_fer2013_folder(path=self.root)


def _write_image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(((np.arange(48 * 48).reshape(48, 48) + value) % 256).astype(np.uint8), "L").save(path)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "fer"
    _write_image(root / "train" / "happy" / "Training_1.png", 1)
    _write_image(root / "train" / "sad" / "Training_2.png", 2)
    _write_image(root / "test" / "fear" / "PublicTest_3.png", 3)
    _write_image(root / "test" / "angry" / "PrivateTest_4.png", 4)
    return root


def _load(root: Path, reader: CountingReader, cache_dir: Path) -> FaceStore:
    return cached_load(source=root, reader_name="fer2013-folder", reader=reader, cache_dir=cache_dir)


def test_second_load_comes_from_the_cache_and_is_identical(folder: Path, cache_dir: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    reader = CountingReader(folder)
    with caplog.at_level(logging.INFO, logger="fer_models.data.cache"):
        first = _load(folder, reader, cache_dir)
        second = _load(folder, reader, cache_dir)
    assert reader.calls == 1
    assert "decoding" in caplog.text and "from cache" in caplog.text
    assert second.images.equal(first.images) and second.images.dtype == first.images.dtype
    assert second.labels.equal(first.labels) and second.splits.equal(first.splits)
    assert (second.name, second.source, second.synthetic) == (first.name, first.source, first.synthetic)
    assert list(second.meta["path"]) == list(first.meta["path"])


def test_touching_or_adding_a_file_invalidates_the_cache(folder: Path, cache_dir: Path) -> None:
    reader = CountingReader(folder)
    _load(folder, reader, cache_dir)
    target = folder / "train" / "happy" / "Training_1.png"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    _load(folder, reader, cache_dir)
    assert reader.calls == 2
    _write_image(folder / "test" / "sad" / "PrivateTest_5.png", 5)
    store = _load(folder, reader, cache_dir)
    assert reader.calls == 3 and len(store) == 5
    assert len(list(cache_dir.glob("*.npz"))) == 1, "stale cache files of the same source are removed"


def test_a_single_file_source_is_keyed_on_size_and_mtime(tmp_path: Path, cache_dir: Path) -> None:
    source = tmp_path / "data.csv"
    source.write_text("a")
    calls = []
    store = FaceStore(name="x", images=torch.zeros((1, 4, 4), dtype=torch.uint8),
                      labels=torch.zeros(1, dtype=torch.int64), splits=torch.zeros(1, dtype=torch.int8))

    def reader() -> FaceStore:
        calls.append(1)
        return store

    for _ in range(2):
        cached_load(source=source, reader_name="csv", reader=reader, cache_dir=cache_dir)
    source.write_text("ab")
    cached_load(source=source, reader_name="csv", reader=reader, cache_dir=cache_dir)
    assert len(calls) == 2


def test_a_corrupt_cache_file_is_rebuilt(folder: Path, cache_dir: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    reader = CountingReader(folder)
    first = _load(folder, reader, cache_dir)
    (cache_file,) = cache_dir.glob("*.npz")
    cache_file.write_bytes(b"garbage" * 10)
    with caplog.at_level(logging.WARNING, logger="fer_models.data.cache"):
        rebuilt = _load(folder, reader, cache_dir)
    assert reader.calls == 2 and "unreadable" in caplog.text
    assert rebuilt.images.equal(first.images)
    again = _load(folder, reader, cache_dir)
    assert reader.calls == 2 and again.images.equal(first.images)


def test_an_unwritable_cache_dir_still_returns_the_data(folder: Path, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    reader = CountingReader(folder)
    with caplog.at_level(logging.WARNING, logger="fer_models.data.cache"):
        store = _load(folder, reader, blocker)
    assert len(store) == 4 and "could not write dataset cache" in caplog.text


def test_default_cache_dir_follows_fedfer_cache(folder: Path, cache_dir: Path) -> None:
    cached_load(source=folder, reader_name="fer2013-folder", reader=CountingReader(folder), cache_dir=None)
    assert len(list(cache_dir.glob("fer2013-folder-fer-*.npz"))) == 1
