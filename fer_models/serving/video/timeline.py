"""The per-frame record of a video: CSV and JSON timelines, per-track summary, probability plot.

The timeline has exactly one entry per processed frame (a frame without faces has an empty
``faces`` list in JSON and one row with an empty ``track`` in CSV), so its frame count equals
the video's. Probabilities are the smoothed ones the label was taken from.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

from fer_models.common.atomic import atomic_write_bytes
from fer_models.serving.video.stream import FrameResult

#: A track counts as a face when the detector found it in at least this many frames.
MIN_TRACK_DETECTIONS = 3


class Timeline:
    def __init__(self, *, classes: tuple[str, ...]) -> None:
        self.classes = classes
        self.frames: list[FrameResult] = []

    def add(self, result: FrameResult) -> None:
        self.frames.append(result)

    def tracks(self, *, min_detections: int = MIN_TRACK_DETECTIONS) -> dict[int, dict[str, Any]]:
        """Confirmed tracks: first/last frame, frames detected, frames per label."""
        info: dict[int, dict[str, Any]] = {}
        for fr in self.frames:
            for face in fr.faces:
                t = info.setdefault(face.track_id, {"first_frame": fr.frame, "detections": 0, "labels": Counter()})
                t["last_frame"] = fr.frame
                t["detections"] += int(face.detected)
                t["labels"][self.classes[face.label_index]] += 1
        return {k: {**v, "labels": dict(v["labels"].most_common())} for k, v in sorted(info.items())
                if v["detections"] >= min_detections}

    def _face_json(self, face: Any) -> dict[str, Any]:
        return {"track": face.track_id, "box": list(face.box), "detected": face.detected,
                "label": self.classes[face.label_index], "confidence": round(float(face.probs.max()), 5),
                "probabilities": {c: round(float(p), 5) for c, p in zip(self.classes, face.probs)}}

    def to_json(self, **meta: Any) -> dict[str, Any]:
        return {**meta, "frames": len(self.frames), "classes": list(self.classes),
                "tracks": {str(k): v for k, v in self.tracks().items()},
                "timeline": [{"frame": fr.frame, "time_s": round(fr.time_s, 4),
                              "faces": [self._face_json(f) for f in fr.faces]} for fr in self.frames]}

    def write_json(self, path: Path, **meta: Any) -> None:
        atomic_write_bytes(Path(path), (json.dumps(self.to_json(**meta), indent=1) + "\n").encode())

    def write_csv(self, path: Path) -> None:
        header = ["frame", "time_s", "track", "detected", "x", "y", "w", "h", "label", "confidence", *self.classes]
        fh = io.StringIO(newline="")
        writer = csv.writer(fh)
        writer.writerow(header)
        for fr in self.frames:
            if not fr.faces:
                writer.writerow([fr.frame, f"{fr.time_s:.4f}"] + [""] * (len(header) - 2))
            for face in fr.faces:
                writer.writerow([fr.frame, f"{fr.time_s:.4f}", face.track_id, int(face.detected), *face.box,
                                 self.classes[face.label_index], f"{face.probs.max():.5f}",
                                 *(f"{p:.5f}" for p in face.probs)])
        atomic_write_bytes(Path(path), fh.getvalue().encode())

    def plot(self, path: Path, *, min_detections: int = MIN_TRACK_DETECTIONS) -> None:
        """One panel per confirmed track: each class probability over time."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        tracks = list(self.tracks(min_detections=min_detections)) or [None]
        fig, axes = plt.subplots(len(tracks), 1, figsize=(9, 2.2 * len(tracks)), squeeze=False, sharex=True)
        for ax, track in zip(axes[:, 0], tracks):
            series = [(fr.time_s, f.probs) for fr in self.frames for f in fr.faces if f.track_id == track]
            if series:
                times = [t for t, _ in series]
                for k, name in enumerate(self.classes):
                    ax.plot(times, [p[k] for _, p in series], label=name, linewidth=1.2)
            ax.set_ylim(0, 1)
            ax.set_ylabel(f"track {track}: probability" if track is not None else "no face: probability")
        if tracks != [None]:
            axes[0, 0].legend(ncol=len(self.classes), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 1.35))
        axes[-1, 0].set_xlabel("time (s)")
        fig.suptitle("emotion probabilities per face track over time")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        atomic_write_bytes(Path(path), buf.getvalue())
