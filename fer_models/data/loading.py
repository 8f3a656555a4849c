"""One entry point from run settings to a :class:`FaceStore`.

``data_path`` is empty (synthetic faces), one path (FER2013 CSV or folder, CK+, JAFFE, manifest
CSV, a folder of expression sequences; ``data_format`` names it or ``auto`` detects it), or a comma-separated list of
``name=path`` pairs (``fer2013=../shared/data/fer2013,ckplus=...,jaffe=...``): each dataset is
auto-detected, loaded (and disk-cached) on its own, then combined with meta ``group`` = its
name. ``leave_out`` names one group to hold out entirely as the test split.
Results are memoised per process, so a simulated client asked for its data every round loads
(or generates) it once; real datasets are also cached on disk by :func:`cached_load`.
The returned store is shared: treat its tensors as read-only.
"""

from __future__ import annotations

import csv
import functools
import logging
from pathlib import Path

from fer_models.data.cache import cache_root, cached_load
from fer_models.data.ckplus import looks_like_ckplus, read_ckplus
from fer_models.data.combined import combine_stores, holdout_store
from fer_models.data.errors import DatasetError
from fer_models.data.face_crop import check_face_crop
from fer_models.data.fer2013 import read_fer2013_csv, read_fer2013_folder
from fer_models.data.jaffe import looks_like_jaffe, read_jaffe
from fer_models.data.manifest import image_fingerprint, looks_like_manifest, read_manifest
from fer_models.data.sequences import looks_like_sequences, read_sequences
from fer_models.data.store import FaceStore
from fer_models.data.synthetic import generate_synthetic

logger = logging.getLogger(__name__)

DATA_FORMATS: tuple[str, ...] = ("auto", "csv", "folder", "ckplus", "jaffe", "manifest", "sequences", "synthetic")
#: Bump a reader's version here when its output changes, so its old cache files are not reused.
_READER_NAMES: dict[str, str] = {"csv": "fer2013-csv", "folder": "fer2013-folder", "ckplus": "ckplus-v1",
                                 "jaffe": "jaffe-v1", "manifest": "manifest-v4", "sequences": "sequences-v1"}
#: Readers whose images go through face-crop, and the modes their plain reader name stands for (the cache
#: files of other modes carry the mode in their name).
_CROPPED: dict[str, tuple[str, ...]] = {"jaffe": ("auto", "detect"), "manifest": ("auto",), "sequences": ("auto",)}
FORMATS_HELP = ("a FER2013 CSV (columns emotion,pixels,Usage), a manifest CSV (columns path,label,...), "
                 "a FER2013 image folder (train/<class>/*, test/<class>/*), a CK+ folder "
                 "(<class>/S010_004_00000017.png), a JAFFE folder (KA.AN1.39.tiff) or a folder of expression "
                 "sequences ([images/]<emotion>/<sequence>/<frames>, e.g. images/anger/S055_004/S055_004_00000001.png)")


def _csv_format(path: Path) -> str:
    if looks_like_manifest(path):
        return "manifest"
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = {h.strip().lower() for h in next(csv.reader(handle), [])}
    except (OSError, UnicodeDecodeError, csv.Error):
        header = set()
    if {"emotion", "pixels"} <= header or not header:
        return "csv"  # the FER2013 reader reports an empty file or a missing Usage column
    raise DatasetError(f"{path} line 1: header has neither path,label (manifest CSV) nor emotion,pixels "
                       f"(FER2013 CSV); found {', '.join(sorted(header))}")


def _resolve_format(path: Path, data_format: str) -> str:
    if data_format != "auto":
        return data_format
    if path.is_dir():
        if looks_like_sequences(path):
            return "sequences"
        if looks_like_ckplus(path):
            return "ckplus"
        if looks_like_jaffe(path):
            return "jaffe"
        return "folder"
    if path.is_file() and path.suffix.lower() == ".csv":
        return _csv_format(path)
    raise DatasetError(f"{path}: cannot tell its format; supported are {FORMATS_HELP}; "
                       f"or set data-format to one of {', '.join(DATA_FORMATS[1:])}")


@functools.lru_cache(maxsize=8)
def _synthetic(seed: int, per_class: int, eval_per_class: int) -> FaceStore:
    return generate_synthetic(seed=seed, per_class=per_class, eval_per_class=eval_per_class)


