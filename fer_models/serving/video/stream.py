"""Per-frame emotion of every face: detect → track → model (carried state, or a window of crops) → smooth.

With a step runner (:mod:`fer_models.serving.step`, a ``cnn_rnn``) each track carries the model's
recurrent state: a frame costs one CNN pass per face, the face's newest crop and its state go in, the
probabilities and the next state come out, and a new track starts from the zero state. After ``n``
detected frames a track's output is the recurrent model over those ``n`` crops, each encoded alone.
Without one (models with no recurrent state, TorchScript and int8 exports), every live track
contributes one clip: its last ``T`` face crops (repeating the oldest while fewer than ``T`` have been
seen, as training repeats a still image), and all clips of a frame go through the model as one batch;
the window is re-read each frame (the CNN runs T times per face and frame). The probabilities are
smoothed per track with an exponential moving average ``s = a * p + (1 - a) * s_prev`` (``a = 1``: no
smoothing). A track the detector missed in this frame keeps its box, its state and its last smoothed
label (``detected: false``). With ``full_scan_every`` = k > 1 the detector scans the whole frame only
every k-th frame (new faces appear within k frames) and otherwise only around the live tracks
(:meth:`HaarFaceDetector.around`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from fer_models.data.face_crop import crop_square
from fer_models.serving.runtime import Predictor
from fer_models.serving.step import StepRunner
from fer_models.serving.video.detect import Box
from fer_models.serving.video.track import IouTracker, Track


@dataclass
class FaceResult:
    track_id: int
    box: Box
    detected: bool
    probs: np.ndarray  # smoothed class probabilities

    @property
    def label_index(self) -> int:
        return int(np.argmax(self.probs))


@dataclass
class FrameResult:
    frame: int
    time_s: float
    faces: list[FaceResult] = field(default_factory=list)
    detect_ms: float = 0.0
    model_ms: float = 0.0


class EmotionStream:
    """Feed frames in order with :meth:`process`; read the tracks at the end from :attr:`tracker`."""

    def __init__(self, *, predictor: Predictor, detector: Callable[[np.ndarray], list[Box]], smooth: float = 0.5,
                 max_missed: int = 5, iou_threshold: float = 0.3, full_scan_every: int = 1,
                 stepper: StepRunner | None = None) -> None:
        if not 0.0 < smooth <= 1.0:
            raise ValueError(f"smoothing factor must be in (0, 1] (got {smooth}); 1 disables smoothing")
        if full_scan_every < 1:
            raise ValueError(f"full_scan_every must be >= 1 (got {full_scan_every})")
        self.predictor, self.detector, self.smooth = predictor, detector, smooth
        self.full_scan_every, self.stepper = full_scan_every, stepper
        self.tracker = IouTracker(window=predictor.clip_length, iou_threshold=iou_threshold, max_missed=max_missed)

    def _clip(self, track: Track) -> np.ndarray:
        crops = list(track.window)
        return np.stack([crops[0]] * (self.predictor.clip_length - len(crops)) + crops)

    def _window(self, seen: list[Track], crops: list[np.ndarray]) -> np.ndarray:
        for t, crop in zip(seen, crops):
            t.window.append(crop)
        return self.predictor.probabilities(np.stack([self._clip(t) for t in seen]))

    def _carried(self, seen: list[Track], crops: list[np.ndarray]) -> np.ndarray:
        assert self.stepper is not None
        zero = self.stepper.zero_state(1)[0]
        states = np.stack([zero if t.state is None else t.state for t in seen])
        probs, states = self.stepper.probabilities(np.stack(crops), states)
        for t, state in zip(seen, states):
            t.state = state
        return probs

    def _detect(self, gray: np.ndarray, *, frame: int) -> list[Box]:
        """The whole frame every ``full_scan_every`` frames (or with no track), else around each track."""
        around = getattr(self.detector, "around", None)
        if around is None or frame % self.full_scan_every == 0 or not self.tracker.tracks:
            return self.detector(gray)
        return [b for t in self.tracker.tracks for b in around(gray, t.box)]

    def process(self, gray: np.ndarray, *, frame: int, time_s: float) -> FrameResult:
        """Emotions of the faces in one ``uint8 (H, W)`` grayscale frame."""
        start = time.perf_counter()
        tracks = self.tracker.update(self._detect(gray, frame=frame), frame=frame)
        detect_ms = (time.perf_counter() - start) * 1000
        seen = [t for t in tracks if t.detected]
        crops = [crop_square(gray, (t.box[0], t.box[1], t.box[2]), side_out=self.predictor.image_size) for t in seen]
        start = time.perf_counter()
        if seen:
            probs = self._carried(seen, crops) if self.stepper is not None else self._window(seen, crops)
            for t, p in zip(seen, probs):
                t.smoothed = p if t.smoothed is None else self.smooth * p + (1 - self.smooth) * t.smoothed
        model_ms = (time.perf_counter() - start) * 1000
        faces = [FaceResult(track_id=t.track_id, box=t.box, detected=t.detected, probs=t.smoothed)
                 for t in tracks if t.smoothed is not None]
        return FrameResult(frame=frame, time_s=time_s, faces=faces, detect_ms=detect_ms, model_ms=model_ms)
