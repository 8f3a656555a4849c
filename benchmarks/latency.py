"""Per-frame latency of the live emotion stream: face detector + model, per runtime.

For every model / front-end / clip length, the model is exported (TorchScript, ONNX fp32, ONNX
int8) and each runtime is timed at 1 thread and at all threads (``--threads``):

* ``model`` — one face's clip ``(1, T, 48, 48)`` through the predictor (normalisation and
  softmax included): p50 / p95 / p99 in ms over ``--reps`` calls after warm-up; for a ``cnn_rnn``
  the rows ``eager+state`` and ``onnx+state`` time the carried-state step model instead (one face's
  newest crop and its recurrent state in, probabilities and the next state out: one CNN pass per
  frame instead of T), and ``carried/window`` is its model p50 over the window's at the same T;
* ``frame`` — the whole per-frame path of ``fedfer predict --video`` (Haar detection with a
  full scan every ``--full-scan-every`` frames and a search around the face in between, crop,
  window, model, smoothing) on a 640x480 video of one real CK+ face (composed at run time from
  ``--data``), p50 / p95 / p99 and throughput (frames / s = 1000 / mean ms).

Untrained weights: latency does not depend on them. Size on disk: ``model.pt`` (state dict) for
eager, the exported file otherwise. Writes ``results/latency.{json,md}``.

    python benchmarks/latency.py --data ../shared/data/ckplus48 [--models cnn,cnn_rnn] [--reps 200]
    python benchmarks/latency.py --models cnn_rnn --frontends pixels --clip-lengths 8 --threads 1 \
        --results-name latency_stream   # carried state vs the window at T=8, one thread
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import markdown_table, write_results  # noqa: E402
from fer_models.models import create_model  # noqa: E402
from fer_models.serving.export import export_model  # noqa: E402
from fer_models.serving.runtime import Predictor, TorchPredictor, load_exported  # noqa: E402
from fer_models.serving.step import StepRunner, carried_runner  # noqa: E402

warnings.filterwarnings("ignore")
RUNTIMES = ("eager", "torchscript", "onnx", "onnx-int8")


def _percentiles(ms: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "fps": 1000.0 / float(np.mean(ms))}


def _set_threads(n: int) -> None:
    import cv2

    torch.set_num_threads(n)
    cv2.setNumThreads(n)


def _video_frames(data: Path, *, frames: int) -> list[np.ndarray]:
    import cv2

    from fer_models.serving.video.compose import ckplus_sequences, compose_video

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "one_face.mp4"
        compose_video(path, faces=ckplus_sequences(data, count=1), frames=frames, size=(480, 640), face_side=160)
        cap, out = cv2.VideoCapture(str(path)), []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    return out


def time_model(predictor: Predictor, *, reps: int, stepper: StepRunner | None = None) -> dict[str, float]:
    """One face per call: its clip through the window model, or (``stepper``) its newest crop and carried state."""
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(1, predictor.clip_length, 48, 48), dtype=np.uint8)
    state = [stepper.zero_state(1)] if stepper else []

    def call() -> None:
        if stepper is None:
            predictor.probabilities(crops)
        else:
            _, state[0] = stepper.probabilities(crops[:, -1], state[0])

    for _ in range(10):
        call()
    ms = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        ms.append((time.perf_counter() - start) * 1000)
    return _percentiles(ms)


def time_frames(predictor: Predictor, frames: list[np.ndarray], *, full_scan_every: int,
                stepper: StepRunner | None = None) -> dict[str, Any]:
    from fer_models.serving.video.detect import HaarFaceDetector
    from fer_models.serving.video.stream import EmotionStream

    stream = EmotionStream(predictor=predictor, detector=HaarFaceDetector(detect_width=320),
                           full_scan_every=full_scan_every, stepper=stepper)
    ms, detect, faces = [], [], 0
    for i, gray in enumerate(frames + frames):  # the first pass warms up
        start = time.perf_counter()
        result = stream.process(gray, frame=i, time_s=0.0)
        if i >= len(frames):
            ms.append((time.perf_counter() - start) * 1000)
            detect.append(result.detect_ms)
            faces += sum(f.detected for f in result.faces)
    return {**_percentiles(ms), "detect_p50": float(np.median(detect)), "faces_per_frame": faces / len(frames)}


def _predictors(model: torch.nn.Module, *, clip_length: int, workdir: Path, threads: int) -> dict[str, tuple]:
    """runtime → (predictor, size on disk in bytes)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    out = {"eager": (TorchPredictor(model, clip_length=clip_length, image_size=48), buf.getbuffer().nbytes)}
    for runtime, fmt, quantize, suffix in (("torchscript", "torchscript", "none", ".ts"),
                                           ("onnx", "onnx", "none", ".onnx"),
                                           ("onnx-int8", "onnx", "int8", ".onnx")):
        path = workdir / f"{runtime}{suffix}"
        if not path.exists():
            export_model(model=model, out=path, fmt=fmt, clip_length=clip_length, quantize=quantize)
        out[runtime] = (load_exported(path, threads=threads), path.stat().st_size)
    return out


