"""Face detection on video frames with OpenCV's frontal-face Haar cascade (as for JAFFE).

Frames wider than ``detect_width`` are downscaled for detection only (the cascade's cost grows
with the pixel count); boxes are mapped back to the frame and made square, centred on the
detection, like :func:`fer_models.data.jaffe.detect_face`. A full-frame scan costs tens of
milliseconds on a textured frame, so video streams scan the whole frame only every few frames
and, in between, look for each known face in a small region around its last box
(:meth:`HaarFaceDetector.around`: the region is resized so the face is about ``ROI_FACE_SIDE``
pixels and only scales near it are tried), which costs about a millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

Box = tuple[int, int, int, int]  # x, y, w, h in frame pixels

#: Side (pixels) a known face is resized to when it is looked for around its last box.
ROI_FACE_SIDE = 64
#: The region searched around a known face, in units of its side.
ROI_MARGIN = 0.3


@dataclass
class HaarFaceDetector:
    """All frontal faces in a grayscale frame, as square boxes."""

    detect_width: int = 480
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_face_fraction: float = 0.08  # smallest face side, as a fraction of the frame's shorter side
    _cascade: Any = None

    def __post_init__(self) -> None:
        from fer_models.data.face_crop import face_detector

        if self.detect_width < 64:
            raise ValueError(f"detect_width must be >= 64 pixels (got {self.detect_width})")
        self._cascade = face_detector()

    def _scan(self, gray: np.ndarray, *, scale: float, min_side: int, max_side: int = 0,
              offset: tuple[int, int] = (0, 0)) -> list[Box]:
        import cv2

        height, width = gray.shape
        small = gray if scale == 1.0 else cv2.resize(gray, (max(1, int(round(width * scale))),
                                                            max(1, int(round(height * scale)))),
                                                      interpolation=cv2.INTER_AREA)
        found = self._cascade.detectMultiScale(small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                               minSize=(min_side, min_side), maxSize=(max_side, max_side))
        boxes = []
        for x, y, w, h in (tuple(float(v) / scale for v in f) for f in found):
            side = max(w, h)
            boxes.append((int(round(offset[0] + x + (w - side) / 2)), int(round(offset[1] + y + (h - side) / 2)),
                          int(round(side)), int(round(side))))
        return boxes

    def __call__(self, gray: np.ndarray) -> list[Box]:
        """Every face in the whole frame."""
        scale = min(1.0, self.detect_width / gray.shape[1])
        side_min = max(24, int(self.min_face_fraction * min(gray.shape) * scale))
        return self._scan(gray, scale=scale, min_side=side_min)

    def around(self, gray: np.ndarray, box: Box) -> list[Box]:
        """The face nearest in size to ``box`` in a region around it (empty if none)."""
        x, y, w, h = box
        side = max(w, h)
        margin = int(ROI_MARGIN * side)
        x0, y0 = max(0, x - margin), max(0, y - margin)
        x1, y1 = min(gray.shape[1], x + side + margin), min(gray.shape[0], y + side + margin)
        if x1 - x0 < side // 2 or y1 - y0 < side // 2:
            return []
        scale = ROI_FACE_SIDE / side
        found = self._scan(gray[y0:y1, x0:x1], scale=scale, min_side=int(0.75 * ROI_FACE_SIDE),
                           max_side=int(1.35 * ROI_FACE_SIDE), offset=(x0, y0))
        return sorted(found, key=lambda b: abs(b[2] - side))[:1]
