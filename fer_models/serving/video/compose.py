"""Composing a test video from face images: faces upscaled and placed on a textured background.

Used by the tests and the latency benchmark (with CK+ sequences from ``../shared/data`` or any
48x48 faces): each face cycles through its frames (e.g. a CK+ 3-frame sequence, each held for
``hold`` video frames) and drifts slowly, so that tracking is exercised. The ground-truth box of
every face in every frame is returned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

Box = tuple[int, int, int, int]


def background(*, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth grey texture (low-frequency noise), uint8 ``(H, W)``."""
    import cv2

    rng = np.random.default_rng(seed)
    coarse = rng.uniform(60, 190, size=(max(2, height // 40), max(2, width // 40))).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


def compose_video(path: Path, *, faces: list[list[np.ndarray]], frames: int = 36, size: tuple[int, int] = (360, 640),
                  face_side: int = 128, hold: int = 4, fps: float = 12.0, drift: int = 1,
                  seed: int = 0) -> list[list[Box]]:
    """Write an mp4 of ``frames`` frames showing every face sequence of ``faces`` side by side.

    Returns the boxes ``[frame][face] = (x, y, w, h)``. Raises ``ValueError`` when the faces do not
    fit the frame.
    """
    import cv2

    height, width = size
    n = len(faces)
    gap = (width - n * face_side) // (n + 1)
    if n < 1 or gap < 8 * drift or face_side + 2 * drift * frames > height:
        raise ValueError(f"{n} faces of {face_side} px do not fit a {width}x{height} frame over {frames} frames")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write mp4 video here")
    bg = background(height=height, width=width, seed=seed)
    boxes: list[list[Box]] = []
    y0 = (height - face_side) // 2 - drift * frames // 2
    for f in range(frames):
        canvas = bg.copy()
        row = []
        for i, seq in enumerate(faces):
            face = cv2.resize(seq[(f // hold) % len(seq)], (face_side, face_side), interpolation=cv2.INTER_CUBIC)
            x, y = gap + i * (face_side + gap) + drift * (f % 8), y0 + drift * f
            canvas[y:y + face_side, x:x + face_side] = face
            row.append((x, y, face_side, face_side))
        boxes.append(row)
        writer.write(cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR))
    writer.release()
    return boxes


def ckplus_sequences(root: Path, *, count: int) -> list[list[np.ndarray]]:
    """``count`` CK+ 3-frame sequences of different subjects from ``ckplus48/<class>/S*_*_*.png``."""
    import cv2

    by_seq: dict[tuple[str, str], list[Path]] = {}
    for file in sorted(Path(root).glob("*/S*_*_*.png")):
        subject, seq, _ = file.stem.split("_", 2)
        by_seq.setdefault((subject, seq), []).append(file)
    chosen, subjects = [], set()
    for (subject, _), files in sorted(by_seq.items()):
        if subject not in subjects and len(files) >= 2:
            subjects.add(subject)
            chosen.append([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in sorted(files)])
        if len(chosen) == count:
            return chosen
    raise ValueError(f"{root}: fewer than {count} CK+ sequences of distinct subjects")
