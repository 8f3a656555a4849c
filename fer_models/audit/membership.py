"""Membership inference on a trained model: loss and confidence attacks, ROC AUC and TPR at low FPR.

A *score* is higher when the attack believes the sample was trained on. Two threshold attacks
(Yeom et al. 2018; the baselines of Carlini et al. 2022) from one query per sample:

* ``loss``: the cross-entropy of the sample's label, lower for members;
* ``confidence``: the largest softmax probability, higher for members.

Both are scored on the logit scale ``log p - log(1 - p)`` (LiRA's scaling; computed from the logits as
``z_c - logsumexp_{j != c} z_j``): monotone in the loss and in the probability, so the same attacks
and the same AUC, but a memorised sample keeps its rank where its loss has underflowed to 0.0 in
floating point (ties there would flatten the ROC exactly at the low false-positive rates that matter).
A third attack, ``loss-calibrated``, removes what a global threshold cannot see: easy faces (e.g. most
"happy" ones) get a small loss whether trained on or not, so the lowest losses overall belong to easy
non-members and the TPR at low FPR falls to chance. It scores the loss *relative to its class*: the
z-score of the logit-scaled label probability among held-out reference images of the same class
(population data, disjoint from the non-members being scored; a class-level version of the
difficulty calibration of Watson et al. 2022).

Members and non-members are drawn in equal numbers, so chance is AUC 0.5 and TPR = FPR.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

ATTACKS = ("loss", "confidence")
CALIBRATED = "loss-calibrated"
#: False-positive rates at which the true-positive rate is reported.
LOW_FPRS = (0.01, 0.001)


def logit_margin(*, logits: torch.Tensor, cls: torch.Tensor) -> np.ndarray:
    """``log p_c - log(1 - p_c)`` of class ``cls`` per sample, computed without underflow."""
    z = logits.double()
    own = z.gather(1, cls.view(-1, 1)).squeeze(1)
    return (own - z.scatter(1, cls.view(-1, 1), float("-inf")).logsumexp(1)).numpy()


def attack_scores(*, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, np.ndarray]:
    """Each attack's membership score of every sample (higher = more likely a member)."""
    return {"loss": logit_margin(logits=logits, cls=labels),
            "confidence": logit_margin(logits=logits, cls=logits.argmax(1))}


def class_calibrated(*, scores: np.ndarray, labels: np.ndarray, reference: np.ndarray,
                     reference_labels: np.ndarray) -> np.ndarray:
    """Each score as a z-score among the ``reference`` scores of its class (all references when its class
    has fewer than 2)."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels)
    reference, reference_labels = np.asarray(reference, dtype=float), np.asarray(reference_labels)
    if len(reference) < 2:
        raise ValueError(f"class calibration needs at least 2 reference scores, got {len(reference)}")
    out = np.empty_like(scores)
    for c in np.unique(labels):
        ref = reference[reference_labels == c]
        ref = ref if len(ref) >= 2 else reference
        out[labels == c] = (scores[labels == c] - ref.mean()) / max(float(ref.std()), 1e-12)
    return out


@dataclass(frozen=True)
class RocResult:
    auc: float
    tpr_at_fpr: dict[float, float]  # LOW_FPRS -> TPR at FPR <= that rate
    fpr: np.ndarray
    tpr: np.ndarray
    members: int
    non_members: int

    @property
    def advantage(self) -> float:
        """Max over thresholds of TPR - FPR (the membership advantage of Yeom et al.)."""
        return float(np.max(self.tpr - self.fpr))

    def to_json(self) -> dict[str, object]:
        return {"auc": self.auc, "advantage": self.advantage, "members": self.members,
                "non_members": self.non_members, "fpr_resolution": 1.0 / self.non_members,
                **{f"tpr_at_fpr_{rate:g}": value for rate, value in self.tpr_at_fpr.items()}}


def roc(*, member_scores: np.ndarray, non_member_scores: np.ndarray) -> RocResult:
    """ROC of the scores: members are the positives. TPR at a low FPR is the best TPR whose FPR does not
    exceed it (with n non-members the smallest non-zero FPR is 1/n; ``fpr_resolution`` records it)."""
    member_scores, non_member_scores = np.asarray(member_scores), np.asarray(non_member_scores)
    if len(member_scores) == 0 or len(non_member_scores) == 0:
        raise ValueError("membership inference needs at least one member and one non-member")
    y = np.r_[np.ones(len(member_scores)), np.zeros(len(non_member_scores))]
    s = np.r_[member_scores, non_member_scores]
    fpr, tpr, _ = roc_curve(y, s)
    at = {rate: float(tpr[fpr <= rate + 1e-12].max()) for rate in LOW_FPRS}
    return RocResult(float(roc_auc_score(y, s)), at, fpr, tpr, len(member_scores), len(non_member_scores))


def balanced_draw(*, members: np.ndarray, non_members: np.ndarray, limit: int, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Equal numbers of members and non-members (at most ``limit`` each when > 0), drawn with ``seed``."""
    n = min(len(members), len(non_members))
    if limit > 0:
        n = min(n, limit)
    rng = np.random.default_rng(seed)
    pick = lambda pool: np.sort(rng.choice(np.asarray(pool), size=n, replace=False))  # noqa: E731
    return pick(members), pick(non_members)
