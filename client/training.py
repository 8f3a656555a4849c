"""One client's local round: core calls plus the privacy ledger kept on the client's own node."""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import Context

from client.carry import keep_optimizer, restore_optimizer
from client.node_privacy import NodePrivacy
from client.private_round import BudgetRefusal, prepare_private_round, privacy_units, unit_loader
from fer_models.training import engine
from fer_models.training.augment import Augmenter
from fer_models.config import RunConfig
from fer_models.config.recipe import training_hyperparams
from fer_models.privacy.sgd_helpers import WeightEMA
from fer_models.training.optim_state import lr_factor
from fer_models.privacy.dp_sgd import make_private, plain_state_dict
from fer_models.data.samples import ClipSet
from fer_models.federation.sites import EPSILON_CAP, MIN_NOISE_MULTIPLIER, LocalData
from fer_models.federation.task import evaluate_state
from fer_models.models.from_config import build_model
from fer_models.federation.wire import (CLIENT_SETTINGS, EPSILON, GLOBAL_LOSS, NUM_EXAMPLES, PARTITION_ID, TRAIN_STATISTICS, UNIFORM_WEIGHT,
                             UNIT_IS_PERSON)

logger = logging.getLogger(__name__)

__all__ = ["BudgetRefusal", "LocalResult", "class_weights", "evaluate_local", "privacy_units", "round_seed",
           "train_local"]


@dataclass(frozen=True)
class LocalResult:
    state: dict[str, torch.Tensor]
    metrics: dict[str, float | int]


