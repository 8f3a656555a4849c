"""Expression sequences (onset to apex) as data: the folder-per-sequence reader and the checks both layouts share.

Folder layout (CK+'s own): ``<root>[/images]/<emotion>/<sequence>/<frame images>``, e.g.
``images/anger/S055_004/S055_004_00000001.png``. A frame's number is the last run of digits in its file name
(frames are ordered by it, not by name); the sequence is labelled by its emotion folder (CK+ labels a sequence by
its apex; ``contempt`` has no FER2013 class and is dropped, as in :mod:`fer_models.data.ckplus`); its subject is
the folder name up to the first ``_`` (``S055_004`` -> ``S055``; a name without ``_`` is its own subject). Splits
are subject-disjoint (:func:`fer_models.data.subjects.subject_split`). Whole camera frames become 48x48 faces with
ONE face square per sequence (:func:`fer_models.data.face_crop.sequence_face_squares`), so a clip moves only as
the face does. The manifest layout (a CSV with ``sequence`` and ``frame`` columns) is read by
:mod:`fer_models.data.manifest` with the same checks (:func:`check_frames`, :func:`stack_frames`).

Every store carries meta ``path``, ``subject``, ``sequence``, ``frame`` and ``face_detected``; clips of T frames
are made from it by :func:`fer_models.data.clips.sequence_clips`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from fer_models.common.labels import UnknownLabelError, label_index
from fer_models.data.ckplus import CONTEMPT, IMAGE_SUFFIXES
from fer_models.data.errors import DatasetError
from fer_models.data.face_crop import CropCounts, check_face_crop, sequence_face_squares
from fer_models.data.images import decode_grayscale
from fer_models.data.store import FaceStore
from fer_models.data.subjects import SPLIT_SEED, subject_split

logger = logging.getLogger(__name__)

#: A sequence needs at least this many frames (one frame has no temporal evolution: it is a still).
MIN_FRAMES = 2
LAYOUT = ("expected <root>[/images]/<emotion>/<sequence>/<frame images> (e.g. images/anger/S055_004/"
          "S055_004_00000001.png: one folder per sequence, frames numbered from onset to apex)")
_DIGITS = re.compile(r"(\d+)(?!.*\d)")
_FRAME_FILE = "a readable frame image (png, jpg, bmp, tiff): re-export it, or remove it from its sequence"


def sequence_root(root: Path) -> Path:
    """``root/images`` when the dataset keeps its emotion folders there (CK+'s layout), else ``root``."""
    images = root / "images"
    return images if images.is_dir() else root


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_image(file: Path) -> bool:
    return file.is_file() and not file.name.startswith(".") and file.suffix.lower() in IMAGE_SUFFIXES


def _emotion(name: str) -> bool:
    try:
        label_index(name)
    except UnknownLabelError:
        return name.strip().lower() == CONTEMPT
    return True


def looks_like_sequences(root: Path) -> bool:
    """True when an emotion folder of ``root`` (or ``root/images``) holds a sub-folder of frame images."""
    try:
        base = sequence_root(root)
        for emotion in _visible_dirs(base):
            if _emotion(emotion.name):
                for seq in _visible_dirs(emotion):
                    if any(_is_image(f) for f in seq.iterdir()):
                        return True
    except OSError:
        return False
    return False


def frame_number(file: Path) -> int:
    """The frame's number: the last run of digits in the file name (``S055_004_00000012.png`` -> 12)."""
    match = _DIGITS.search(file.stem)
    if match is None:
        raise DatasetError(f"{file}: frame file name has no frame number; name frames with their number from "
                           f"onset to apex (e.g. S055_004_00000001.png); {LAYOUT}")
    return int(match.group(1))


def subject_of(sequence: str) -> str:
    """The subject of a sequence folder name: its part before the first ``_`` (``S055_004`` -> ``S055``)."""
    return sequence.split("_", 1)[0]


def check_frames(*, sequence: str, numbers: Sequence[int], names: Sequence[str], where: str) -> np.ndarray:
    """The order of a sequence's frames by number (``argsort``); refuses fewer than :data:`MIN_FRAMES` frames
    and a frame number given twice. ``names`` (one per frame) and ``where`` (the folder or CSV) go into the error."""
    if len(numbers) < MIN_FRAMES:
        found = f"one frame ({names[0]})" if numbers else "no frame images"
        raise DatasetError(f"{where}: sequence {sequence!r} has {found}; a sequence needs at least {MIN_FRAMES} "
                           f"frames from onset to apex: add its other frames, or give a still image no sequence")
    order = np.argsort(np.asarray(numbers), kind="stable")
    ranked = np.asarray(numbers)[order]
    twice = np.flatnonzero(ranked[1:] == ranked[:-1])
    if len(twice):
        a, b = names[order[twice[0]]], names[order[twice[0] + 1]]
        raise DatasetError(f"{where}: sequence {sequence!r} has frame number {ranked[twice[0]]} twice ({a} and "
                           f"{b}); each frame needs its own number: remove or renumber one of them")
    return order


def stack_frames(frames: Sequence[np.ndarray], *, sequence: str, names: Sequence[str], where: str) -> np.ndarray:
    """The decoded frames of one sequence as ``uint8 (n, H, W)``; frames of different sizes are refused."""
    odd = next((i for i, f in enumerate(frames) if f.shape != frames[0].shape), None)
    if odd is not None:
        (h0, w0), (h1, w1) = frames[0].shape, frames[odd].shape
        raise DatasetError(f"{where}: sequence {sequence!r} mixes frame sizes: {names[0]} is {w0}x{h0} but "
                           f"{names[odd]} is {w1}x{h1}; every frame of a sequence must have one size (one camera): "
                           f"resize the odd frames to {w0}x{h0}, or remove them")
    return np.stack(frames)


def _sequence_folders(base: Path) -> tuple[list[tuple[int, Path]], int]:
    """``(label, folder)`` of every sequence, sorted by emotion folder then name, and the dropped (contempt) count."""
    found: list[tuple[int, Path]] = []
    dropped = 0
    for emotion in _visible_dirs(base):
        if emotion.name.strip().lower() == CONTEMPT:
            dropped += len(_visible_dirs(emotion))
            continue
        try:
            label = label_index(emotion.name)
        except UnknownLabelError as exc:
            raise DatasetError(f"{emotion}: folder name is not an emotion: {exc}; {LAYOUT}") from None
        loose = next((f for f in sorted(emotion.iterdir()) if _is_image(f)), None)
        if loose is not None:
            raise DatasetError(f"{loose}: a frame lies directly in the emotion folder; put each sequence's frames "
                               f"in a folder of their own; {LAYOUT}")
        found.extend((label, seq) for seq in _visible_dirs(emotion))
    return found, dropped


def _read_one(folder: Path, *, root: Path, face_crop: str) -> tuple[np.ndarray, list[str], list[int], int]:
    """A sequence folder's 48x48 faces in frame order, their paths (relative to ``root``), numbers, detection."""
    files = [f for f in sorted(folder.iterdir()) if _is_image(f)]
    numbers = [frame_number(f) for f in files]
    order = check_frames(sequence=folder.name, numbers=numbers, names=[f.name for f in files], where=str(folder))
    files, numbers = [files[i] for i in order], [numbers[i] for i in order]
    where = f"sequence {folder.name!r}"
    frames = [decode_grayscale(f, where=where, expected=_FRAME_FILE) for f in files]
    faces, detected = sequence_face_squares(stack_frames(frames, sequence=folder.name, names=[f.name for f in files],
                                                         where=str(folder)), mode=face_crop)
    return faces, [f.relative_to(root).as_posix() for f in files], numbers, detected


def read_sequences(*, path: str | Path, face_crop: str = "auto", seed: int = SPLIT_SEED) -> FaceStore:
    """Read the folder-per-sequence layout into a store named after ``path``, frames in (sequence, frame) order."""
    check_face_crop(face_crop)
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder: {LAYOUT}")
    folders, dropped = _sequence_folders(sequence_root(root))
    if dropped:
        logger.info("%s: dropped %d contempt sequence(s) (no FER2013 class)", root, dropped)
    if not folders:
        raise DatasetError(f"{root} holds no sequence folders: {LAYOUT}")
    names = [f.name for _, f in folders]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DatasetError(f"{root}: sequence {repeated[0]!r} has a folder under two emotions; a sequence has one "
                           f"label (its apex): keep it under one emotion folder")
    faces, paths, frames, labels, sequences, detected = [], [], [], [], [], []
    for label, folder in folders:
        crops, rel, numbers, found = _read_one(folder, root=root, face_crop=face_crop)
        faces.append(crops)
        paths += rel
        frames += numbers
        labels += [label] * len(rel)
        sequences += [folder.name] * len(rel)
        detected += [found] * len(rel)
    subjects = np.array([subject_of(s) for s in sequences])
    CropCounts.of(np.array(detected)).log(root, face_crop)
    store = FaceStore(
        name=root.name, images=torch.from_numpy(np.concatenate(faces)), labels=torch.tensor(labels, dtype=torch.int64),
        splits=torch.from_numpy(subject_split(subjects, seed=seed)), source=str(root),
        meta={"path": np.array(paths), "subject": subjects, "sequence": np.array(sequences),
              "frame": np.array(frames, dtype=np.int64), "face_detected": np.array(detected, dtype=np.int64)})
    logger.info("read %s: %d sequences of %d subjects", store.describe(), len(folders), len(np.unique(subjects)))
    return store


__all__ = ["read_sequences", "looks_like_sequences", "sequence_root", "frame_number", "subject_of", "check_frames",
           "stack_frames", "MIN_FRAMES", "LAYOUT"]
