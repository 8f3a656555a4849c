"""Identical images across splits: a held-out face whose exact pixels are also a training face.

FER2013 is known to hold such duplicates; a manifest can too. They inflate held-out accuracy, so
fedfer reports them (the run log and ``summary.json``) rather than silently scoring on them.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np

from fer_models.data.store import SPLIT_NAMES, FaceStore, split_code

logger = logging.getLogger(__name__)

_EXAMPLES = 3


@dataclass(frozen=True)
class SplitDuplicates:
    """``images``: held-out (val/test) images whose pixels also occur in another split."""

    images: int
    groups: int
    examples: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {"images": self.images, "groups": self.groups, "examples": list(self.examples)}


def _name(store: FaceStore, i: int) -> str:
    paths = store.meta.get("path")
    where = str(paths[i]) if paths is not None else f"#{i}"
    return f"{where} ({SPLIT_NAMES[int(store.splits[i])]})"


def cross_split_duplicates(store: FaceStore) -> SplitDuplicates:
    """Images with the same pixels in more than one split (exact byte equality)."""
    pixels = store.images.numpy().reshape(len(store), -1)
    splits = store.splits.numpy()
    seen: dict[bytes, list[int]] = {}
    for i in range(len(store)):
        seen.setdefault(hashlib.blake2b(pixels[i].tobytes(), digest_size=16).digest(), []).append(i)
    images, groups, examples = 0, 0, []
    train = split_code("train")
    for members in seen.values():
        if len(members) > 1 and len(set(splits[members].tolist())) > 1:
            groups += 1
            images += int(np.sum(splits[members] != train))
            if len(examples) < _EXAMPLES:
                examples.append(" = ".join(_name(store, i) for i in members[:3]))
    return SplitDuplicates(images=images, groups=groups, examples=tuple(examples))


def report_cross_split_duplicates(store: FaceStore) -> SplitDuplicates:
    """:func:`cross_split_duplicates`, with a warning naming a few when there are any."""
    found = cross_split_duplicates(store)
    if found.groups:
        logger.warning("%s: %d held-out images have the exact pixels of an image in another split (%d groups, "
                       "e.g. %s); held-out accuracy counts them", store.name, found.images, found.groups,
                       "; ".join(found.examples))
    return found