def measure(*, name: str, frontend: str, clip_length: int, threads: int, frames: list[np.ndarray], reps: int,
            full_scan_every: int, workdir: Path) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    _set_threads(threads)
    model = create_model(name, frontend=frontend).eval()
    rows: list[dict[str, Any]] = []
    for runtime, (predictor, size) in _predictors(model, clip_length=clip_length, workdir=workdir,
                                                  threads=threads).items():
        stepper = carried_runner(predictor)[0] if runtime in ("eager", "onnx") else None
        for label, step in ((runtime, None), (f"{runtime}+state", stepper)):
            if label != runtime and step is None:
                continue
            m = time_model(predictor, reps=reps, stepper=step)
            f = time_frames(predictor, frames, full_scan_every=full_scan_every, stepper=step)
            window = next((r for r in rows if r["runtime"] == runtime), None)
            ratio = m["p50"] / window["model_p50"] if step is not None and window else None
            rows.append({"model": name, "frontend": frontend, "T": clip_length, "threads": threads,
                         "runtime": label, "size_mb": size / 1e6, "carried_over_window": ratio,
                         **{f"model_{k}": v for k, v in m.items()}, **{f"frame_{k}": v for k, v in f.items()}})
            print(f"{name:<13} {frontend:<7} T={clip_length} threads={threads} {label:<13} model p50 "
                  f"{m['p50']:6.2f} ms  frame p50 {f['p50']:6.2f} ms p95 {f['p95']:6.2f} ms  {f['fps']:6.1f} fps"
                  + (f"  carried/window {ratio:.2f}" if ratio else ""), flush=True)
    return rows


COLUMNS = [("model", "model", ""), ("front-end", "frontend", ""), ("T", "T", "d"), ("threads", "threads", "d"),
           ("runtime", "runtime", ""), ("size (MB)", "size_mb", ".2f"), ("model p50 (ms)", "model_p50", ".2f"),
           ("model p95", "model_p95", ".2f"), ("model p99", "model_p99", ".2f"),
           ("frame p50 (ms)", "frame_p50", ".2f"), ("frame p95", "frame_p95", ".2f"),
           ("frame p99", "frame_p99", ".2f"), ("detector p50", "frame_detect_p50", ".2f"),
           ("frames/s", "frame_fps", ".1f"), ("carried/window", "carried_over_window", ".2f")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/ckplus48"), help="CK+ 48x48 folder")
    ap.add_argument("--models", default="cnn,cnn_rnn", help="comma-separated registered models")
    ap.add_argument("--frontends", default="pixels,scatter")
    ap.add_argument("--clip-lengths", default="1,3")
    ap.add_argument("--threads", default=f"1,{len(os.sched_getaffinity(0))}", help="thread counts to time")
    ap.add_argument("--reps", type=int, default=200, help="model calls timed per runtime")
    ap.add_argument("--frames", type=int, default=60, help="video frames timed per runtime")
    ap.add_argument("--full-scan-every", type=int, default=5)
    ap.add_argument("--note", default="")
    ap.add_argument("--results-name", default="latency", help="results/<name>.{json,md}")
    args = ap.parse_args()
    frames = _video_frames(args.data, frames=args.frames)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for frontend in args.frontends.split(","):
                for clip_length in (int(t) for t in args.clip_lengths.split(",")):
                    workdir = Path(tmp) / f"{name}-{frontend}-{clip_length}"
                    workdir.mkdir()
                    for threads in (int(n) for n in args.threads.split(",")):
                        rows += measure(name=name, frontend=frontend, clip_length=clip_length, threads=threads,
                                        frames=frames, reps=args.reps, full_scan_every=args.full_scan_every,
                                        workdir=workdir)
    notes = (f"Per-frame path = `fedfer predict --video` without decoding and drawing: Haar cascade on a 640x480 "
             f"frame of one CK+ face (full scan at width 320 every {args.full_scan_every} frames, a search around "
             f"the face in between), crop, clip window, model, smoothing; {args.frames} frames after a warm-up pass. "
             f"Model = one (1, T, 1, 48, 48) clip, {args.reps} calls after 10 warm-up calls. Untrained weights "
             f"(latency does not depend on them). Threads = torch intra-op threads (eager, TorchScript), ONNX "
             f"Runtime intra-op threads, and OpenCV threads. Size = state dict (eager) or exported file. "
             f"int8 = ONNX Runtime dynamic quantisation of the Linear layers (fer_models/serving/export.py). The machine is shared with other jobs: "
             f"percentiles include their interference (load average {os.getloadavg()[0]:.1f} at the end). {args.note}")
    write_results(args.results_name, results=rows, table=markdown_table(rows, COLUMNS), notes=notes)


if __name__ == "__main__":
    main()
