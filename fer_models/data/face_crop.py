"""Face detection and the square face crop every dataset's photos go through (``face-crop``).

FER2013 faces are tight 48x48 crops; a site's own photos (a manifest's images, JAFFE's 256x256
heads) show a whole head and background. So that both look alike to the model, a photo is cropped
to a face square and resized to 48x48 (area interpolation):

- ``detect``: OpenCV's frontal-face Haar cascade (the largest detection wins); when no face is
  found, the fixed ``center`` square is the fallback (counted: ``face_detected == 0``).
- ``center``: a fixed square of side ``0.63 * min(H, W)`` centred at ``(0.51 W, 0.57 H)``, the median
  Haar box over JAFFE's 213 images (x 50, y 65, side 161 on 256x256): how a head photo frames a face.
- ``none``: the image is already a face: its centred square of the shorter side, resized.
- ``auto``: ``detect`` for photos larger than :data:`AUTO_DETECT_SIDE` pixels on their shorter side,
  ``none`` for smaller ones (already-cropped faces such as FER2013's 48x48).

Every store made through here carries meta ``face_detected``: 1 found, 0 fallback, -1 not searched.
OpenCV is imported only when a face is searched. It must be 4.x: OpenCV 5 no longer ships the Haar
cascade (``pip install "opencv-python-headless<5"``).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fer_models.common.labels import IMAGE_SIDE
from fer_models.data.errors import DatasetError

logger = logging.getLogger(__name__)

FACE_CROPS: tuple[str, ...] = ("auto", "detect", "center", "none")
#: ``auto`` searches a face in photos whose shorter side exceeds this (FER2013-like crops are 48).
AUTO_DETECT_SIDE = 96
CASCADE_FILE = "haarcascade_frontalface_default.xml"
#: The fixed face square as fractions of the image: centre x, centre y, side (of min(H, W)).
FALLBACK_BOX: tuple[float, float, float] = (0.51, 0.57, 0.63)
_INSTALL = 'pip install "opencv-python-headless<5"'
#: meta face_detected values.
FOUND, FALLBACK, NOT_SEARCHED = 1, 0, -1
#: How a command names each outcome to a user (``fedfer predict --json``).
OUTCOME_NAMES = {FOUND: "detected", FALLBACK: "not found: fixed square used", NOT_SEARCHED: "not searched"}


@functools.lru_cache(maxsize=1)
def face_detector() -> Any:
    """OpenCV's frontal-face Haar cascade (loaded once per process)."""
    try:
        import cv2
    except ImportError:
        raise DatasetError(f"face-crop=detect needs OpenCV to locate faces: {_INSTALL}") from None
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        raise DatasetError(f"OpenCV {cv2.__version__} has no Haar cascade (removed in OpenCV 5): {_INSTALL}")
    file = Path(cv2.data.haarcascades) / CASCADE_FILE
    detector = cv2.CascadeClassifier(str(file))
    if detector.empty():
        raise DatasetError(f"{file}: cannot load OpenCV's frontal-face cascade; reinstall it: {_INSTALL}")
    return detector


def fallback_box(height: int, width: int) -> tuple[int, int, int]:
    """``(x, y, side)`` of the fixed face square (``center``, and ``detect``'s fallback)."""
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


def crop_square(gray: np.ndarray, box: tuple[int, int, int], *, side_out: int = IMAGE_SIDE) -> np.ndarray:
    """Crop the square ``box`` (shifted to fit inside the image) and resize it to ``side_out``."""
    height, width = gray.shape
    x, y, side = box
    side = min(side, height, width)
    x = min(max(x, 0), width - side)
    y = min(max(y, 0), height - side)
    crop = np.ascontiguousarray(gray[y:y + side, x:x + side])
    if crop.shape == (side_out, side_out):
        return crop
    import cv2

    return cv2.resize(crop, (side_out, side_out), interpolation=cv2.INTER_AREA)


