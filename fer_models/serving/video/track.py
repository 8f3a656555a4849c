"""A simple IoU tracker: one track per face, greedy matching of boxes frame to frame.

Each track keeps the last ``window`` face crops (the model's clip), or with a step model the
recurrent state carried from its previous frame (a new track has none: the zero state), and its
smoothed probabilities. A track that finds no box keeps its last box and label for up to ``max_missed``
frames (so a face the detector misses once is not labelled as a new person), then ends.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from fer_models.serving.video.detect import Box


def iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    track_id: int
    box: Box
    window: deque = field(default_factory=deque)  # uint8 (S, S) crops, oldest first
    smoothed: np.ndarray | None = None
    state: np.ndarray | None = None  # the carried recurrent state (R, H) after its last detected frame; None: new
    hits: int = 1
    missed: int = 0
    first_frame: int = 0
    detected: bool = True  # found by the detector in the current frame


class IouTracker:
    """``update(boxes)`` → the live tracks, matched boxes updated, new ones started."""

    def __init__(self, *, window: int, iou_threshold: float = 0.3, max_missed: int = 5) -> None:
        if window < 1 or max_missed < 0 or not 0.0 < iou_threshold < 1.0:
            raise ValueError(f"need window >= 1, max_missed >= 0, 0 < iou_threshold < 1 "
                             f"(got {window}, {max_missed}, {iou_threshold})")
        self.window, self.iou_threshold, self.max_missed = window, iou_threshold, max_missed
        self.tracks: list[Track] = []
        self.finished: list[Track] = []
        self._next_id = 1

    def update(self, boxes: list[Box], *, frame: int) -> list[Track]:
        pairs = sorted(((iou(t.box, b), ti, bi) for ti, t in enumerate(self.tracks) for bi, b in enumerate(boxes)),
                       reverse=True)
        used_t: set[int] = set()
        used_b: set[int] = set()
        for score, ti, bi in pairs:
            if score < self.iou_threshold or ti in used_t or bi in used_b:
                continue
            used_t.add(ti)
            used_b.add(bi)
            track = self.tracks[ti]
            track.box, track.hits, track.missed, track.detected = boxes[bi], track.hits + 1, 0, True
        for ti, track in enumerate(self.tracks):
            if ti not in used_t:
                track.missed += 1
                track.detected = False
        self.finished += [t for t in self.tracks if t.missed > self.max_missed]
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        for bi, box in enumerate(boxes):
            if bi not in used_b:
                self.tracks.append(Track(track_id=self._next_id, box=box, window=deque(maxlen=self.window),
                                         first_frame=frame))
                self._next_id += 1
        return list(self.tracks)

    def all_tracks(self) -> list[Track]:
        return sorted(self.finished + self.tracks, key=lambda t: t.track_id)
