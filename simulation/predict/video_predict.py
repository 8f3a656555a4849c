"""``fedfer predict --video FILE | --camera INDEX``: emotions of every face over a video.

Writes into ``--out``: ``annotated.mp4`` (boxes, labels, confidence bars), ``timeline.csv`` and
``timeline.json`` (one entry per frame), ``probabilities.png`` (per track). Input problems (an
unreadable video, a camera that does not open, a video with no face) raise :class:`VideoInputError`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from fer_models.serving.runtime import Predictor

logger = logging.getLogger(__name__)

ANNOTATED, TIMELINE_CSV, TIMELINE_JSON, PLOT = "annotated.mp4", "timeline.csv", "timeline.json", "probabilities.png"


class VideoInputError(ValueError):
    """A video file or camera that cannot be read, or a video in which no face was found."""


def open_source(*, video: Path | None = None, camera: int | None = None) -> tuple[Any, float, str]:
    """An opened ``cv2.VideoCapture``, its frame rate and a name for messages."""
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    if video is not None:
        if not Path(video).is_file():
            raise VideoInputError(f"{video}: no such video file")
        cap, name = cv2.VideoCapture(str(video)), str(video)
        ok = cap.isOpened() and cap.read()[0]
        if not ok:
            cap.release()
            raise VideoInputError(f"{video}: cannot read it as a video (damaged, or a format OpenCV's FFmpeg "
                                  f"cannot decode); give an .mp4/.avi/.mkv file")
        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
    else:
        cap, name = cv2.VideoCapture(int(camera)), f"camera {camera}"
        if not cap.isOpened():
            cap.release()
            raise VideoInputError(f"camera index {camera} does not open (no such camera, or it is busy); "
                                  f"list devices with `ls /dev/video*` and give one of their numbers")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    return cap, fps if 1.0 <= fps <= 240.0 else 25.0, name


def run_video(*, cap: Any, fps: float, name: str, predictor: Predictor, out: Path, max_frames: int = 0,
              smooth: float = 0.5, detect_width: int = 320, full_scan_every: int = 5,
              detector: Any = None, carry_state: bool = True) -> dict[str, Any]:
    """Process every frame of ``cap`` (or the first ``max_frames``); write the outputs; return a summary.

    ``detector`` (frame → boxes) replaces the Haar cascade (tests use the known boxes). With
    ``carry_state`` (the default) a model that has a step form (``model.pt`` of a ``cnn_rnn``, or an fp32
    ONNX export with its ``.step.onnx``) carries each face's recurrent state from frame to frame; other
    models, or ``carry_state=False``, re-read a window of the last T crops per frame. The summary says
    which (``state``: ``carried`` or ``window``, and ``state_reason``).
    """
    import cv2

    from fer_models.serving.step import carried_runner
    from fer_models.serving.video.detect import HaarFaceDetector
    from fer_models.serving.video.render import annotate
    from fer_models.serving.video.stream import EmotionStream
    from fer_models.serving.video.timeline import Timeline

    out.mkdir(parents=True, exist_ok=True)
    detector = detector or HaarFaceDetector(detect_width=detect_width)
    stepper, reason = carried_runner(predictor) if carry_state else (None, "the window was asked for")
    if stepper is None:
        logger.info("re-reading a window of %d crops per frame: %s", predictor.clip_length, reason)
    stream = EmotionStream(predictor=predictor, detector=detector, smooth=smooth,
                           full_scan_every=full_scan_every, stepper=stepper)
    timeline = Timeline(classes=predictor.classes)
    writer = None
    detect_ms, model_ms = [], []
    start = time.perf_counter()
    try:
        while not max_frames or len(timeline.frames) < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
            gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            result = stream.process(gray, frame=len(timeline.frames), time_s=len(timeline.frames) / fps)
            timeline.add(result)
            detect_ms.append(result.detect_ms)
            model_ms.append(result.model_ms)
            if writer is None:
                writer = cv2.VideoWriter(str(out / ANNOTATED), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                         (frame.shape[1], frame.shape[0]))
                if not writer.isOpened():  # OpenCV does not raise: it would silently write nothing
                    raise VideoInputError(f"cannot write {out / ANNOTATED}: OpenCV's video writer did not open "
                                          f"(a full disk, or an OpenCV without the mp4v encoder); choose another --out")
            writer.write(annotate(frame, result, classes=predictor.classes))
    except KeyboardInterrupt:
        logger.info("interrupted after %d frames; writing what was processed", len(timeline.frames))
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    wall = time.perf_counter() - start
    if not timeline.frames:
        raise VideoInputError(f"{name}: no frame could be read")
    tracks = timeline.tracks()
    summary = {"source": name, "model": predictor.source, "backend": predictor.backend,
               "clip_length": predictor.clip_length, "state": "carried" if stepper else "window",
               "state_reason": reason, "fps": fps, "smoothing": smooth,
               "detect_width": detect_width, "full_scan_every": full_scan_every,
               "frames": len(timeline.frames), "faces": len(tracks), "wall_s": round(wall, 3),
               "processing_fps": round(len(timeline.frames) / wall, 2) if wall > 0 else None,
               "detect_ms_median": round(float(np.median(detect_ms)), 3),
               "model_ms_median": round(float(np.median(model_ms)), 3)}
    timeline.write_json(out / TIMELINE_JSON, **summary)
    timeline.write_csv(out / TIMELINE_CSV)
    timeline.plot(out / PLOT)
    if not tracks:
        raise VideoInputError(f"{name}: no face found in any of its {len(timeline.frames)} frames (outputs written "
                              f"to {out}); the detector needs upright frontal faces of at least about "
                              f"{int(100 * getattr(detector, 'min_face_fraction', 0.08))}% of the frame height")
    return {**summary, "tracks": tracks, "out": str(out)}