def square_resize(gray: np.ndarray, *, side: int = IMAGE_SIDE) -> np.ndarray:
    """Centre-crop a 2-D ``uint8`` image to a square of its shorter side, then resize to ``side`` (Lanczos)."""
    h, w = gray.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    square = gray[top:top + s, left:left + s]
    if square.shape == (side, side):
        return np.ascontiguousarray(square)
    image = Image.fromarray(np.ascontiguousarray(square), "L")
    return np.asarray(image.resize((side, side), Image.Resampling.LANCZOS))


def check_face_crop(mode: str) -> str:
    if mode not in FACE_CROPS:
        raise DatasetError(f"face-crop={mode!r}: expected one of {', '.join(FACE_CROPS)}")
    return mode


def face_square(gray: np.ndarray, *, mode: str, side: int = IMAGE_SIDE) -> tuple[np.ndarray, int]:
    """The ``side`` x ``side`` face of one grayscale photo under ``mode``, and how it was found
    (FOUND/FALLBACK/NOT_SEARCHED)."""
    if mode == "auto":
        mode = "detect" if min(gray.shape) > AUTO_DETECT_SIDE else "none"
    if mode == "none":
        return square_resize(gray, side=side), NOT_SEARCHED
    if mode == "center":
        return crop_square(gray, fallback_box(*gray.shape), side_out=side), NOT_SEARCHED
    box = detect_face(gray, detector=face_detector())
    found = FOUND if box else FALLBACK
    return crop_square(gray, box if box is not None else fallback_box(*gray.shape), side_out=side), found


#: How many frames of a sequence ``detect`` searches for the sequence's one face box (first, middle, last).
SEQUENCE_PROBES = 3


def sequence_face_squares(frames: np.ndarray, *, mode: str) -> tuple[np.ndarray, int]:
    """The 48x48 faces of one sequence's frames ``uint8 (n, H, W)``, all cut with ONE square, and how it was found.

    A face in a sequence barely moves, but a detector's box jitters from frame to frame; a box per frame would add
    motion that is not the face's. So ``detect`` searches the first, middle and last frames and takes the median of
    the boxes found (the fixed central square when none is found); ``center`` and ``none`` are as for one photo,
    ``auto`` decides by the frames' size as :func:`face_square` does.
    """
    height, width = frames.shape[1:]
    if mode == "auto":
        mode = "detect" if min(height, width) > AUTO_DETECT_SIDE else "none"
    if mode == "none":
        return np.stack([square_resize(f) for f in frames]), NOT_SEARCHED
    found = NOT_SEARCHED
    box = fallback_box(height, width)
    if mode == "detect":
        probes = np.unique(np.linspace(0, len(frames) - 1, SEQUENCE_PROBES).round().astype(int))
        boxes = [b for b in (detect_face(frames[i], detector=face_detector()) for i in probes) if b is not None]
        found = FOUND if boxes else FALLBACK
        if boxes:
            x, y, side = np.median(np.array(boxes, dtype=np.float64), axis=0).round().astype(int).tolist()
            box = (x, y, side)
    return np.stack([crop_square(f, box) for f in frames]), found


@dataclass(frozen=True)
class CropCounts:
    """How many faces a crop found, fell back on, or did not search (meta face_detected)."""

    found: int
    fallbacks: int
    not_searched: int

    @classmethod
    def of(cls, detected: np.ndarray) -> "CropCounts":
        d = np.asarray(detected)
        return cls(int((d == FOUND).sum()), int((d == FALLBACK).sum()), int((d == NOT_SEARCHED).sum()))

    def log(self, source: object, mode: str) -> None:
        searched = self.found + self.fallbacks
        if not searched:
            logger.info("%s: face-crop=%s: %d image(s) cropped without a face search", source, mode, self.not_searched)
        elif self.fallbacks:
            logger.warning("%s: face-crop=%s: no face found in %d of %d image(s); used the fixed central crop %s",
                           source, mode, self.fallbacks, searched, FALLBACK_BOX)
        else:
            logger.info("%s: face-crop=%s: a face was found in all %d image(s)", source, mode, searched)


__all__ = ["FACE_CROPS", "face_square", "detect_face", "crop_square", "fallback_box", "square_resize",
           "face_detector", "CropCounts", "FALLBACK_BOX", "check_face_crop", "sequence_face_squares", "SEQUENCE_PROBES"]
