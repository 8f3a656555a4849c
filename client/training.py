"""One client's local round as Context glue: the node's privacy limits, the ledgers on the node's own disk, the
optimizer state kept in the Context, and the reply's metrics. The round itself is the core's
(:func:`fer_models.training.local_round.local_round`, plain PyTorch)."""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass

import torch
from flwr.app import Context

from client.carry import carried_state, keep_state
from client.node_privacy import NodePrivacy
from client.private_round import BudgetRefusal, prepare_private_round, privacy_units
from fer_models.config import RunConfig
from fer_models.federation.sites import EPSILON_CAP, MIN_NOISE_MULTIPLIER, LocalData
from fer_models.federation.wire import (
    CLIENT_SETTINGS,
    DP_STEPS,
    EPSILON,
    GLOBAL_LOSS,
    NODE_PARTITION_ID,
    NOISE_MULTIPLIER,
    NUM_EXAMPLES,
    OPTIMIZER_STATE_CARRIED,
    PARTITION_ID,
    ROUND_LEARNING_RATE,
    SAMPLE_RATE,
    TRAIN_STATISTICS,
    UNIFORM_WEIGHT,
    UNIT_IS_PERSON,
)
from fer_models.training.local_round import LocalRound, class_weights, local_round, round_seed

logger = logging.getLogger(__name__)

__all__ = ["BudgetRefusal", "LocalResult", "class_weights", "privacy_units", "round_seed",
           "train_local"]


@dataclass(frozen=True)
class LocalResult:
    state: dict[str, torch.Tensor]
    metrics: dict[str, float | int]


def train_local(*, cfg: RunConfig, context: Context, local: LocalData, global_state: dict[str, torch.Tensor],
                server_round: int, proximal_mu: float = 0.0, lineage: str = "") -> LocalResult:
    """Train the global model on this client's data; under dp=sample compose the ledger on disk.

    Every privacy refusal (BudgetRefusal, LedgerMissing, LedgerMismatch, NodePrivacyError) is raised before any
    gradient is computed."""
    privacy = NodePrivacy.from_node_config(context.node_config)
    if privacy.capped and cfg.dp != "sample":
        raise BudgetRefusal(f"this node sets {EPSILON_CAP} or {MIN_NOISE_MULTIPLIER}, so it trains only under "
                            f"dp=sample; the run asks dp={cfg.dp}, whose update would leave without this node's "
                            f"accounting")
    private = (prepare_private_round(cfg=cfg, context=context, local=local, privacy=privacy, lineage=lineage,
                                     server_round=server_round)
               if cfg.dp == "sample" else None)  # every refusal comes here, before the model is even built
    partition_id = int(context.node_config.get(NODE_PARTITION_ID, -1))  # type: ignore[arg-type]  (a site may have none)
    seed = round_seed(cfg, partition_id if local.site is None else zlib.crc32(local.key.encode()), server_round)
    result = local_round(cfg=cfg, train=local.train, global_state=global_state, seed=seed, server_round=server_round,
                         private=None if private is None else private.plan, optimizer_state=carried_state(context),
                         proximal_mu=proximal_mu, image_size=local.store.image_size[0])
    if private is not None:
        private.record(context, result.ledger, delta=cfg.target_delta)  # type: ignore[arg-type]  (before replying)
    keep_state(context, result.optimizer_state)  # built from noised gradients: post-processing, stays here
    person = private is not None and private.plan.unit == "person"
    return LocalResult(state=result.state, metrics=reply_metrics(cfg, result, partition_id=partition_id, person=person))


def reply_metrics(cfg: RunConfig, result: LocalRound, *, partition_id: int, person: bool) -> dict[str, float | int]:
    """The train reply's metrics: public settings and counts, epsilon under DP, and the training statistics only
    where nothing protects them anyway (no DP, no secure aggregation). The keys: fer_models/federation/wire.py."""
    hp = result.hyperparams
    metrics: dict[str, float | int] = {PARTITION_ID: partition_id} if partition_id >= 0 else {}
    metrics.update({**dict(zip(CLIENT_SETTINGS, (hp.batch_size, hp.learning_rate, hp.max_grad_norm, hp.ema_decay))),
                    ROUND_LEARNING_RATE: result.learning_rate,
                    OPTIMIZER_STATE_CARRIED: int(result.optimizer_state_carried)})
    if result.ledger is not None:  # all from public counts (wire.PUBLIC_DP_METRICS)
        metrics.update({EPSILON: result.epsilon, UNIT_IS_PERSON: int(person),  # type: ignore[dict-item]
                        NOISE_MULTIPLIER: result.noise_multiplier, SAMPLE_RATE: result.sample_rate,
                        DP_STEPS: result.dp_steps})
    metrics.update({NUM_EXAMPLES: result.stats.num_examples, UNIFORM_WEIGHT: 1})
    if cfg.dp == "none" and cfg.secure_aggregation == "none":
        # computed from private data outside any accounted mechanism: never sent under DP, nor beside a masked update
        stats = result.stats
        metrics.update(dict(zip(TRAIN_STATISTICS, (stats.loss, stats.accuracy, stats.samples_seen, stats.seconds))))
        if result.global_loss is not None:
            metrics[GLOBAL_LOSS] = result.global_loss
    return metrics
