"""An empirical privacy audit of a finished run (``fedfer audit RUN_DIR``), written to ``audit.json``.

(a) Membership inference on the global model: the images the clients trained on (members) against
held-out images of the same dataset (the val and test splits: non-members), equal numbers of each,
scored by the loss and the confidence attack (:mod:`fer_models.audit.membership`).
(b) With ``audit-canaries = m``: the canary plan is rebuilt from the run's config (and checked against
the ``canaries.json`` the run wrote), every canary is scored by the log-probability the model gives its
(wrong) canary label, and the inclusion guesses become an epsilon lower bound
(:mod:`fer_models.audit.bound`), set beside the epsilon the run's accountant reported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fer_models.audit.bound import best_bound
from fer_models.audit.canaries import CANARY_FILE, CanaryPlan, canary_clips, canary_plan_for
from fer_models.audit.membership import ATTACKS, CALIBRATED, attack_scores, balanced_draw, class_calibrated, roc
from fer_models.config import RunConfig
from fer_models.data import FaceStore
from fer_models.federation.run_folder import CONFIG_FILE, SUMMARY_FILE, write_json
from fer_models.federation.task import client_partitions, clips_for, load_store, train_pool
from fer_models.training import engine
from simulation.predict.model_io import load_model_file

logger = logging.getLogger(__name__)

NON_MEMBER_SPLITS = ("val", "test")


class AuditError(ValueError):
    """A run folder that cannot be audited (the message says what is missing)."""


def _run_config(run_dir: Path, info: dict[str, Any], data: str | None) -> RunConfig:
    path = run_dir / CONFIG_FILE
    flat = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else dict(info["config"])
    if not flat:
        raise AuditError(f"{run_dir} has no config.json and its model.pt records no config: the audit cannot "
                         f"rebuild which images the clients trained on")
    if data:
        flat["data-path"] = data
    return RunConfig.from_flat(flat, source=str(path))


def _accountant(run_dir: Path, cfg: RunConfig) -> dict[str, Any]:
    """The epsilon the run reported (summary.json), with its unit, delta and owner; inf without DP."""
    path = run_dir / SUMMARY_FILE
    summary = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    eps = summary.get("epsilon")
    if not eps:
        return {"epsilon": math.inf, "delta": cfg.target_delta, "label": f"dp={cfg.dp}: no epsilon claimed"}
    return {"epsilon": float(eps.get("final_max", math.nan)), "delta": float(eps.get("delta", cfg.target_delta)),
            "label": eps.get("label", f"delta={eps.get('delta')}, unit and owner not recorded"),
            "owner": eps.get("owner", "")}


def _not_in_training_split(store: FaceStore, indices: np.ndarray) -> np.ndarray:
    """``indices`` without the images whose exact pixels are also a training-split image (FER2013 has
    ~620 such held-out images): a duplicate of a member is not a non-member."""
    pixels = store.images.numpy().reshape(len(store), -1)
    key = lambda i: hashlib.blake2b(pixels[i].tobytes(), digest_size=16).digest()  # noqa: E731
    train = {key(i) for i in store.indices("train")}
    keep = np.array([key(i) not in train for i in indices], dtype=bool)
    if not keep.all():
        logger.info("%d held-out images duplicate a training image: left out of the non-members", int((~keep).sum()))
    return indices[keep]


def _membership(cfg: RunConfig, store: FaceStore, model: nn.Module, *, limit: int, batch_size: int,
                device: torch.device) -> tuple[dict, dict]:
    members = np.concatenate(client_partitions(cfg, num_partitions=cfg.num_clients))
    splits = [s for s in NON_MEMBER_SPLITS if store.has_split(s)]
    if not splits:
        raise AuditError(f"{store.name} has no val or test split: no held-out images to use as non-members")
    non_members = _not_in_training_split(store, np.concatenate([store.indices(s) for s in splits]))
    mem, non = balanced_draw(members=members, non_members=non_members, limit=limit, seed=cfg.seed)
    reference = np.setdiff1d(non_members, non)  # held-out images not scored: the calibration's population
    scores, labels = {}, {}
    for name, idx in (("members", mem), ("non_members", non), ("reference", reference))[:3 if len(reference) >= 2 else 2]:
        data = clips_for(cfg, store, idx)
        labels[name] = data.labels.numpy()
        scores[name] = attack_scores(logits=engine.predict_logits(model=model, data=data, batch_size=batch_size,
                                                                  device=device), labels=data.labels)
    curves = {a: roc(member_scores=scores["members"][a], non_member_scores=scores["non_members"][a]) for a in ATTACKS}
    if "reference" in scores:
        cal = {k: class_calibrated(scores=scores[k]["loss"], labels=labels[k], reference=scores["reference"]["loss"],
                                   reference_labels=labels["reference"]) for k in ("members", "non_members")}
        curves[CALIBRATED] = roc(member_scores=cal["members"], non_member_scores=cal["non_members"])
    out = {"members_from": f"training images of the {cfg.num_clients} clients' partitions "
                           f"({len(members)} in all, {len(mem)} drawn)",
           "non_members_from": f"{'+'.join(splits)} split(s) of {store.name} without duplicates of training "
                               f"images ({len(non_members)} in all, "
                               f"{len(non)} drawn)",
           "calibration_reference": f"{len(reference)} other held-out images (per-class loss statistics)",
           "attacks": {a: c.to_json() for a, c in curves.items()}}
    return out, curves


def record_canary_plan(*, run_dir: Path, cfg: RunConfig, store: FaceStore) -> CanaryPlan:
    """The run's canary plan, written to ``canaries.json`` (checked against the file when one is there).
    ``fedfer simulate`` calls this before training, so impossible settings fail before the engine starts."""
    plan = canary_plan_for(cfg=cfg, store=store, pool=train_pool(cfg, store), num_clients=cfg.num_clients)
    path = run_dir / CANARY_FILE
    if path.is_file() and not CanaryPlan.from_json(json.loads(path.read_text(encoding="utf-8"))).same_as(plan):
        raise AuditError(f"{path} differs from the plan rebuilt from {run_dir}/config.json and the dataset: the "
                         f"data changed since the run (or the file was edited); audit with the run's own data")
    write_json(path, plan.to_json())
    return plan


def _canaries(run_dir: Path, cfg: RunConfig, store: FaceStore, model: nn.Module, *, confidence: float,
              batch_size: int, device: torch.device) -> tuple[dict, np.ndarray, np.ndarray]:
    plan = record_canary_plan(run_dir=run_dir, cfg=cfg, store=store)
    like = clips_for(cfg, store, plan.image[:1])
    data = canary_clips(like, plan=plan)
    scores = attack_scores(logits=engine.predict_logits(model=model, data=data, batch_size=batch_size, device=device),
                           labels=data.labels)["loss"]
    acc = _accountant(run_dir, cfg)
    bound = best_bound(scores=scores, included=plan.included, delta=acc["delta"], confidence=confidence)
    out = {"kind": "mislabelled faces (training-split images outside the pool, a uniformly drawn wrong label)",
           "plan": CANARY_FILE, "count": len(plan), "included": int(plan.included.sum()),
           "score": "log p - log(1 - p) of the canary label",
           "epsilon_lower_bound": bound.epsilon, "confidence": bound.confidence, "delta": acc["delta"],
           "guesses_in": bound.guesses_in, "guesses_out": bound.guesses_out, "correct": bound.correct,
           "guess_counts_tried": bound.tried, "attainable_bound": bound.attainable,
           "bound_label": f"image-level, delta={acc['delta']:g}, the final global model",
           "accountant_epsilon": acc["epsilon"], "accountant_label": acc["label"],
           "consistent": None if math.isinf(acc["epsilon"]) else bool(bound.epsilon <= acc["epsilon"])}
    return out, scores, plan.included


def run_audit(*, run_dir: Path, data: str | None = None, max_samples: int = 5000, confidence: float = 0.95,
              batch_size: int = 0) -> dict[str, Any]:
    """Audit the run in ``run_dir``; writes audit.json (and canaries.json) and the audit's plots."""
    from simulation.reports.audit_report import AUDIT_FILE, CANARY_FIGURE, ROC_FIGURE, plot_canary_scores, plot_roc

    run_dir = Path(run_dir)
    model, info = load_model_file(path=run_dir)
    cfg = _run_config(run_dir, info, data)
    store = load_store(cfg)
    device = engine.select_device()
    model = model.to(device)
    batch = batch_size or cfg.eval_batch_size
    result: dict[str, Any] = {"run": str(run_dir), "model_round": info["round"], "dataset": store.name,
                              "synthetic": store.synthetic, "seed": cfg.seed}
    result["membership"], curves = _membership(cfg, store, model, limit=max_samples, batch_size=batch, device=device)
    plot_roc(curves=curves, path=run_dir / ROC_FIGURE)
    if cfg.audit_canaries:
        result["canaries"], scores, included = _canaries(run_dir, cfg, store, model, confidence=confidence,
                                                         batch_size=batch, device=device)
        plot_canary_scores(scores=scores, included=included, path=run_dir / CANARY_FIGURE)
    else:
        result["canaries"] = None
        logger.info("the run planted no canaries (audit-canaries = 0): no epsilon lower bound; re-run with "
                    "--set audit-canaries=1000 for one")
    write_json(run_dir / AUDIT_FILE, result)
    return result
