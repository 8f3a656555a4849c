"""Training samples as clips of frames gathered from a :class:`FaceStore`.

A *sample* is the privacy unit: one clip of T frames (T = 1 for a static image). A
:class:`ClipSet` is a table ``frames (S, T)`` of image indices into the store plus one label per
sample; batches are gathered by sample index and come out as float clips ``(B, T, 1, H, W)``.
Static images with T > 1 repeat the image T times; the augmenter then turns the copies into
independently augmented views (a pseudo-sequence).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from fer_models.common.labels import NUM_CLASSES
from fer_models.data.store import FaceStore

#: Pixel statistics used to normalise every input (uint8 / 255, then (x - MEAN) / STD).
PIXEL_MEAN = 0.5
PIXEL_STD = 0.25

Augment = Callable[[torch.Tensor], torch.Tensor]


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Map pixels in [0, 1] to the model's input scale."""
    return (x - PIXEL_MEAN) / PIXEL_STD


@dataclass(frozen=True, eq=False)
class ClipSet:
    """Samples of one client or one evaluation split."""

    images: torch.Tensor  # uint8 (N, H, W): the whole store's images (shared, not copied)
    frames: torch.Tensor  # int64 (S, T): image indices of each sample's frames
    labels: torch.Tensor  # int64 (S,)
    real_clips: bool = False  # True when frames are a real sequence (same transform across frames)

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def clip_length(self) -> int:
        return int(self.frames.shape[1])

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=NUM_CLASSES)

    def batch(self, sample_idx: torch.Tensor, *, augment: Augment | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Float clips ``(B, T, 1, H, W)`` (normalised) and labels ``(B,)`` for the given samples."""
        frame_idx = self.frames[sample_idx]  # (B, T)
        x = self.images[frame_idx.reshape(-1)].reshape(*frame_idx.shape, 1, *self.images.shape[1:])
        x = x.to(torch.float32).div_(255.0)
        if augment is not None:
            x = augment(x)
        return normalize(x), self.labels[sample_idx]

    def subset(self, sample_idx: np.ndarray | torch.Tensor) -> "ClipSet":
        idx = torch.as_tensor(np.asarray(sample_idx), dtype=torch.long)
        return ClipSet(self.images, self.frames[idx], self.labels[idx], self.real_clips)


def static_clips(store: FaceStore, indices: np.ndarray, *, clip_length: int = 1) -> ClipSet:
    """One sample per image; with ``clip_length`` T > 1 each image is repeated T times."""
    if clip_length < 1:
        raise ValueError(f"clip_length must be >= 1, got {clip_length}")
    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    frames = idx[:, None].repeat(1, clip_length)
    return ClipSet(store.images, frames, store.labels[idx], real_clips=False)


def stratified_subsample(labels: np.ndarray, *, limit: int, seed: int) -> np.ndarray:
    """Positions of at most ``limit`` samples keeping class proportions (seeded); all if limit <= 0."""
    n = len(labels)
    if limit <= 0 or limit >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        k = max(1, int(round(len(pos) * limit / n)))
        keep.append(rng.choice(pos, size=min(k, len(pos)), replace=False))
    return np.sort(np.concatenate(keep))
