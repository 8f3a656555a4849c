"""Samples of T frames for the temporal model: real sequences, pseudo-sequences or single frames.

``clip_source`` picks how a sample's T frames are made (:func:`make_clips`):

* ``real``: :func:`sequence_clips`. Each sequence (meta ``sequence`` + ``frame``, e.g. CK+'s
  three peak frames, or whole onset-to-apex sequences, :mod:`fer_models.data.sequences`) is ONE
  sample, the privacy unit; augmentation should then apply one transform to all its frames
  (``ClipSet.real_clips`` is True). Which T frames (``sampling``, :func:`frame_positions`): ``last``
  (the last T, ending at the apex), ``uniform`` (T spread evenly from first to last frame) or
  ``random`` (a window of T consecutive frames, drawn per sequence from ``seed`` and the sequence's
  name). A sequence of fewer than T frames is padded (``short="pad"``: see :func:`frame_positions`)
  or refused (``short="refuse"``). Images without a sequence id (e.g. FER2013 inside a combined
  store) become one-image sequences, their frame repeated T times.
* ``pseudo``: each static image repeated T times; the augmenter turns the copies into T
  independently augmented views. This is our reading of the paper's "temporal dynamics with data
  enrichment": still images give no motion, so the recurrent model sees an enriched
  pseudo-sequence of plausible variations of one face.
* ``none``: static images, T forced to 1.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Sequence

import numpy as np
import torch

from fer_models.data.errors import DatasetError
from fer_models.data.samples import ClipSet, static_clips
from fer_models.data.store import FaceStore

logger = logging.getLogger(__name__)

CLIP_SOURCES: tuple[str, ...] = ("real", "pseudo", "none")
#: Which T frames of a sequence make its clip (run setting clip-sampling).
CLIP_SAMPLINGS: tuple[str, ...] = ("last", "uniform", "random")
#: What a sequence shorter than T becomes (run setting clip-short).
SHORT_RULES: tuple[str, ...] = ("pad", "refuse")


def _check_length(clip_length: int) -> int:
    if isinstance(clip_length, bool) or not isinstance(clip_length, (int, np.integer)) or clip_length < 1:
        raise ValueError(f"clip_length={clip_length!r} is invalid: expected an integer >= 1")
    return int(clip_length)


def frame_positions(n: int, length: int, *, sampling: str = "last",
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """Positions (0 = first frame) of the ``length`` frames a clip takes from a sequence of ``n`` ordered frames.

    ``last``: ``n-T .. n-1``. ``uniform``: ``round(k (n-1) / (T-1))`` for ``k = 0..T-1`` (halves rounded up;
    first and last frame included; T = 1 takes the last). ``random``: ``s .. s+T-1`` with ``s`` uniform in
    ``0..n-T`` from ``rng``. With ``n < T`` (padding): ``uniform`` repeats frames evenly (the same formula),
    ``last`` and ``random`` take every frame then repeat the last one.
    """
    if sampling not in CLIP_SAMPLINGS:
        raise ValueError(f"unknown clip sampling {sampling!r}: expected one of {', '.join(CLIP_SAMPLINGS)}")
    if n < 1:
        raise ValueError(f"a sequence needs at least one frame, got n={n}")
    if sampling == "uniform":
        if length == 1:
            return np.array([n - 1])
        k = np.arange(length)
        return (2 * k * (n - 1) + (length - 1)) // (2 * (length - 1))
    if n < length:
        return np.concatenate([np.arange(n), np.full(length - n, n - 1)])
    start = n - length
    if sampling == "random":
        if rng is None:
            raise ValueError("clip sampling 'random' needs a seeded generator (rng)")
        start = int(rng.integers(0, n - length + 1))
    return np.arange(start, start + length)


def _sequence_rng(seed: int | Sequence[int], sequence: str) -> np.random.Generator:
    """The window generator of one sequence: from ``seed`` and the sequence's name alone, so a sequence gets the
    same window whichever other sequences share its client or split."""
    name = int.from_bytes(hashlib.sha256(sequence.encode()).digest()[:8], "little")
    return np.random.default_rng([*np.atleast_1d(np.asarray(seed, dtype=np.int64)).tolist(), name])


def _refuse_short(store: FaceStore, short: list[tuple[str, int]], length: int) -> None:
    names = ", ".join(f"{name!r} ({n} frames)" for name, n in short[:3]) + (f" and {len(short) - 3} more"
                                                                          if len(short) > 3 else "")
    raise DatasetError(f"{store.source or store.name}: {len(short)} sequence(s) have fewer frames than clip-length="
                       f"{length}: {names}; lower clip-length to at most {min(n for _, n in short)}, or set "
                       f"clip-short=pad to pad them (their frames in order, the last repeated)")


def sequence_clips(store: FaceStore, indices: np.ndarray, *, clip_length: int, sampling: str = "last",
                   short: str = "pad", seed: int | Sequence[int] = 0) -> ClipSet:
    """One sample per sequence among ``indices``: ``clip_length`` of its images ordered by frame, picked the
    ``sampling`` way (:func:`frame_positions`; ``random`` from ``seed``), label = its label.

    Samples are ordered by their sequence's first store index; a sequence whose images carry
    different labels raises :class:`DatasetError`, and so does one shorter than ``clip_length`` with
    ``short="refuse"``.
    """
    length = _check_length(clip_length)
    if short not in SHORT_RULES:
        raise ValueError(f"unknown clip-short rule {short!r}: expected one of {', '.join(SHORT_RULES)}")
    if sampling not in CLIP_SAMPLINGS:
        raise ValueError(f"unknown clip sampling {sampling!r}: expected one of {', '.join(CLIP_SAMPLINGS)}")
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
    padded: list[tuple[str, int]] = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        members, name = s_idx[order[start:stop]], str(s_seq[start])
        seq_labels = np.unique(labels[members])
        if len(seq_labels) > 1:
            raise DatasetError(f"{store.source or store.name}: sequence {name!r} mixes labels "
                               f"{seq_labels.tolist()}; every frame of a sequence must share one label")
        if len(members) < length:
            padded.append((name, len(members)))
        rng = _sequence_rng(seed, name) if sampling == "random" else None
        first.append(members.min(keepdims=True))
        clips.append(members[frame_positions(len(members), length, sampling=sampling, rng=rng)][None])
        clip_labels.append(seq_labels)
    if padded and short == "refuse":
        _refuse_short(store, padded, length)
    if padded:
        logger.info("%s: %d sequence(s) shorter than clip-length=%d padded (clip-short=pad), e.g. %r (%d frames)",
                    store.name, len(padded), length, *padded[0])
    if len(lonely):
        logger.info("%s: %d image(s) without a sequence used as one-image clips", store.name, len(lonely))
    by_first = np.argsort(np.concatenate(first), kind="stable")
    frames = np.concatenate(clips)[by_first]
    return ClipSet(store.images, torch.from_numpy(np.ascontiguousarray(frames)),
                   torch.from_numpy(np.concatenate(clip_labels)[by_first].astype(np.int64)), real_clips=True)


_HINTED: set[str] = set()


def _hint_real_clips(store: FaceStore, length: int) -> None:
    """Say once per dataset that pseudo-clips of a store with real sequences repeat single frames."""
    seq = store.meta.get("sequence")
    if length == 1 or seq is None or store.name in _HINTED or not (np.asarray(seq).astype(str) != "").any():
        return
    _HINTED.add(store.name)
    logger.warning("%s holds real sequences, but clip-source=pseudo makes each clip from ONE frame repeated %d "
                   "times; set clip-source=real to train on the sequences' frames", store.name, length)


def make_clips(store: FaceStore, indices: np.ndarray, *, clip_length: int, clip_source: str, sampling: str = "last",
               short: str = "pad", seed: int | Sequence[int] = 0) -> ClipSet:
    """The samples of ``indices`` as clips of ``clip_length`` frames made the ``clip_source`` way
    (``sampling``, ``short`` and ``seed``: real clips only, see :func:`sequence_clips`)."""
    length = _check_length(clip_length)
    if clip_source == "real":
        return sequence_clips(store, indices, clip_length=length, sampling=sampling, short=short, seed=seed)
    if clip_source == "pseudo":
        _hint_real_clips(store, length)
        return static_clips(store, indices, clip_length=length)
    if clip_source == "none":
        return static_clips(store, indices, clip_length=1)
    raise ValueError(f"unknown clip_source {clip_source!r}: expected one of {', '.join(CLIP_SOURCES)}")


__all__ = ["CLIP_SOURCES", "CLIP_SAMPLINGS", "SHORT_RULES", "frame_positions", "sequence_clips", "make_clips"]
