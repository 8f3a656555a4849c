"""Several datasets as one store, for cross-dataset federation and leave-one-dataset-out tests.

:func:`combine_stores` concatenates stores (all 48x48) and tags every sample with meta ``group``
= its dataset's name, which ``partition=group`` turns into one client (or client set) per dataset.
Subject and sequence ids are prefixed with the group (``ckplus/S010``) so they stay unique.

Leave-one-group-out: :func:`leave_out_group` gives the indices to train on (the other groups'
train split) and the held-out group's indices (all its images: none was seen in training).
:func:`holdout_store` turns that into a store the run uses unchanged: other groups keep their
train and val samples (val = in-domain model selection), their test samples are dropped, and
every sample of the held-out group becomes ``test``, so the reported accuracy is out-of-domain.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from fer_models.common.labels import IMAGE_SIDE
from fer_models.data.errors import DatasetError
from fer_models.data.store import FaceStore, split_code

logger = logging.getLogger(__name__)

SIDE = IMAGE_SIDE
GROUP_KEY = "group"
#: Meta keys whose ids are prefixed with the group to stay unique across datasets.
PREFIXED_KEYS: tuple[str, ...] = ("subject", "sequence")


def _check_group_name(name: object) -> str:
    if not isinstance(name, str) or not name or any(c in name for c in ",=/ "):
        raise DatasetError(f"dataset name {name!r} is invalid: expected a non-empty name without "
                           f"',', '=', '/' or spaces (e.g. fer2013, ckplus, jaffe)")
    return name


def _merge_meta(stores: dict[str, FaceStore]) -> dict[str, np.ndarray]:
    keys = sorted({k for s in stores.values() for k in s.meta} - {GROUP_KEY})
    merged: dict[str, np.ndarray] = {}
    for key in keys:
        present = [np.asarray(s.meta[key]) for s in stores.values() if key in s.meta]
        numeric = all(a.dtype.kind in "iub" for a in present)
        parts = []
        for group, store in stores.items():
            if key not in store.meta:
                parts.append(np.full(len(store), -1, dtype=np.int64) if numeric
                             else np.full(len(store), "", dtype=str))
                continue
            values = np.asarray(store.meta[key])
            if numeric:
                parts.append(values.astype(np.int64))
            elif key in PREFIXED_KEYS:
                text = values.astype(str)
                parts.append(np.where(text == "", "", np.char.add(f"{group}/", text)))
            else:
                parts.append(values.astype(str))
        merged[key] = np.concatenate(parts)
    merged[GROUP_KEY] = np.concatenate([np.full(len(s), g) for g, s in stores.items()])
    return merged


def combine_stores(*, stores: dict[str, FaceStore]) -> FaceStore:
    """One store of all ``stores`` (name -> store), in the dict's order; name ``a+b+c``."""
    if not isinstance(stores, dict) or not stores:
        raise DatasetError("combine_stores needs a non-empty dict of dataset name -> FaceStore")
    for group, store in stores.items():
        _check_group_name(group)
        if store.image_size != (SIDE, SIDE):
            h, w = store.image_size
            raise DatasetError(f"{store.source or store.name} ({group}): images are {w}x{h}, expected "
                               f"{SIDE}x{SIDE} to combine datasets; crop/resize them first "
                               f"(e.g. through a manifest CSV)")
        if GROUP_KEY in store.meta:
            logger.warning("%s: its own meta 'group' is replaced by the dataset name %r", group, group)
    combined = FaceStore(
        name="+".join(stores),
        images=torch.cat([s.images for s in stores.values()]),
        labels=torch.cat([s.labels for s in stores.values()]),
        splits=torch.cat([s.splits for s in stores.values()]),
        source=",".join(f"{g}={s.source}" for g, s in stores.items()),
        synthetic=any(s.synthetic for s in stores.values()),
        meta=_merge_meta(stores),
    )
    logger.info("combined %s", combined.describe())
    return combined


def _groups(store: FaceStore, group: str) -> np.ndarray:
    groups = store.meta.get(GROUP_KEY)
    if groups is None:
        raise DatasetError(f"{store.name}: has no dataset groups (meta 'group'); leaving out a group "
                           f"needs several datasets, e.g. data-path fer2013=...,ckplus=...,jaffe=...")
    known = sorted(set(np.asarray(groups).astype(str).tolist()))
    if group not in known:
        raise DatasetError(f"{store.name}: unknown group {group!r} to leave out; expected one of "
                           f"{', '.join(known)}")
    if len(known) < 2:
        raise DatasetError(f"{store.name}: leaving out {group!r} leaves no group to train on")
    return np.asarray(groups).astype(str)


def leave_out_group(store: FaceStore, *, group: str) -> tuple[np.ndarray, np.ndarray]:
    """``(train_indices, heldout_indices)``: other groups' train split, and every sample of ``group``."""
    groups = _groups(store, group)
    held = groups == group
    train = ~held & (store.splits.numpy() == split_code("train"))
    return np.flatnonzero(train), np.flatnonzero(held)


def holdout_store(store: FaceStore, *, group: str) -> FaceStore:
    """A store for a leave-``group``-out run: others' train+val, and all of ``group`` as test."""
    groups = _groups(store, group)
    held = groups == group
    splits = store.splits.numpy()
    keep = np.flatnonzero(held | (splits != split_code("test")))
    new_splits = np.where(held, split_code("test"), splits)[keep].astype(np.int8)
    idx = torch.from_numpy(keep)
    out = FaceStore(
        name=f"{store.name}-without-{group}",
        images=store.images[idx],
        labels=store.labels[idx],
        splits=torch.from_numpy(new_splits),
        source=store.source,
        synthetic=store.synthetic,
        meta={k: np.asarray(v)[keep] for k, v in store.meta.items()},
    )
    logger.info("leave-%s-out: %s (test = all %d %s images)", group, out.describe(), int(held.sum()), group)
    return out


__all__ = ["combine_stores", "leave_out_group", "holdout_store"]