@functools.lru_cache(maxsize=8)
def _real(path: Path, data_format: str, cache_dir: Path, face_crop: str = "auto") -> FaceStore:
    readers = {"csv": lambda: read_fer2013_csv(path=path), "folder": lambda: read_fer2013_folder(path=path),
               "ckplus": lambda: read_ckplus(path=path), "jaffe": lambda: read_jaffe(path=path, face_crop=face_crop),
               "manifest": lambda: read_manifest(path=path, face_crop=face_crop),
               "sequences": lambda: read_sequences(path=path, face_crop=face_crop)}
    reader_name = _READER_NAMES[data_format]
    if data_format in _CROPPED and face_crop not in _CROPPED[data_format]:
        reader_name += f"-crop-{face_crop}"
    if data_format == "manifest":  # the CSV's fingerprint alone would miss edited images
        reader_name += "-" + image_fingerprint(path=path)[:12]
    return cached_load(source=path, reader_name=reader_name, cache_dir=cache_dir, reader=readers[data_format])


@functools.lru_cache(maxsize=4)
def _combined(pairs: tuple[tuple[str, Path, str], ...], cache_dir: Path, face_crop: str) -> FaceStore:
    return combine_stores(stores={name: _real(path, fmt, cache_dir, face_crop) for name, path, fmt in pairs})


@functools.lru_cache(maxsize=4)
def _without(pairs: tuple[tuple[str, Path, str], ...], cache_dir: Path, face_crop: str, group: str) -> FaceStore:
    return holdout_store(_combined(pairs, cache_dir, face_crop), group=group)


def clear_memo() -> None:
    """Forget the in-process memo (the on-disk cache stays)."""
    for memo in (_synthetic, _real, _combined, _without):
        memo.cache_clear()


def _existing(path_text: str, *, what: str) -> Path:
    path = Path(path_text.strip()).expanduser().resolve()
    if not path.exists():
        raise DatasetError(f"{path} does not exist: give the path of {what}, or leave data-path empty for "
                           f"the synthetic faces")
    return path


def parse_data_paths(data_path: str) -> list[tuple[str, str]]:
    """``[(name, path), ...]`` of a ``name=path,name=path`` list (names unique, paths non-empty)."""
    pairs: list[tuple[str, str]] = []
    for item in data_path.split(","):
        name, sep, path = (part.strip() for part in item.partition("="))
        if not sep or not name or not path:
            raise DatasetError(f"data-path item {item.strip()!r} is not name=path; expected a single path "
                               f"or a list like fer2013=data/fer2013,ckplus=data/ckplus48,jaffe=data/jaffe")
        if name in (n for n, _ in pairs):
            raise DatasetError(f"data-path names dataset {name!r} twice; each name=path needs its own name")
        pairs.append((name, path))
    return pairs


def load_dataset(*, data_path: str = "", data_format: str = "auto", cache_dir: str = "", seed: int = 0,
                 synthetic_per_class: int = 240, synthetic_eval_per_class: int = 60,
                 leave_out: str = "", face_crop: str = "auto") -> FaceStore:
    """The dataset a run asks for: empty path or ``synthetic`` -> SYNTHETIC faces, else real data.

    ``leave_out`` (only with ``name=path`` lists) names the group held out as the whole test split.
    ``face_crop`` is how photos of JAFFE and manifests are cropped to faces (:mod:`fer_models.data.face_crop`).
    """
    check_face_crop(face_crop)
    if data_format not in DATA_FORMATS:
        raise DatasetError(f"unknown data format {data_format!r}: expected one of {', '.join(DATA_FORMATS)}")
    if not data_path or data_format == "synthetic":
        if data_path:
            logger.warning("data-format is synthetic: ignoring data-path %s", data_path)
        if leave_out:
            raise DatasetError(f"leave-out {leave_out!r} needs several datasets (data-path name=path,...)")
        return _synthetic(seed, synthetic_per_class, synthetic_eval_per_class)
    directory = cache_root(cache_dir).resolve()
    if "=" not in data_path or Path(data_path).expanduser().exists():
        if leave_out:
            raise DatasetError(f"leave-out {leave_out!r} needs several datasets: give data-path as "
                               f"name=path,name=path (e.g. fer2013=...,ckplus=...,jaffe=...)")
        path = _existing(data_path, what=FORMATS_HELP)
        return _real(path, _resolve_format(path, data_format), directory, face_crop)
    if data_format != "auto":
        raise DatasetError(f"data-format {data_format!r} applies to a single path; the datasets of a "
                           f"name=path list are detected one by one (set data-format to auto)")
    pairs = []
    for name, text in parse_data_paths(data_path):
        path = _existing(text, what=f"dataset {name!r} ({FORMATS_HELP})")
        pairs.append((name, path, _resolve_format(path, "auto")))
    if leave_out:
        return _without(tuple(pairs), directory, face_crop, leave_out)
    return _combined(tuple(pairs), directory, face_crop)
