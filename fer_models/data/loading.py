"""One entry point from run settings to a :class:`FaceStore`: synthetic, FER2013 CSV or folder.

Results are memoised per process, so a simulated client asked for its data every round loads
(or generates) it once; real datasets are also cached on disk by :func:`cached_load`.
The returned store is shared: treat its tensors as read-only.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from fer_models.data.cache import cached_load, default_cache_dir
from fer_models.data.errors import DatasetError
from fer_models.data.fer2013 import read_fer2013_csv, read_fer2013_folder
from fer_models.data.store import FaceStore
from fer_models.data.synthetic import generate_synthetic

logger = logging.getLogger(__name__)

DATA_FORMATS: tuple[str, ...] = ("auto", "csv", "folder", "synthetic")


def _resolve_format(path: Path, data_format: str) -> str:
    if data_format != "auto":
        return data_format
    if path.is_dir():
        return "folder"
    if path.is_file() and path.suffix.lower() == ".csv":
        return "csv"
    raise DatasetError(f"{path}: cannot tell its format; supported are a FER2013 CSV file (*.csv, "
                       f"columns emotion,pixels,Usage) or an image folder (train/<class>/*, "
                       f"test/<class>/*); or set data-format to csv or folder")


@functools.lru_cache(maxsize=8)
def _synthetic(seed: int, per_class: int, eval_per_class: int) -> FaceStore:
    return generate_synthetic(seed=seed, per_class=per_class, eval_per_class=eval_per_class)


@functools.lru_cache(maxsize=4)
def _real(path: Path, data_format: str, cache_dir: Path) -> FaceStore:
    if data_format == "csv":
        return cached_load(source=path, reader_name="fer2013-csv", cache_dir=cache_dir,
                           reader=lambda: read_fer2013_csv(path=path))
    return cached_load(source=path, reader_name="fer2013-folder", cache_dir=cache_dir,
                       reader=lambda: read_fer2013_folder(path=path))


def clear_memo() -> None:
    """Forget the in-process memo (the on-disk cache stays)."""
    _synthetic.cache_clear()
    _real.cache_clear()


def load_dataset(*, data_path: str = "", data_format: str = "auto", cache_dir: str = "", seed: int = 0,
                 synthetic_per_class: int = 240, synthetic_eval_per_class: int = 60) -> FaceStore:
    """The dataset a run asks for: empty path or ``synthetic`` -> SYNTHETIC faces, else FER2013."""
    if data_format not in DATA_FORMATS:
        raise DatasetError(f"unknown data format {data_format!r}: expected one of {', '.join(DATA_FORMATS)}")
    if not data_path or data_format == "synthetic":
        if data_path:
            logger.warning("data-format is synthetic: ignoring data-path %s", data_path)
        return _synthetic(seed, synthetic_per_class, synthetic_eval_per_class)
    path = Path(data_path).expanduser().resolve()
    if not path.exists():
        raise DatasetError(f"{path} does not exist: give the path of a FER2013 CSV file or image "
                           f"folder, or leave data-path empty for the synthetic faces")
    fmt = _resolve_format(path, data_format)
    directory = Path(cache_dir).expanduser().resolve() if cache_dir else default_cache_dir().resolve()
    return _real(path, fmt, directory)
