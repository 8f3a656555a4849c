"""Reader for CK+ (Extended Cohn-Kanade) as 48x48 crops: ``<root>/<class>/S<subj>_<seq>_<frame>.png``.

Class folders ``anger contempt disgust fear happy sadness surprise`` map onto the canonical
labels (anger -> angry, sadness -> sad). *contempt* has no FER2013 class: it is dropped by
default; ``keep_contempt=True`` keeps it as **disgust**, its nearest FER2013 class (the merge used
by cross-dataset FER work), e.g. to count all 327 sequences.
Every image carries meta ``subject`` ("S010"), ``sequence`` ("S010_004"), ``frame`` (int) and
``path``, so :func:`fer_models.data.clips.sequence_clips` can build real clips. CK+ has no official
split: subjects are split ~70/15/15 (seeded, see :mod:`fer_models.data.subjects`), never images.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch

from fer_models.common.labels import IMAGE_SIDE, UnknownLabelError, label_index
from fer_models.data.errors import DatasetError
from fer_models.data.images import decode_grayscale
from fer_models.data.store import FaceStore
from fer_models.data.subjects import SPLIT_SEED, subject_split

logger = logging.getLogger(__name__)

SIDE = IMAGE_SIDE
CONTEMPT = "contempt"
#: Canonical class that ``keep_contempt=True`` files contempt under.
CONTEMPT_AS = "disgust"
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
FILE_PATTERN = re.compile(r"(S\d+)_(\d+)_(\d+)\.[A-Za-z]+")
_LAYOUT = ("expected <root>/<class>/S<subject>_<sequence>_<frame>.png (e.g. anger/S010_004_00000017.png) "
           "with class folders anger contempt disgust fear happy sadness surprise (48x48 crops)")


def looks_like_ckplus(root: Path) -> bool:
    """True when some class folder of ``root`` holds a file named like ``S010_004_00000017.png``."""
    try:
        for child in root.iterdir():
            if child.is_dir() and not child.name.startswith("."):
                for f in child.iterdir():
                    if FILE_PATTERN.fullmatch(f.name) and f.suffix.lower() in IMAGE_SUFFIXES:
                        return True
    except OSError:
        return False
    return False


def _class_label(folder: Path, *, keep_contempt: bool) -> int | None:
    name = folder.name.strip().lower()
    if name == CONTEMPT:
        return label_index(CONTEMPT_AS) if keep_contempt else None
    try:
        return label_index(name)
    except UnknownLabelError as exc:
        raise DatasetError(f"{folder}: class folder name is not an emotion: {exc}; {_LAYOUT}") from None


def _decode(path: Path) -> np.ndarray:
    array = decode_grayscale(path, expected="48x48 image")
    if array.shape != (SIDE, SIDE):
        raise DatasetError(f"{path}: image is {array.shape[1]}x{array.shape[0]}, expected {SIDE}x{SIDE} "
                           f"(the CK+48 crops); for full-frame CK+ crop the faces first or use a manifest CSV")
    return array


def _list(root: Path, *, keep_contempt: bool) -> tuple[list[tuple[str, int, re.Match[str]]], int]:
    """``(relative path, label, name match)`` per image sorted by path, and the dropped count."""
    entries: list[tuple[str, int, re.Match[str]]] = []
    dropped = 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = _class_label(folder, keep_contempt=keep_contempt)
        for file in sorted(folder.iterdir()):
            if file.name.startswith(".") or file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            match = FILE_PATTERN.fullmatch(file.name)
            if match is None:
                raise DatasetError(f"{file}: file name does not follow S<subject>_<sequence>_<frame>; "
                                   f"{_LAYOUT}")
            if label is None:
                dropped += 1
                continue
            entries.append((file.relative_to(root).as_posix(), label, match))
    return entries, dropped


def read_ckplus(*, path: str | Path, keep_contempt: bool = False, seed: int = SPLIT_SEED) -> FaceStore:
    """Read the CK+48 class-folder layout into a store named ``ckplus`` with subject-disjoint splits."""
    root = Path(path)
    if not root.exists():
        raise DatasetError(f"{root} does not exist: give the CK+ folder; {_LAYOUT}")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder: {_LAYOUT}")
    entries, dropped = _list(root, keep_contempt=keep_contempt)
    if dropped:
        logger.info("%s: dropped %d contempt image(s) (no FER2013 class; keep_contempt=True files "
                    "them under %s)", root, dropped, CONTEMPT_AS)
    if not entries:
        raise DatasetError(f"{root} contains no CK+ images: {_LAYOUT}")
    sequences: dict[str, int] = {}
    for rel, label, m in entries:
        seq = f"{m[1]}_{m[2]}"
        if sequences.setdefault(seq, label) != label:
            raise DatasetError(f"{root / rel}: sequence {seq} also appears under another class folder; "
                               f"every frame of a sequence must carry the same emotion")
    subjects = np.array([m[1] for _, _, m in entries])
    images = np.stack([_decode(root / rel) for rel, _, _ in entries])
    store = FaceStore(
        name="ckplus",
        images=torch.from_numpy(images),
        labels=torch.tensor([label for _, label, _ in entries], dtype=torch.int64),
        splits=torch.from_numpy(subject_split(subjects, seed=seed)),
        source=str(root),
        meta={
            "path": np.array([rel for rel, _, _ in entries]),
            "subject": subjects,
            "sequence": np.array([f"{m[1]}_{m[2]}" for _, _, m in entries]),
            "frame": np.array([int(m[3]) for _, _, m in entries], dtype=np.int64),
        },
    )
    logger.info("read %s from %d subjects, %d sequences", store.describe(), len(np.unique(subjects)),
                len(sequences))
    return store


__all__ = ["read_ckplus", "looks_like_ckplus", "CONTEMPT_AS"]
