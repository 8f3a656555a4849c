"""``fedfer predict IMAGE ... --model MODEL_OR_RUN_DIR``: the most likely emotions of face images.

Preprocessing is the manifest reader's (:func:`fer_models.data.face_crop.face_square`, ``--face-crop`` as
the ``face-crop`` setting of a site's photos): the image is converted to 8-bit grayscale; under ``auto`` (the
default) a photo larger than 96 pixels on its shorter side has its largest face found (OpenCV's Haar cascade;
none found: a fixed head-photo square, reported per image) and a smaller one is taken as a face already
(``none``: the centred square of its shorter side); the square is resized to the model's input size (48x48), then
scaled to [0, 1] and normalised like training (:func:`fer_models.data.samples.normalize`), and repeated over the
model's clip length. No EXIF rotation is done: give upright images.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from fer_models.common.labels import EMOTIONS, IMAGE_SIDE, NUM_CLASSES
from fer_models.config import choices_of
from simulation.commands.cli_common import add_json_flag, print_json

if TYPE_CHECKING:  # imported by the functions that use them, so that `fedfer --help` loads no torch
    import numpy as np
    from PIL import Image

logger = logging.getLogger("fedfer")


class ImageReadError(ValueError):
    """An input image that is missing or cannot be decoded."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict the emotion of face images, a video or a camera stream")
    p.add_argument("images", nargs="*", type=Path, metavar="IMAGE", help="image files (any size, colour or grey), "
                   "or folders: every image file in them")
    p.add_argument("--model", required=True, type=Path, metavar="MODEL_OR_RUN_DIR",
                   help="model.pt or the run folder holding it, or an exported .onnx (ONNX Runtime) or .ts "
                        "(TorchScript) file from `fedfer export` (images, --video and --camera alike)")
    p.add_argument("--top", type=int, default=3, help=f"emotions to show per image (1..{NUM_CLASSES}, default 3)")
    p.add_argument("--face-crop", choices=choices_of("face-crop"), default="auto",
                   help="images: detect = find the largest face (none found: a fixed head-photo square, reported), "
                        "center = that fixed square, none = the image is a face (its centred square), auto = detect "
                        "in photos over 96 pixels on their shorter side, none in smaller ones (default; as the "
                        "face-crop setting of a site's photos)")
    add_json_flag(p)
    v = p.add_argument_group("video and camera (instead of images)")
    v.add_argument("--video", type=Path, metavar="FILE", help="a video file: every face tracked, one label per frame")
    v.add_argument("--camera", type=int, metavar="INDEX", help="a camera index (0 = first); stop with Ctrl-C")
    v.add_argument("--out", type=Path, help="output folder (default: <video>-emotions or camera<INDEX>-emotions)")
    v.add_argument("--smooth", type=float, default=0.5,
                   help="weight of the newest frame in the per-face moving average (1 = no smoothing; default 0.5)")
    v.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0 = all)")
    v.add_argument("--window", action="store_true",
                   help="re-read a window of T crops per frame instead of carrying the recurrent state per face")
    v.add_argument("--threads", type=int, default=0, help="model threads (0 = all cores)")
    v.add_argument("--detect-width", type=int, default=320,
                   help="frames are downscaled to this width for the full-frame face scan (default 320)")
    v.add_argument("--full-scan-every", type=int, default=5, metavar="K",
                   help="scan the whole frame for faces every K frames, in between only around known faces "
                        "(1 = every frame; default 5)")
    p.set_defaults(func=run)


def prepare_face(*, image: Image.Image, size: int = IMAGE_SIDE, face_crop: str = "none") -> np.ndarray:
    """Grayscale, the face square under ``face_crop`` (``none``: the centred square), resized to ``size`` x
    ``size``: ``uint8 (size, size)``."""
    return prepare_face_found(image=image, size=size, face_crop=face_crop)[0]


def prepare_face_found(*, image: Image.Image, size: int, face_crop: str) -> tuple[np.ndarray, int]:
    """:func:`prepare_face` and how the face was found (``face_crop.FOUND``, ``FALLBACK`` or ``NOT_SEARCHED``)."""
    import numpy as np

    from fer_models.data.face_crop import face_square

    return face_square(np.asarray(image.convert("L")), mode=face_crop, side=size)