def round_seed(cfg: RunConfig, partition_id: int, server_round: int) -> int:
    """A distinct, reproducible seed for each (run seed, client, round): for model-side randomness
    only (dropout, augmentation). DP noise and Poisson sampling never use it (see make_private)."""
    return int(np.random.SeedSequence([cfg.seed, partition_id, server_round]).generate_state(1)[0])


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
    data = local.train
    hp = training_hyperparams(cfg, num_samples=len(data))
    private = (prepare_private_round(cfg=cfg, context=context, local=local, privacy=privacy, lineage=lineage,
                                     batch_size=hp.batch_size, server_round=server_round)
               if cfg.dp == "sample" else None)  # every refusal comes here, before the model is even built
    engine.configure_threads(cfg.num_cpus)
    device = engine.select_device()
    model = build_model(cfg, image_size=local.store.image_size[0])
    model.load_state_dict(global_state)
    model.to(device)
    partition_id = int(context.node_config.get("partition-id", -1))  # type: ignore[arg-type]  (a site may have none)
    seed = round_seed(cfg, partition_id if local.site is None else zlib.crc32(local.key.encode()), server_round)
    # q-FedAvg's F_k(w): private, so only without DP (RunConfig.check refuses qfedavg under DP)
    global_loss = (engine.evaluate(model=model, data=data, batch_size=cfg.eval_batch_size, device=device).loss
                   if cfg.strategy == "qfedavg" and cfg.dp == "none" else None)
    torch.manual_seed(seed)  # dropout & co.: the same draws whichever process runs this client
    learning_rate = hp.learning_rate * lr_factor(schedule=hp.lr_schedule, server_round=server_round,
                                                 num_rounds=cfg.num_server_rounds)
    optimizer = engine.make_optimizer(model, name=hp.optimizer, learning_rate=learning_rate,
                                      weight_decay=hp.weight_decay, momentum=hp.momentum)
    carried = hp.optimizer_state == "client" and restore_optimizer(context, optimizer)
    generator = torch.Generator().manual_seed(seed)
    augment = None
    if cfg.augment != "none":
        augmenter = Augmenter(policy=cfg.augment, same_across_frames=data.real_clips)
        augment = lambda x: augmenter(x, generator=generator)  # noqa: E731
    weights = class_weights(cfg, data)
    metrics: dict[str, float | int] = {**({PARTITION_ID: partition_id} if partition_id >= 0 else {}), **dict(zip(CLIENT_SETTINGS, (hp.batch_size, hp.learning_rate, hp.max_grad_norm, hp.ema_decay))),
                                       "round-learning-rate": learning_rate, "optimizer-state-carried": int(carried)}
    recipe = dict(views=cfg.augment_multiplicity,
                  ema=WeightEMA(model, decay=hp.ema_decay) if hp.ema_decay > 0 else None)
    if private is not None:
        loader = unit_loader(slots=private.slots, units=private.units, batch_size=hp.batch_size, seed=seed)
        parts = make_private(model=model, optimizer=optimizer, loader=loader, noise_multiplier=private.noise,
                             max_grad_norm=hp.max_grad_norm, ledger=private.ledger,
                             grad_sample_mode=cfg.grad_sample_mode)  # make_private re-keys the loader
        stats = engine.train(model=parts.model, data=data, optimizer=parts.optimizer, loader=parts.loader,
                             epochs=cfg.local_epochs, device=device, augment=augment, class_weights=weights,
                             physical_batch_size=hp.physical_batch_size, persons=private.persons,
                             max_steps=private.local_steps, **recipe)
        ledger = parts.ledger()
        private.record(context, ledger, delta=cfg.target_delta)  # before replying
        metrics.update({EPSILON: ledger.epsilon(delta=cfg.target_delta), UNIT_IS_PERSON: int(private.unit == "person"),
                        "noise-multiplier": private.noise, "sample-rate": private.sample_rate,
                        "dp-steps": ledger.total_steps})  # all from public counts (fer_models/federation/wire.py)
        trained = parts.model
    else:
        batch = min(hp.batch_size, len(data))
        loader = engine.index_loader(len(data), batch_size=batch, seed=seed)
        local_steps = cfg.local_steps_for(num_samples=len(data), batch_size=batch)
        stats = engine.train(model=model, data=data, optimizer=optimizer, loader=loader,
                             epochs=cfg.local_epochs, device=device, augment=augment, class_weights=weights,
                             proximal_mu=proximal_mu, max_steps=local_steps, **recipe)
        trained = model
    if hp.optimizer_state == "client":
        keep_optimizer(context, optimizer)  # built from noised gradients: post-processing, stays here
    # the EMA of the weights is post-processing of the (private) iterates: it is what leaves the client
    state = recipe["ema"].state_dict() if recipe["ema"] is not None else plain_state_dict(trained)
    metrics.update({NUM_EXAMPLES: stats.num_examples, UNIFORM_WEIGHT: 1})
    if cfg.dp == "none" and cfg.secure_aggregation == "none":
        # computed from private data outside any accounted mechanism: never sent under DP, nor beside a masked update
        metrics.update(dict(zip(TRAIN_STATISTICS, (stats.loss, stats.accuracy, stats.samples_seen, stats.seconds))))
        if global_loss is not None:
            metrics[GLOBAL_LOSS] = global_loss
    return LocalResult(state=state, metrics=metrics)


def class_weights(cfg: RunConfig, data: ClipSet) -> torch.Tensor | None:
    """Loss weights per class: public numbers (class-weights) or, without DP only, from the local labels."""
    if cfg.class_balance != "weighted-loss":
        return None
    if cfg.public_class_weights is not None:
        return torch.tensor(cfg.public_class_weights, dtype=torch.float32)
    return engine.balanced_class_weights(data.labels)


def evaluate_local(*, cfg: RunConfig, local: LocalData, partition_id: int, num_partitions: int,
                   global_state: dict[str, torch.Tensor]) -> dict[str, float | int]:
    """Evaluate the global model on this client's IID share of the validation split (a site: its held-out split)."""
    store = local.store
    split = "val" if store.has_split("val") else "test"
    if local.held_out is not None:
        idx = store.indices(local.held_out)
    else:
        idx = np.array_split(np.random.default_rng(cfg.seed).permutation(store.indices(split)),
                             num_partitions)[partition_id]
    res = evaluate_state(cfg, store, np.sort(idx), global_state)
    return {"num-examples": res.num_examples, "eval-loss": res.loss, "eval-accuracy": res.accuracy}
