"""Drawing the result of a frame on it: box, track id, label and a confidence bar per face."""

from __future__ import annotations

import numpy as np

from fer_models.serving.video.stream import FrameResult

_COLORS = [(66, 135, 245), (245, 90, 66), (80, 200, 120), (230, 190, 40), (180, 90, 220), (40, 200, 220)]


def annotate(frame_bgr: np.ndarray, result: FrameResult, *, classes: tuple[str, ...]) -> np.ndarray:
    """A copy of the BGR frame with every face of ``result`` drawn on it."""
    import cv2

    out = frame_bgr.copy()
    for face in result.faces:
        color = _COLORS[face.track_id % len(_COLORS)]
        x, y, w, h = face.box
        cv2.rectangle(out, (x, y), (x + w, y + h), color, 2 if face.detected else 1)
        conf = float(face.probs.max())
        text = f"#{face.track_id} {classes[face.label_index]} {conf:.2f}"
        ty = max(12, y - 14)
        cv2.putText(out, text, (x, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)
        bar_y = min(out.shape[0] - 6, y + h + 4)
        cv2.rectangle(out, (x, bar_y), (x + w, bar_y + 5), (60, 60, 60), -1)
        cv2.rectangle(out, (x, bar_y), (x + int(round(w * conf)), bar_y + 5), color, -1)
    return out
