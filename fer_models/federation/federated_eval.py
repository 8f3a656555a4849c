"""Federated evaluation: each site counts the global model's answers on its held-out split; the server
sums the counts into the report a centralized evaluation of the union of those splits would give.

A site sends its 7x7 confusion counts, summed loss and example count (and how many of its faces the
crop found): the numbers every reported metric is a function of, and nothing per image. That is a
release of statistics of the site's held-out data, which the site opts into (node config
``share-evaluation=true``) and which is never made under DP (the counts are not noised or accounted).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np
import torch
from sklearn.metrics import confusion_matrix

from fer_models.common.labels import NUM_CLASSES
from fer_models.config import RunConfig
from fer_models.data.face_crop import CropCounts
from fer_models.federation.sites import LocalData
from fer_models.federation.task import evaluate_state
from fer_models.federation.wire import (
    EVAL_ACCURACY,
    EVAL_CONFUSION,
    EVAL_FACE_FALLBACKS,
    EVAL_FACES_FOUND,
    EVAL_LOSS,
    EVAL_LOSS_SUM,
    EVAL_N,
    NUM_EXAMPLES,
)
from fer_models.training.metrics import classification_report_from_confusion, group_report

logger = logging.getLogger(__name__)

#: The split name a federated report carries (the union of the sites' held-out splits).
FEDERATED_SPLIT = "sites-held-out"


class NoHeldOutSplit(ValueError):
    """The site has no held-out split to evaluate on."""


def held_out_counts(*, cfg: RunConfig, local: LocalData, global_state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The wire metrics of one site's evaluation of ``global_state`` on its held-out split."""
    if local.held_out is None:
        raise NoHeldOutSplit(f"{local.name} has no test or val images to evaluate on")
    idx = local.store.indices(local.held_out)
    res = evaluate_state(cfg, local.store, idx, global_state)
    counts = confusion_matrix(res.y_true, res.y_pred, labels=list(range(NUM_CLASSES)))
    crop = CropCounts.of(np.asarray(local.store.meta.get("face_detected", np.full(len(local.store), -1)))[idx])
    return {EVAL_CONFUSION: [int(v) for v in counts.ravel()], EVAL_LOSS_SUM: float(res.loss * res.num_examples),
            EVAL_N: int(res.num_examples), EVAL_FACES_FOUND: crop.found, EVAL_FACE_FALLBACKS: crop.fallbacks}


def federated_report(per_site: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The evaluation report (the keys of a centralized one) of the sites' summed counts; per-site groups."""
    if not per_site:
        raise ValueError("no site sent evaluation counts")
    confusions = {name: np.asarray(m[EVAL_CONFUSION], dtype=np.int64).reshape(NUM_CLASSES, NUM_CLASSES)
                  for name, m in per_site.items()}
    for name, m in per_site.items():
        if int(confusions[name].sum()) != int(m[EVAL_N]):
            raise ValueError(f"site {name}: its confusion counts sum to {int(confusions[name].sum())}, not its "
                             f"{int(m[EVAL_N])} examples")
    total = sum(confusions.values())
    n = int(total.sum())
    if n == 0:
        raise ValueError("the sites' held-out splits are empty")
    out = classification_report_from_confusion(total)
    out["loss"] = sum(float(m[EVAL_LOSS_SUM]) for m in per_site.values()) / n
    out["split"] = FEDERATED_SPLIT
    out.update(group_report(confusions))
    for name, m in per_site.items():
        out["groups"][name].update(faces_found=int(m.get(EVAL_FACES_FOUND, 0)),
                                   face_fallbacks=int(m.get(EVAL_FACE_FALLBACKS, 0)))
    return out


def evaluate_local(*, cfg: RunConfig, local: LocalData, partition_id: int, num_partitions: int,
                   global_state: dict[str, torch.Tensor]) -> dict[str, float | int]:
    """Client-side evaluation (``fraction-evaluate``): the global model on this client's IID share of the validation
    split (a site: its held-out split); loss, accuracy and the example count, its reply's keys (wire.py)."""
    store = local.store
    split = "val" if store.has_split("val") else "test"
    if local.held_out is not None:
        idx = store.indices(local.held_out)
    else:
        idx = np.array_split(np.random.default_rng(cfg.seed).permutation(store.indices(split)),
                             num_partitions)[partition_id]
    res = evaluate_state(cfg, store, np.sort(idx), global_state)
    return {NUM_EXAMPLES: res.num_examples, EVAL_LOSS: res.loss, EVAL_ACCURACY: res.accuracy}