def read_face(*, path: Path, size: int = IMAGE_SIDE, face_crop: str = "none") -> tuple[np.ndarray, int]:
    """:func:`prepare_face_found` of an image file; :class:`ImageReadError` naming the file if it fails."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ImageReadError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            return prepare_face_found(image=image, size=size, face_crop=face_crop)
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"{path}: cannot read the image ({exc}); give a JPEG, PNG, BMP or TIFF "
                             f"file") from None


def top_k(*, probs: np.ndarray, k: int) -> list[dict[str, Any]]:
    """The ``k`` most likely emotions of one probability vector, most likely first."""
    import numpy as np

    order = np.argsort(-probs, kind="stable")[:k]
    return [{"emotion": EMOTIONS[i], "probability": float(probs[i])} for i in order]


def _print_table(paths: Sequence[Path], results: Sequence[list[dict[str, Any]]]) -> None:
    for path, top in zip(paths, results):
        print(path)
        for item in top:
            print(f"  {item['emotion']:<9} {item['probability']:.3f}")


def run_stream(args: argparse.Namespace) -> int:
    from fer_models.serving.runtime import check_clip_length
    from simulation.launch.output_paths import output_folder
    from simulation.predict.inference import load_predictor
    from simulation.predict.video_predict import VideoInputError, open_source, run_video

    if args.images or (args.video is not None and args.camera is not None):
        raise VideoInputError("give image files, --video FILE or --camera INDEX: one of them")
    if args.max_frames < 0 or args.threads < 0:
        raise ValueError("--max-frames and --threads must be >= 0")
    if args.video is not None and not args.video.is_file():
        raise VideoInputError(f"{args.video}: no such video file")
    out = args.out or (args.video.with_name(f"{args.video.stem}-emotions") if args.video is not None
                       else Path(f"camera{args.camera}-emotions"))
    output_folder(out, flag="--out")  # before the video and the model: fail fast
    cap, fps, name = open_source(video=args.video, camera=args.camera)
    try:
        predictor = load_predictor(path=args.model, threads=args.threads)
        _warn_if_synthetic(predictor.training_config, source=predictor.source)
        if predictor.backend == "pytorch":  # exported models were checked against their sidecar on loading
            check_clip_length(predictor, what="its run config's clip-length")
    except BaseException:
        cap.release()
        raise
    summary = run_video(cap=cap, fps=fps, name=name, predictor=predictor, out=out, max_frames=args.max_frames,
                        smooth=args.smooth, detect_width=args.detect_width,
                        full_scan_every=args.full_scan_every, carry_state=not args.window)
    if args.json:
        print_json(args, summary)
    else:
        print(f"{summary['frames']} frames, {summary['faces']} face track(s), {summary['processing_fps']} frames/s "
              f"({summary['backend']}, state {summary.get('state', 'window')}); outputs in {summary['out']}")
        for track, info in summary["tracks"].items():
            top = ", ".join(f"{k} {v}" for k, v in list(info["labels"].items())[:3])
            print(f"  track {track}: frames {info['first_frame']}-{info['last_frame']}, labels: {top}")
    return 0


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from simulation.predict.inference import load_predictor

    if args.video is not None or args.camera is not None:
        return run_stream(args)
    if not args.images:
        raise ImageReadError("give image files, --video FILE or --camera INDEX")
    if not 1 <= args.top <= NUM_CLASSES:
        raise ValueError(f"--top must be between 1 and {NUM_CLASSES}, got {args.top}")
    images = image_files(args.images)  # before the model is loaded: fail fast on a typo
    predictor = load_predictor(path=args.model, threads=args.threads)  # model.pt / run folder, .onnx or .ts
    _warn_if_synthetic(predictor.training_config, source=predictor.source)
    from fer_models.data.face_crop import FALLBACK, OUTCOME_NAMES

    read = [read_face(path=p, size=predictor.image_size, face_crop=args.face_crop) for p in images]
    faces = np.stack([face for face, _ in read])  # (N, S, S) uint8
    for path, (_, found) in zip(images, read):
        if found == FALLBACK:
            logger.warning("%s: no face found; the fixed head-photo square was used (--face-crop none if the "
                           "image is a face already)", path)
    probs = predictor.probabilities(np.repeat(faces[:, None], predictor.clip_length, axis=1))
    results = [top_k(probs=p, k=args.top) for p in probs]
    if args.json:
        print_json(args, {"model": predictor.source, "round": predictor.training_round,
                          "images": [{"image": str(p), "face": OUTCOME_NAMES[found], "top": r}
                                                                   for p, (_, found), r in zip(images, read, results)]})
    else:
        _print_table(images, results)
    return 0


def _warn_if_synthetic(config: dict, *, source: str) -> None:
    from simulation.predict.inference import synthetic_training_warning

    warning = synthetic_training_warning(config, source=source)
    if warning:
        logger.warning("%s", warning)


def image_files(paths: Sequence[Path]) -> list[Path]:
    """The given files, a folder standing for the image files in it (sorted); missing ones are named."""
    from fer_models.data.fer2013 import IMAGE_EXTENSIONS

    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ImageReadError(f"{path} is a folder without image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise ImageReadError(f"{path}: no such image file or folder")
    return out
