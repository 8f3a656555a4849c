"""Audit canaries: which samples are planted, at which client, and whether each is really included.

A canary is a *mislabelled real face*: a training-split image that the run's training pool does not
use (so a canary left out is a face the model never saw), given a wrong label drawn uniformly from
the other classes. An in-distribution face with a wrong label can only be fitted by memorising that
one sample, so it is the most exposed sample a natural dataset can hold, while needing no new pixels
(a canary is just an (image index, label) row over the store the clients already share). Each
canary goes to one client drawn uniformly and is included with probability 1/2 (Steinke, Nasr &
Jagielski 2023): the run trains once, and the audit guesses inclusion from the final model.

Everything here is a pure function of (seed, count, candidate images, their labels, number of
clients): every client, the simulation and the auditor compute the same plan. The plan is written
to the run folder (``canaries.json``) for the auditor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fer_models.common.labels import NUM_CLASSES
from fer_models.config import RunConfig
from fer_models.data.samples import ClipSet
from fer_models.data.store import FaceStore

#: The plan's file in a run folder (written by ``fedfer simulate`` and ``fedfer audit``).
CANARY_FILE = "canaries.json"
#: Mixed into the run seed so the canary draws are independent of partitioning and model init.
_STREAM = 0x17A0D17


class CanaryError(ValueError):
    """Canaries that cannot be planted with these settings (the message names the key to change)."""


@dataclass(frozen=True)
class CanaryPlan:
    """m canaries: store image, true label, canary (wrong) label, client, included (a fair coin)."""

    image: np.ndarray  # int64 (m,) store indices
    true_label: np.ndarray  # int64 (m,)
    label: np.ndarray  # int64 (m,) the label the canary carries (never the true one)
    client: np.ndarray  # int64 (m,) partition id that holds it when included
    included: np.ndarray  # bool (m,)

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def for_client(self, partition_id: int) -> np.ndarray:
        """Positions (in the plan) of the canaries this client really trains on."""
        return np.flatnonzero(self.included & (self.client == partition_id))

    def to_json(self) -> dict[str, Any]:
        return {"kind": "mislabelled-face", "count": len(self),
                "included": int(self.included.sum()),
                "canaries": [{"image": int(i), "true_label": int(t), "label": int(c), "client": int(k),
                              "included": bool(n)} for i, t, c, k, n in
                             zip(self.image, self.true_label, self.label, self.client, self.included)]}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "CanaryPlan":
        rows = obj["canaries"]
        col = lambda key, dtype: np.array([r[key] for r in rows], dtype=dtype)  # noqa: E731
        return cls(col("image", np.int64), col("true_label", np.int64), col("label", np.int64),
                   col("client", np.int64), col("included", bool))

    def same_as(self, other: "CanaryPlan") -> bool:
        return all(np.array_equal(getattr(self, k), getattr(other, k))
                   for k in ("image", "true_label", "label", "client", "included"))


def plan_canaries(*, seed: int, count: int, candidates: np.ndarray, labels: np.ndarray,
                  num_clients: int) -> CanaryPlan:
    """Draw ``count`` canaries among ``candidates`` (store indices; ``labels`` are their true labels)."""
    candidates, labels = np.asarray(candidates, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    if count < 1 or num_clients < 1:
        raise CanaryError(f"audit-canaries={count} with {num_clients} clients: need at least 1 of each")
    if len(candidates) != len(labels):
        raise ValueError(f"{len(candidates)} candidates but {len(labels)} labels")
    if count > len(candidates):
        raise CanaryError(f"audit-canaries={count} needs that many training images outside the run's training "
                          f"pool, but only {len(candidates)} are left: lower audit-canaries or max-train-samples "
                          f"(the pool) so that they add up to at most the training split")
    rng = np.random.default_rng([seed, _STREAM])
    pick = np.sort(rng.choice(len(candidates), size=count, replace=False))
    true = labels[pick]
    wrong = (true + rng.integers(1, NUM_CLASSES, size=count)) % NUM_CLASSES  # uniform over the other classes
    client = rng.integers(0, num_clients, size=count)
    included = rng.random(count) < 0.5
    return CanaryPlan(candidates[pick], true, wrong, client, included)


def canary_candidates(*, train_split: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Training-split images the run does not otherwise train on (outside the pool)."""
    return np.setdiff1d(np.asarray(train_split, dtype=np.int64), np.asarray(pool, dtype=np.int64))


def canary_plan_for(*, cfg: RunConfig, store: FaceStore, pool: np.ndarray, num_clients: int) -> CanaryPlan:
    """The run's plan: ``audit-canaries`` canaries among the training images outside ``pool``."""
    candidates = canary_candidates(train_split=store.indices("train"), pool=pool)
    return plan_canaries(seed=cfg.seed, count=cfg.audit_canaries, candidates=candidates,
                         labels=store.labels[torch.from_numpy(candidates)].numpy(), num_clients=num_clients)


def canary_clips(like: ClipSet, *, plan: CanaryPlan, rows: np.ndarray | None = None) -> ClipSet:
    """The plan's canaries (``rows`` of it, default all) as samples carrying their canary labels, shaped
    like ``like`` (same store, T frames repeating the image)."""
    rows = np.arange(len(plan)) if rows is None else np.asarray(rows)
    frames = torch.as_tensor(plan.image[rows])[:, None].repeat(1, like.clip_length)
    return ClipSet(like.images, frames, torch.as_tensor(plan.label[rows]), like.real_clips)


def with_canaries(clips: ClipSet, *, plan: CanaryPlan, partition_id: int) -> ClipSet:
    """``clips`` plus this client's included canaries, appended (the client data path's one hook)."""
    mine = canary_clips(clips, plan=plan, rows=plan.for_client(partition_id))
    if len(mine) == 0:
        return clips
    return ClipSet(clips.images, torch.cat([clips.frames, mine.frames]), torch.cat([clips.labels, mine.labels]),
                   clips.real_clips)
