"""Reader for JAFFE: flat ``<poser>.<EXPR><n>.<id>.tiff`` (e.g. ``KA.AN1.39.tiff``), 256x256 heads.

FER2013 faces are tight 48x48 crops, JAFFE images show the whole head and background, so each
image is decoded to grayscale ("P" palette and other modes converted to "L") and cropped to its
face by :mod:`fer_models.data.face_crop` (``face-crop``; ``auto`` = ``detect``: Haar cascade, the
fixed central square as fallback, counted in the log and marked by meta ``face_detected == 0``).
Splits are poser-disjoint (7/1/2 posers).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch

from fer_models.common.labels import IMAGE_SIDE, label_index
from fer_models.data.errors import DatasetError
from fer_models.data.face_crop import (
    FALLBACK_BOX,
    CropCounts,
    check_face_crop,
    crop_square,
    detect_face,
    face_square,
    fallback_box,
)
from fer_models.data.images import decode_grayscale
from fer_models.data.store import FaceStore
from fer_models.data.subjects import SPLIT_SEED, subject_split

logger = logging.getLogger(__name__)

SIDE = IMAGE_SIDE
EXPRESSIONS: dict[str, str] = {"AN": "angry", "DI": "disgust", "FE": "fear", "HA": "happy",
                               "NE": "neutral", "SA": "sad", "SU": "surprise"}
FILE_PATTERN = re.compile(r"([A-Za-z]+)\.([A-Za-z]{2})(\d*)\.(\d+)\.tiff?", re.IGNORECASE)
#: 10 posers -> 7 train, 1 val, 2 test.
POSER_FRACTIONS: tuple[float, float, float] = (0.7, 0.1, 0.2)
_LAYOUT = ("expected a flat folder of <poser>.<EXPR><n>.<id>.tiff files (e.g. KA.AN1.39.tiff) with EXPR "
           "one of " + " ".join(EXPRESSIONS))


def looks_like_jaffe(root: Path) -> bool:
    """True when ``root`` directly holds a ``.tiff`` file named like JAFFE's ``KA.AN1.39.tiff``."""
    try:
        return any(FILE_PATTERN.fullmatch(f.name) for f in root.iterdir() if f.is_file())
    except OSError:
        return False


def _list(root: Path) -> list[tuple[Path, str, int]]:
    """``(file, poser, label)`` per image, sorted by name."""
    entries: list[tuple[Path, str, int]] = []
    for file in sorted(f for f in root.iterdir() if f.is_file() and not f.name.startswith(".")):
        if file.suffix.lower() not in (".tif", ".tiff"):
            continue
        match = FILE_PATTERN.fullmatch(file.name)
        if match is None:
            raise DatasetError(f"{file}: file name does not follow <poser>.<EXPR><n>.<id>.tiff; {_LAYOUT}")
        expr = match[2].upper()
        if expr not in EXPRESSIONS:
            raise DatasetError(f"{file}: unknown expression code {match[2]!r}; {_LAYOUT}")
        entries.append((file, match[1].upper(), label_index(EXPRESSIONS[expr])))
    return entries


def read_jaffe(*, path: str | Path, seed: int = SPLIT_SEED, face_crop: str = "detect") -> FaceStore:
    """Read JAFFE into a store named ``jaffe``: 48x48 face crops (``face_crop``), poser-disjoint splits."""
    check_face_crop(face_crop)
    root = Path(path)
    if not root.exists():
        raise DatasetError(f"{root} does not exist: give the JAFFE folder; {_LAYOUT}")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder: {_LAYOUT}")
    entries = _list(root)
    if not entries:
        raise DatasetError(f"{root} contains no JAFFE .tiff images: {_LAYOUT}")
    mode = "detect" if face_crop == "auto" else face_crop
    crops, detected = zip(*(face_square(decode_grayscale(file, expected="TIFF"), mode=mode) for file, _, _ in entries))
    CropCounts.of(np.array(detected)).log(root, mode)
    posers = np.array([poser for _, poser, _ in entries])
    store = FaceStore(
        name="jaffe",
        images=torch.from_numpy(np.stack(crops)),
        labels=torch.tensor([label for _, _, label in entries], dtype=torch.int64),
        splits=torch.from_numpy(subject_split(posers, seed=seed, fractions=POSER_FRACTIONS)),
        source=str(root),
        meta={"path": np.array([f.name for f, _, _ in entries]), "subject": posers,
              "face_detected": np.array(detected, dtype=np.int64)},
    )
    logger.info("read %s from %d posers", store.describe(), len(np.unique(posers)))
    return store


__all__ = ["read_jaffe", "looks_like_jaffe", "detect_face", "crop_square", "fallback_box", "FALLBACK_BOX"]
