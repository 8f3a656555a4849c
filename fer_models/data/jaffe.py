"""Reader for JAFFE: flat ``<poser>.<EXPR><n>.<id>.tiff`` (e.g. ``KA.AN1.39.tiff``), 256x256 heads.

FER2013 faces are tight 48x48 crops, JAFFE images show the whole head and background, so each
image is decoded to grayscale ("P" palette and other modes converted to "L"), its face located
with OpenCV's frontal-face Haar cascade (the largest detection wins), cropped to that square and
resized to 48x48 (area interpolation). **Fallback** when no face is found: a fixed square of side
``0.63 * min(H, W)`` centred at ``(0.51 W, 0.57 H)``, the median Haar box over JAFFE's 213
images (x 50, y 65, side 161 on 256x256), since every JAFFE photo frames the head the same way.
Fallback images are counted in the log and marked by meta ``face_detected == 0``.

OpenCV is imported only when JAFFE is read. It must be 4.x: OpenCV 5 no longer ships the Haar
cascade (``pip install "opencv-python-headless<5"``). Splits are poser-disjoint (7/1/2 posers).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fer_models.data.errors import DatasetError
from fer_models.data.images import decode_grayscale
from fer_models.data.store import FaceStore
from fer_models.data.subjects import SPLIT_SEED, subject_split
from fer_models.labels import IMAGE_SIDE, label_index

logger = logging.getLogger(__name__)

SIDE = IMAGE_SIDE
CASCADE_FILE = "haarcascade_frontalface_default.xml"
EXPRESSIONS: dict[str, str] = {"AN": "angry", "DI": "disgust", "FE": "fear", "HA": "happy",
                               "NE": "neutral", "SA": "sad", "SU": "surprise"}
FILE_PATTERN = re.compile(r"([A-Za-z]+)\.([A-Za-z]{2})(\d*)\.(\d+)\.tiff?", re.IGNORECASE)
#: Fallback face square as fractions of the image: centre x, centre y, side (of min(H, W)).
FALLBACK_BOX: tuple[float, float, float] = (0.51, 0.57, 0.63)
#: 10 posers -> 7 train, 1 val, 2 test.
POSER_FRACTIONS: tuple[float, float, float] = (0.7, 0.1, 0.2)
_INSTALL = 'pip install "opencv-python-headless<5"'
_LAYOUT = ("expected a flat folder of <poser>.<EXPR><n>.<id>.tiff files (e.g. KA.AN1.39.tiff) with EXPR "
           "one of " + " ".join(EXPRESSIONS))


def looks_like_jaffe(root: Path) -> bool:
    """True when ``root`` directly holds a ``.tiff`` file named like JAFFE's ``KA.AN1.39.tiff``."""
    try:
        return any(FILE_PATTERN.fullmatch(f.name) for f in root.iterdir() if f.is_file())
    except OSError:
        return False


def _face_detector() -> Any:
    try:
        import cv2
    except ImportError:
        raise DatasetError(f"reading JAFFE needs OpenCV to locate faces: {_INSTALL}") from None
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        raise DatasetError(f"OpenCV {cv2.__version__} has no Haar cascade (removed in OpenCV 5): {_INSTALL}")
    file = Path(cv2.data.haarcascades) / CASCADE_FILE
    detector = cv2.CascadeClassifier(str(file))
    if detector.empty():
        raise DatasetError(f"{file}: cannot load OpenCV's frontal-face cascade; reinstall it: {_INSTALL}")
    return detector


def fallback_box(height: int, width: int) -> tuple[int, int, int]:
    """``(x, y, side)`` of the fixed face square used when no face is detected."""
    cx, cy, frac = FALLBACK_BOX
    side = max(1, int(round(frac * min(height, width))))
    return int(round(cx * width - side / 2)), int(round(cy * height - side / 2)), side


def detect_face(gray: np.ndarray, *, detector: Any) -> tuple[int, int, int] | None:
    """``(x, y, side)`` of the largest frontal face in ``gray``, or None."""
    smallest = max(24, min(gray.shape) // 4)
    faces = detector.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(smallest, smallest))
    if len(faces) == 0:
        return None
    x, y, w, h = max((tuple(int(v) for v in f) for f in faces), key=lambda b: b[2] * b[3])
    side = max(w, h)
    return x + (w - side) // 2, y + (h - side) // 2, side


def crop_square(gray: np.ndarray, box: tuple[int, int, int], *, side_out: int = SIDE) -> np.ndarray:
    """Crop the square ``box`` (shifted to fit inside the image) and resize it to ``side_out``."""
    import cv2

    height, width = gray.shape
    x, y, side = box
    side = min(side, height, width)
    x = min(max(x, 0), width - side)
    y = min(max(y, 0), height - side)
    crop = np.ascontiguousarray(gray[y:y + side, x:x + side])
    return cv2.resize(crop, (side_out, side_out), interpolation=cv2.INTER_AREA)


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


def read_jaffe(*, path: str | Path, seed: int = SPLIT_SEED) -> FaceStore:
    """Read JAFFE into a store named ``jaffe``: 48x48 face crops, poser-disjoint splits."""
    root = Path(path)
    if not root.exists():
        raise DatasetError(f"{root} does not exist: give the JAFFE folder; {_LAYOUT}")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder: {_LAYOUT}")
    entries = _list(root)
    if not entries:
        raise DatasetError(f"{root} contains no JAFFE .tiff images: {_LAYOUT}")
    detector = _face_detector()
    crops: list[np.ndarray] = []
    detected: list[int] = []
    for file, _, _ in entries:
        gray = decode_grayscale(file, expected="TIFF")
        box = detect_face(gray, detector=detector)
        detected.append(box is not None)
        crops.append(crop_square(gray, box if box is not None else fallback_box(*gray.shape)))
    n_fallback = len(detected) - sum(detected)
    if n_fallback:
        logger.warning("%s: no face found in %d of %d image(s); used the fixed central crop %s",
                       root, n_fallback, len(entries), FALLBACK_BOX)
    else:
        logger.info("%s: a face was found in all %d images", root, len(entries))
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
