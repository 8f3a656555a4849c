"""`fedfer predict --video/--camera`: tracks, one label per frame, outputs, refusals.

The video is assembled at test time (never committed): real CK+ sequences (``shared_data``), or
procedural synthetic faces with their known boxes standing in for the detector (no ../shared).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_models.data.synthetic import generate_synthetic
from fer_models.models import create_model
from fer_models.serving.export import export_model
from fer_models.serving.runtime import Predictor, TorchPredictor
from fer_models.serving.video.compose import background, ckplus_sequences, compose_video
from fer_models.serving.video.track import IouTracker, iou
from simulation.commands.cli import main
from simulation.predict.video_predict import TIMELINE_CSV, TIMELINE_JSON, open_source, run_video

FRAMES = 24


def _frame_count(path: Path) -> int:
    import cv2

    cap, n = cv2.VideoCapture(str(path)), 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def _small_model(clip_length: int = 3) -> TorchPredictor:
    torch.manual_seed(0)
    model = create_model("cnn_rnn", channels=(8, 8, 8, 8)).eval()
    return TorchPredictor(model, clip_length=clip_length, image_size=48, source="test")


def _check_outputs(out: Path, *, video: Path, truth: list[list[tuple]], summary: dict) -> None:
    """One track per face (each on its own ground-truth face), a label per face per frame."""
    assert _frame_count(out / "annotated.mp4") == _frame_count(video) == len(truth)
    timeline = json.loads((out / TIMELINE_JSON).read_text())
    assert timeline["frames"] == len(timeline["timeline"]) == len(truth)
    assert len(timeline["tracks"]) == len(truth[0]) == summary["faces"]
    owner: dict[int, int] = {}  # track -> ground-truth face
    for entry, boxes in zip(timeline["timeline"], truth):
        labelled = {}
        for face in entry["faces"]:
            best = max(range(len(boxes)), key=lambda i: iou(tuple(face["box"]), boxes[i]))
            assert iou(tuple(face["box"]), boxes[best]) > 0.5
            assert owner.setdefault(face["track"], best) == best  # a track never jumps to another face
            labelled[best] = face["label"]
        assert sorted(labelled) == list(range(len(boxes)))  # every face has a label in every frame
    with open(out / TIMELINE_CSV) as fh:
        rows = list(csv.DictReader(fh))
    assert len({r["frame"] for r in rows}) == len(truth)
    assert (out / "probabilities.png").stat().st_size > 0


def test_iou_tracker_keeps_ids_through_a_missed_frame_and_ends_lost_tracks() -> None:
    tracker = IouTracker(window=3, max_missed=1)
    a, b = (10, 10, 50, 50), (200, 10, 50, 50)
    first = tracker.update([a, b], frame=0)
    ids = {t.box: t.track_id for t in first}
    moved = [(12, 11, 50, 50), (203, 12, 50, 50)]
    assert sorted(t.track_id for t in tracker.update(moved[::-1], frame=1)) == sorted(ids.values())
    kept = tracker.update([moved[0]], frame=2)  # b missed once: kept, not detected
    assert [t.detected for t in sorted(kept, key=lambda t: t.track_id)] == [True, False]
    tracker.update([moved[0]], frame=3)  # b missed twice: ended
    assert len(tracker.tracks) == 1 and len(tracker.all_tracks()) == 2
    new = tracker.update([moved[0], b], frame=4)
    assert max(t.track_id for t in new) == 3


def test_synthetic_faces_video_gives_a_track_and_a_label_per_face_per_frame(tmp_path: Path) -> None:
    images = generate_synthetic(seed=0, per_class=2, eval_per_class=1).images.numpy()
    faces = [[images[0], images[3]], [images[6], images[9]]]
    video = tmp_path / "synthetic.mp4"
    truth = compose_video(video, faces=faces, frames=FRAMES, face_side=112)
    cap, fps, name = open_source(video=video)
    frames = iter(range(FRAMES))

    def known_boxes(gray: np.ndarray) -> list[tuple]:
        return truth[next(frames)]

    summary = run_video(cap=cap, fps=fps, name=name, predictor=_small_model(), out=tmp_path / "out",
                        detector=known_boxes)
    _check_outputs(tmp_path / "out", video=video, truth=truth, summary=summary)


def test_ckplus_video_end_to_end_on_the_exported_model(shared_data: Path, tmp_path: Path, capsys) -> None:
    video = tmp_path / "ckplus.mp4"
    truth = compose_video(video, faces=ckplus_sequences(shared_data / "ckplus48", count=3), frames=FRAMES)
    model = _small_model().module
    export_model(model=model, out=tmp_path / "m.onnx", fmt="onnx", clip_length=3)
    out = tmp_path / "out"
    assert main(["predict", "--video", str(video), "--model", str(tmp_path / "m.onnx"), "--out", str(out),
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["backend"] == "onnxruntime" and summary["clip_length"] == 3
    _check_outputs(out, video=video, truth=truth, summary=summary)


@pytest.fixture()
def exported(tmp_path: Path) -> Path:
    path = tmp_path / "m.ts"
    export_model(model=_small_model(1).module, out=path, fmt="torchscript", clip_length=1)
    return path


def _refused(argv: list[str], capsys, needle: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_unreadable_video_is_refused(exported: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00not a video" * 50)
    _refused(["predict", "--video", str(bad), "--model", str(exported)], capsys, "cannot read it as a video")
    _refused(["predict", "--video", str(tmp_path / "none.mp4"), "--model", str(exported)], capsys,
             "no such video file")


def test_missing_camera_is_refused(exported: Path, capsys) -> None:
    _refused(["predict", "--camera", "97", "--model", str(exported)], capsys, "camera index 97 does not open")


def test_video_without_faces_is_refused(exported: Path, tmp_path: Path, capsys) -> None:
    import cv2

    video = tmp_path / "empty.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (320, 240))
    for _ in range(6):
        writer.write(cv2.cvtColor(background(height=240, width=320), cv2.COLOR_GRAY2BGR))
    writer.release()
    _refused(["predict", "--video", str(video), "--model", str(exported), "--out", str(tmp_path / "o")], capsys,
             "no face found in any of its 6 frames")


def test_model_from_another_version_is_refused(exported: Path, tmp_path: Path, capsys) -> None:
    side = exported.with_suffix(".json")
    side.write_text(json.dumps({**json.loads(side.read_text()), "format": "fedfer-export-v0"}))
    video = tmp_path / "v.mp4"
    compose_video(video, faces=[[np.full((48, 48), 128, np.uint8)]], frames=2)
    _refused(["predict", "--video", str(video), "--model", str(exported)], capsys, "another fedfer version")


class _Recorder(Predictor):  # returns scripted probabilities, records its clips
    backend = "scripted"

    def __init__(self, outputs: list[np.ndarray], clip_length: int) -> None:
        super().__init__(clip_length=clip_length, image_size=48)
        self.outputs, self.clips = iter(outputs), []

    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        self.clips.append(crops.copy())
        return next(self.outputs)[None]


def test_window_repeats_the_first_crop_then_slides_and_probabilities_are_smoothed() -> None:
    from fer_models.serving.video.stream import EmotionStream

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, size=(120, 160), dtype=np.uint8) for _ in range(4)]
    outputs = [np.eye(7)[k] for k in (3, 3, 0, 0)]
    predictor = _Recorder(outputs, clip_length=3)
    stream = EmotionStream(predictor=predictor, detector=lambda gray: [(20, 10, 96, 96)], smooth=0.25)
    results = [stream.process(f, frame=i, time_s=i / 10) for i, f in enumerate(frames)]
    crops = [c[0, -1] for c in predictor.clips]  # the newest crop of each frame's clip
    assert all((c == crops[0]).all() for c in predictor.clips[0][0])  # first clip: the first crop, 3 times
    np.testing.assert_array_equal(predictor.clips[3][0], np.stack(crops[1:4]))  # then the last 3 crops
    expected = outputs[0]
    for out, res in zip(outputs[1:], results[1:]):
        expected = 0.25 * out + 0.75 * expected
        np.testing.assert_allclose(res.faces[0].probs, expected)
    assert results[-1].faces[0].label_index == 3  # two frames of "angry" do not yet outweigh "happy"
