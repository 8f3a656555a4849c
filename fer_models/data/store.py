"""The in-memory face store every dataset reader produces.

All images of one dataset are decoded once into a single ``uint8`` tensor ``(N, H, W)``;
batches are gathered by index and augmented as tensors, never image by image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fer_models.common.labels import EMOTIONS, NUM_CLASSES

#: Canonical split names. For FER2013: Training -> train, PublicTest -> val, PrivateTest -> test.
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


class UnknownSplitError(ValueError):
    """A split name that is not one of :data:`SPLIT_NAMES`."""


def split_code(name: str) -> int:
    """Index of a split name in :data:`SPLIT_NAMES`."""
    try:
        return SPLIT_NAMES.index(name)
    except ValueError:
        raise UnknownSplitError(
            f"unknown split {name!r}: expected one of {', '.join(SPLIT_NAMES)}"
        ) from None


@dataclass(frozen=True, eq=False)
class FaceStore:
    """Decoded faces of one dataset with their labels and official splits.

    ``images`` is ``uint8 (N, H, W)``, ``labels`` ``int64 (N,)`` in the canonical order of
    :data:`fer_models.common.labels.EMOTIONS`, ``splits`` ``int8 (N,)`` indexing :data:`SPLIT_NAMES`.
    ``meta`` holds optional per-sample string/int arrays of length N (``subject``,
    ``sequence``, ``frame``, ``group``, ``path``) for readers that know them.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    splits: torch.Tensor
    source: str = ""
    synthetic: bool = False
    meta: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.dim() != 3:
            raise ValueError(f"{self.name}: images must be uint8 (N, H, W), got "
                             f"{self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (n,) or self.splits.shape != (n,):
            raise ValueError(f"{self.name}: labels and splits must have shape ({n},)")
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= NUM_CLASSES):
            raise ValueError(f"{self.name}: labels must lie in 0..{NUM_CLASSES - 1}")
        for key, values in self.meta.items():
            if len(values) != n:
                raise ValueError(f"{self.name}: meta[{key!r}] has {len(values)} rows, expected {n}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    def has_split(self, name: str) -> bool:
        return bool((self.splits == split_code(name)).any())

    def indices(self, split: str) -> np.ndarray:
        """Sorted indices (into this store) of the samples of one split."""
        return np.flatnonzero(self.splits.numpy() == split_code(split))

    def class_counts(self, split: str | None = None) -> dict[str, int]:
        """Per-class sample counts, for one split or the whole store."""
        labels = self.labels if split is None else self.labels[torch.from_numpy(self.indices(split))]
        counts = torch.bincount(labels, minlength=NUM_CLASSES).tolist()
        return dict(zip(EMOTIONS, counts))

    def describe(self) -> str:
        """One line for logs: name, size, split sizes, and a SYNTHETIC tag where it applies."""
        sizes = ", ".join(f"{s}={len(self.indices(s))}" for s in SPLIT_NAMES if self.has_split(s))
        tag = " [SYNTHETIC faces]" if self.synthetic else ""
        h, w = self.image_size
        return f"{self.name}{tag}: {len(self)} images {h}x{w} ({sizes})"
