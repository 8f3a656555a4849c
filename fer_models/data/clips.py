"""Samples of T frames for the temporal model: real sequences, pseudo-sequences or single frames.

``clip_source`` picks how a sample's T frames are made (:func:`make_clips`):

* ``real``: :func:`sequence_clips`. Each sequence (meta ``sequence`` + ``frame``, e.g. CK+'s
  three peak frames) is ONE sample, the privacy unit; augmentation should then apply one
  transform to all its frames (``ClipSet.real_clips`` is True). Images without a sequence id
  (e.g. FER2013 inside a combined store) become one-image sequences, their frame repeated T times.
* ``pseudo``: each static image repeated T times; the augmenter turns the copies into T
  independently augmented views. This is our reading of the paper's "temporal dynamics with data
  enrichment": still images give no motion, so the recurrent model sees an enriched
  pseudo-sequence of plausible variations of one face.
* ``none``: static images, T forced to 1.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from fer_models.data.errors import DatasetError
from fer_models.data.samples import ClipSet, static_clips
from fer_models.data.store import FaceStore

logger = logging.getLogger(__name__)

CLIP_SOURCES: tuple[str, ...] = ("real", "pseudo", "none")


def _check_length(clip_length: int) -> int:
    if isinstance(clip_length, bool) or not isinstance(clip_length, (int, np.integer)) or clip_length < 1:
        raise ValueError(f"clip_length={clip_length!r} is invalid: expected an integer >= 1")
    return int(clip_length)


def _fit(frames: np.ndarray, length: int) -> np.ndarray:
    """The last ``length`` frames (the peak), or the frames padded by repeating the last one."""
    if len(frames) >= length:
        return frames[len(frames) - length:]
    return np.concatenate([frames, np.repeat(frames[-1:], length - len(frames))])


def sequence_clips(store: FaceStore, indices: np.ndarray, *, clip_length: int) -> ClipSet:
    """One sample per sequence among ``indices``: its images ordered by frame, label = its label.

    Samples are ordered by their sequence's first store index; a sequence whose images carry
    different labels raises :class:`DatasetError`.
    """
    length = _check_length(clip_length)
    missing = [k for k in ("sequence", "frame") if k not in store.meta]
    if missing:
        raise DatasetError(f"{store.source or store.name}: has no meta {' / '.join(missing)}, so real "
                           f"clips cannot be built; use clip-source pseudo or none, or a dataset with "
                           f"sequences (CK+, or a manifest with sequence and frame columns)")
    idx = np.unique(np.asarray(indices, dtype=np.int64))
    seq = np.asarray(store.meta["sequence"]).astype(str)[idx]
    frame = np.asarray(store.meta["frame"]).astype(np.int64)[idx]
    labels = store.labels.numpy()
    lonely = idx[seq == ""]  # images without a sequence id: one-image sequences
    first = [lonely]
    clips = [np.repeat(lonely[:, None], length, axis=1)]
    clip_labels = [labels[lonely]]
    has_seq = seq != ""
    s_idx, s_seq, s_frame = idx[has_seq], seq[has_seq], frame[has_seq]
    order = np.lexsort((s_idx, s_frame, s_seq))  # by sequence, then frame, then store index
    s_seq = s_seq[order]
    bounds = np.flatnonzero(np.r_[True, s_seq[1:] != s_seq[:-1], True]) if len(s_seq) else np.zeros(1, int)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        members = s_idx[order[start:stop]]
        seq_labels = np.unique(labels[members])
        if len(seq_labels) > 1:
            raise DatasetError(f"{store.source or store.name}: sequence {str(s_seq[start])!r} mixes labels "
                               f"{seq_labels.tolist()}; every frame of a sequence must share one label")
        first.append(members.min(keepdims=True))
        clips.append(_fit(members, length)[None])
        clip_labels.append(seq_labels)
    if len(lonely):
        logger.info("%s: %d image(s) without a sequence used as one-image clips", store.name, len(lonely))
    by_first = np.argsort(np.concatenate(first), kind="stable")
    frames = np.concatenate(clips)[by_first]
    return ClipSet(store.images, torch.from_numpy(np.ascontiguousarray(frames)),
                   torch.from_numpy(np.concatenate(clip_labels)[by_first].astype(np.int64)), real_clips=True)


def make_clips(store: FaceStore, indices: np.ndarray, *, clip_length: int, clip_source: str) -> ClipSet:
    """The samples of ``indices`` as clips of ``clip_length`` frames made the ``clip_source`` way."""
    length = _check_length(clip_length)
    if clip_source == "real":
        return sequence_clips(store, indices, clip_length=length)
    if clip_source == "pseudo":
        return static_clips(store, indices, clip_length=length)
    if clip_source == "none":
        return static_clips(store, indices, clip_length=1)
    raise ValueError(f"unknown clip_source {clip_source!r}: expected one of {', '.join(CLIP_SOURCES)}")


__all__ = ["CLIP_SOURCES", "sequence_clips", "make_clips"]
