"""Reader for a manifest CSV: any labelled face images, one row each.

Header ``path,label`` plus optional ``group,subject,sequence,frame,split`` (any order; other
columns are ignored). ``path`` is relative to the CSV's folder or absolute; ``label`` is a
canonical emotion, an alias (``anger``, ``sadness`` ...) or an index 0..6. Images of any size and
mode are converted to grayscale and cropped to a 48x48 face by ``face-crop``
(:mod:`fer_models.data.face_crop`: ``auto`` searches a face in photos larger than 96 pixels, e.g.
whole-head photos, and takes already-cropped faces as they are; the counts are logged and kept in
meta ``face_detected``). Splits: the ``split`` column
(train/val/test) when present, else subject-disjoint (seeded) when ``subject`` is present, else a
seeded split of the images stratified by class. ``sequence`` ids must be unique across the file.
An image listed twice is used once (a count is logged), or refused if its label or split differ.
With both ``sequence`` and ``frame`` columns the file lists expression sequences (one row per frame,
e.g. ``ckplus_sequences/manifest.csv``): each sequence needs at least 2 distinct frame numbers and
frames of one size, and all its frames are cut with ONE face square
(:func:`fer_models.data.face_crop.sequence_face_squares`), like the folder layout of
:mod:`fer_models.data.sequences`; rows with an empty ``sequence`` stay still images.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fer_models.common.labels import IMAGE_SIDE, NUM_CLASSES, UnknownLabelError, label_index
from fer_models.data.csv_rows import csv_rows
from fer_models.data.errors import DatasetError
from fer_models.data.face_crop import CropCounts, check_face_crop, face_square, sequence_face_squares
from fer_models.data.images import decode_grayscale
from fer_models.data.sequences import check_frames, stack_frames
from fer_models.data.store import SPLIT_NAMES, FaceStore
from fer_models.data.subjects import SPLIT_SEED, image_split, subject_split

logger = logging.getLogger(__name__)

SIDE = IMAGE_SIDE
REQUIRED: tuple[str, ...] = ("path", "label")
OPTIONAL: tuple[str, ...] = ("group", "subject", "sequence", "frame", "split")
SPLIT_ALIASES: dict[str, str] = {"train": "train", "training": "train", "val": "val", "valid": "val",
                                 "validation": "val", "test": "test"}
_HEADER = f"expected a header {','.join(REQUIRED)}[,{','.join(OPTIONAL)}]"


@dataclass(frozen=True)
class _Row:
    line: int
    file: Path
    label: int
    fields: dict[str, str]


def looks_like_manifest(path: Path) -> bool:
    """True when ``path`` is a CSV whose header has ``path`` and ``label`` columns."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    names = {h.strip().lower() for h in header}
    return set(REQUIRED) <= names


def _parse_label(text: str, *, where: str) -> int:
    text = text.strip()
    if text.isdigit():
        value = int(text)
        if value < NUM_CLASSES:
            return value
    try:
        return label_index(text)
    except UnknownLabelError as exc:
        raise DatasetError(f"{where}: label {text!r} is not an emotion: {exc}, or an index "
                           f"0..{NUM_CLASSES - 1}") from None


def _columns(header: list[str], *, csv_path: Path) -> dict[str, int]:
    found = {h.strip().lower(): i for i, h in enumerate(header)}
    missing = [c for c in REQUIRED if c not in found]
    if missing:
        raise DatasetError(f"{csv_path} line 1: missing column(s) {', '.join(missing)}; found "
                           f"{', '.join(repr(h) for h in header) or '(none)'}; {_HEADER}")
    return {c: found[c] for c in REQUIRED + OPTIONAL if c in found}


def _read_rows(csv_path: Path) -> tuple[list[_Row], dict[str, int]]:
    rows: list[_Row] = []
    cols: dict[str, int] = {}
    for line, row, cols in csv_rows(csv_path, columns=lambda h: _columns(h, csv_path=csv_path), expected_header=_HEADER):
        where = f"{csv_path} line {line}"
        fields = {name: row[i].strip() for name, i in cols.items()}
        if not fields["path"]:
            raise DatasetError(f"{where}: empty path; expected an image path")
        file = Path(fields["path"]).expanduser()
        rows.append(_Row(line, file if file.is_absolute() else csv_path.parent / file,
                         _parse_label(fields["label"], where=where), fields))
    if not rows:
        raise DatasetError(f"{csv_path} has a header but no rows: expected one row per image")
    return rows, cols


