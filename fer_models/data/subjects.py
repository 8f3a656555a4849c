"""Seeded train/val/test splits for datasets without an official split.

Faces of one person must never sit in two splits, or the test set leaks identity: readers that
know the subject (CK+, JAFFE, a manifest's ``subject`` column) split with :func:`subject_split`.
Only a manifest without subjects falls back to :func:`image_split` (stratified by class).
Split counts are apportioned by largest remainder, ties going to test, then val, so JAFFE's 10
posers split 7/1/2.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np

from fer_models.data.store import SPLIT_NAMES

logger = logging.getLogger(__name__)

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.7, 0.15, 0.15)
#: Splits of readers are a property of the dataset, not of the run: they use this seed by default.
SPLIT_SEED = 0


class SplitError(ValueError):
    """Split fractions or inputs that cannot produce a valid split."""


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    values = np.asarray(fractions, dtype=np.float64)
    ok = values.shape == (len(SPLIT_NAMES),) and np.all(np.isfinite(values)) and np.all(values >= 0)
    if not ok or values[0] <= 0 or not math.isclose(float(values.sum()), 1.0, abs_tol=1e-6):
        raise SplitError(f"fractions={tuple(fractions)!r} are invalid: expected {len(SPLIT_NAMES)} "
                         f"non-negative numbers ({'/'.join(SPLIT_NAMES)}) summing to 1, train > 0")
    return values


def split_counts(n: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> np.ndarray:
    """How many of ``n`` units go to train/val/test (``int64 (3,)``, summing to ``n``).

    Largest remainder, ties to the later split (test before val before train). With ``n >= 3``
    every split of positive fraction gets at least one unit, taken from the largest split.
    With fewer units: one unit is train; two units are train + test (test has fraction > 0).
    """
    frac = _check_fractions(fractions)
    if n < 0:
        raise SplitError(f"cannot split {n} units: expected n >= 0")
    if n < 3:
        counts = np.zeros(len(frac), dtype=np.int64)
        counts[0] = min(n, 1)
        if n == 2:
            counts[2 if frac[2] > 0 else 1 if frac[1] > 0 else 0] += 1
        return counts
    quota = n * frac
    counts = np.floor(quota).astype(np.int64)
    order = sorted(range(len(frac)), key=lambda i: (-(quota[i] - counts[i]), -i))
    for i in order[: n - int(counts.sum())]:
        counts[i] += 1
    for i in range(len(frac)):
        if frac[i] > 0 and counts[i] == 0:
            counts[int(np.argmax(counts))] -= 1
            counts[i] += 1
    return counts


def subject_split(subjects: np.ndarray, *, seed: int = SPLIT_SEED,
                  fractions: Sequence[float] = DEFAULT_FRACTIONS) -> np.ndarray:
    """Split codes ``int8 (N,)`` such that all samples of one subject share one split.

    ``subjects`` holds one subject id per sample; the distinct subjects (sorted, then shuffled
    with ``seed``) are dealt out by :func:`split_counts`, so fractions count subjects, not images.
    """
    subjects = np.asarray(subjects)
    if subjects.ndim != 1:
        raise SplitError(f"subjects must be a 1-D array of ids, got shape {subjects.shape}")
    if subjects.size and subjects.dtype.kind in "US" and not np.all(np.char.str_len(subjects.astype(str))):
        raise SplitError("subjects contains an empty id: every sample needs its subject")
    unique, inverse = np.unique(subjects, return_inverse=True)
    counts = split_counts(len(unique), fractions)
    if 0 < len(unique) < 3:
        logger.warning("only %d subject(s): split %s", len(unique),
                       "/".join(f"{s}={c}" for s, c in zip(SPLIT_NAMES, counts)))
    order = np.random.default_rng(seed).permutation(len(unique))
    code_of_unique = np.empty(len(unique), dtype=np.int8)
    code_of_unique[order] = np.repeat(np.arange(len(counts), dtype=np.int8), counts)
    return code_of_unique[inverse.reshape(-1)]


def image_split(labels: np.ndarray, *, seed: int = SPLIT_SEED,
                fractions: Sequence[float] = DEFAULT_FRACTIONS) -> np.ndarray:
    """Split codes ``int8 (N,)`` per image, stratified by label (for data without subjects)."""
    labels = np.asarray(labels)
    codes = np.zeros(len(labels), dtype=np.int8)
    rng = np.random.default_rng(seed)
    for label in np.unique(labels):
        pos = np.flatnonzero(labels == label)
        counts = split_counts(len(pos), fractions)
        codes[rng.permutation(pos)] = np.repeat(np.arange(len(counts), dtype=np.int8), counts)
    return codes


def check_disjoint(subjects: np.ndarray, splits: np.ndarray) -> list[str]:
    """Subjects that appear in more than one split (empty list when the split is clean)."""
    subjects, splits = np.asarray(subjects), np.asarray(splits)
    pairs = np.unique(np.stack([subjects.astype(str), splits.astype(str)], axis=1), axis=0)
    ids, n_splits = np.unique(pairs[:, 0], return_counts=True)
    return [str(s) for s in ids[n_splits > 1]]


__all__ = ["DEFAULT_FRACTIONS", "SPLIT_SEED", "SplitError", "split_counts", "subject_split",
           "image_split", "check_disjoint"]