def _drop_repeated_paths(rows: list[_Row], *, csv_path: Path) -> list[_Row]:
    """Each image once: a row repeating an earlier row's image is dropped (with a count in the log),
    or refused when it gives the image another label or split (one image, two answers)."""
    first: dict[Path, _Row] = {}
    kept: list[_Row] = []
    for row in rows:
        key = Path(os.path.normpath(os.path.abspath(row.file)))
        earlier = first.setdefault(key, row)
        if earlier is row:
            kept.append(row)
            continue
        for name, value, before in (("label", row.label, earlier.label),
                                    ("split", row.fields.get("split", ""), earlier.fields.get("split", ""))):
            if value != before:
                raise DatasetError(f"{csv_path} line {row.line}: image {row.file} is listed again (first on line "
                                   f"{earlier.line}) with another {name}; list each image once")
    if len(kept) < len(rows):
        logger.warning("%s: %d rows repeat an image listed earlier with the same label; each image is used "
                       "once (%d images)", csv_path, len(rows) - len(kept), len(kept))
    return kept


def image_fingerprint(*, path: str | Path) -> str:
    """Digest of (path, size, mtime) of every image a manifest lists, so its cache notices edits."""
    csv_path = Path(path)
    rows, _ = _read_rows(csv_path)
    digest = hashlib.sha256()
    for row in rows:
        try:
            st = os.stat(row.file)
        except OSError:
            raise DatasetError(f"{csv_path} line {row.line}: image {row.file} does not exist; "
                               f"paths are relative to {csv_path.parent} or absolute") from None
        digest.update(f"{row.file}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _decode_row(row: _Row, *, csv_path: Path) -> np.ndarray:
    where = f"{csv_path} line {row.line}"
    if not row.file.is_file():
        raise DatasetError(f"{where}: image {row.file} does not exist; paths are relative to "
                           f"{csv_path.parent} or absolute")
    return decode_grayscale(row.file, where=where, expected="image file (png, jpg, bmp, tiff ...)")


def _sequence_rows(rows: list[_Row], *, csv_path: Path) -> dict[str, list[int]]:
    """Row positions of each sequence in frame order (a file with sequence and frame columns), checked."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.fields["sequence"]:
            if not r.fields["frame"]:
                raise DatasetError(f"{csv_path} line {r.line}: sequence {r.fields['sequence']!r} row has an empty "
                                   f"frame; give every frame of a sequence its number (onset = 1), or leave the "
                                   f"sequence empty for a still image")
            groups.setdefault(r.fields["sequence"], []).append(i)
    numbers = _frames(rows, csv_path=csv_path)
    for seq, pos in groups.items():
        names = [f"line {rows[i].line} ({rows[i].fields['path']})" for i in pos]
        order = check_frames(sequence=seq, numbers=numbers[pos].tolist(), names=names, where=str(csv_path))
        groups[seq] = [pos[j] for j in order]
    return groups


def _decode_all(rows: list[_Row], *, csv_path: Path, face_crop: str,
                sequences: dict[str, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """48x48 faces and face_detected of every row: stills one by one, each sequence with one face square."""
    images = np.empty((len(rows), SIDE, SIDE), dtype=np.uint8)
    detected = np.empty(len(rows), dtype=np.int64)
    in_sequence = {i for pos in sequences.values() for i in pos}
    for i, row in enumerate(rows):
        if i not in in_sequence:
            images[i], detected[i] = face_square(_decode_row(row, csv_path=csv_path), mode=face_crop)
    for seq, pos in sequences.items():
        frames = stack_frames([_decode_row(rows[i], csv_path=csv_path) for i in pos], sequence=seq,
                              names=[f"line {rows[i].line} ({rows[i].fields['path']})" for i in pos],
                              where=str(csv_path))
        images[pos], detected[pos] = sequence_face_squares(frames, mode=face_crop)
    return images, detected


def _text_column(rows: list[_Row], name: str) -> np.ndarray:
    return np.array([r.fields[name] for r in rows])


def _frames(rows: list[_Row], *, csv_path: Path) -> np.ndarray:
    values = []
    for r in rows:
        text = r.fields["frame"]
        if text and not text.lstrip("-").isdigit():
            raise DatasetError(f"{csv_path} line {r.line}: frame {text!r} is not an integer; "
                               f"expected the frame number within its sequence (or empty)")
        values.append(int(text) if text else -1)
    return np.array(values, dtype=np.int64)


def _splits(rows: list[_Row], cols: dict[str, int], *, csv_path: Path, seed: int) -> np.ndarray:
    if "split" in cols:
        codes = []
        for r in rows:
            name = SPLIT_ALIASES.get(r.fields["split"].lower())
            if name is None:
                raise DatasetError(f"{csv_path} line {r.line}: split {r.fields['split']!r} is not one "
                                   f"of {', '.join(SPLIT_NAMES)}")
            codes.append(SPLIT_NAMES.index(name))
        return np.array(codes, dtype=np.int8)
    if "subject" in cols:
        for r in rows:
            if not r.fields["subject"]:
                raise DatasetError(f"{csv_path} line {r.line}: empty subject; every row needs its "
                                   f"subject to split by subject (or give a split column)")
        return subject_split(_text_column(rows, "subject"), seed=seed)
    return image_split(np.array([r.label for r in rows]), seed=seed)


def _check_sequences(rows: list[_Row], splits: np.ndarray, *, csv_path: Path) -> None:
    seen: dict[str, tuple[int, int, int]] = {}
    for r, split in zip(rows, splits.tolist()):
        seq = r.fields["sequence"]
        if not seq:
            continue
        first = seen.setdefault(seq, (r.line, r.label, split))
        if first[1] != r.label:
            raise DatasetError(f"{csv_path} line {r.line}: sequence {seq!r} has another label than on "
                               f"line {first[0]}; every frame of a sequence must share its label")
        if first[2] != split:
            raise DatasetError(f"{csv_path} line {r.line}: sequence {seq!r} is in split "
                               f"{SPLIT_NAMES[split]} but in {SPLIT_NAMES[first[2]]} on line "
                               f"{first[0]}; a sequence must stay in one split")


def read_manifest(*, path: str | Path, seed: int = SPLIT_SEED, face_crop: str = "auto") -> FaceStore:
    """Read a manifest CSV into a store named after the CSV file (e.g. ``faces`` for faces.csv)."""
    check_face_crop(face_crop)
    csv_path = Path(path)
    if not csv_path.is_file():
        raise DatasetError(f"{csv_path} is not a file: expected a manifest CSV; {_HEADER}")
    rows, cols = _read_rows(csv_path)
    rows = _drop_repeated_paths(rows, csv_path=csv_path)
    splits = _splits(rows, cols, csv_path=csv_path, seed=seed)
    if "sequence" in cols:  # checked before the (slow) decoding
        _check_sequences(rows, splits, csv_path=csv_path)
    sequences = _sequence_rows(rows, csv_path=csv_path) if {"sequence", "frame"} <= set(cols) else {}
    logger.info("%s: decoding %d images", csv_path, len(rows))
    images, detected = _decode_all(rows, csv_path=csv_path, face_crop=face_crop, sequences=sequences)
    CropCounts.of(detected).log(csv_path, face_crop)
    meta: dict[str, np.ndarray] = {"path": np.array([r.fields["path"] for r in rows]), "face_detected": detected}
    for name in ("group", "subject", "sequence"):
        if name in cols:
            meta[name] = _text_column(rows, name)
    if "frame" in cols:
        meta["frame"] = _frames(rows, csv_path=csv_path)
    store = FaceStore(
        name=csv_path.stem,
        images=torch.from_numpy(images),
        labels=torch.tensor([r.label for r in rows], dtype=torch.int64),
        splits=torch.from_numpy(splits),
        source=str(csv_path),
        meta=meta,
    )
    logger.info("read %s", store.describe())
    return store


__all__ = ["read_manifest", "looks_like_manifest", "image_fingerprint"]
