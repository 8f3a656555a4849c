"""One client's local round: core calls plus the privacy ledger kept on the client's own node."""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import Context

from client.carry import keep_optimizer, restore_optimizer
from client.ledger import LedgerFile, check_lineage
from fer_models import engine
from fer_models.augment import Augmenter
from fer_models.config import RunConfig
from fer_models.dp_recipe import WeightEMA, training_hyperparams
from fer_models.optim_state import lr_factor
from fer_models.persons import PersonIndex, person_index
from fer_models.privacy import (PrivacyLedger, make_private, noise_for_target, plain_state_dict,
                                sample_rate_for, steps_per_epoch)
from fer_models.samples import ClipSet
from fer_models.sites import LocalData
from fer_models.task import build_model, evaluate_state
from fer_models.wire import (EPSILON, GLOBAL_LOSS, NUM_EXAMPLES, PARTITION_ID, TRAIN_STATISTICS, UNIFORM_WEIGHT,
                             UNIT_IS_PERSON)

logger = logging.getLogger(__name__)


class BudgetRefusal(RuntimeError):
    """This client would exceed its epsilon budget by training this round."""


@dataclass(frozen=True)
class LocalResult:
    state: dict[str, torch.Tensor]
    metrics: dict[str, float | int]


def round_seed(cfg: RunConfig, partition_id: int, server_round: int) -> int:
    """A distinct, reproducible seed for each (run seed, client, round): for model-side randomness
    only (dropout, augmentation). DP noise and Poisson sampling never use it (see make_private)."""
    return int(np.random.SeedSequence([cfg.seed, partition_id, server_round]).generate_state(1)[0])


def privacy_units(cfg: RunConfig, local: LocalData) -> tuple[PersonIndex | None, str]:
    """(persons, unit name): persons under privacy-unit=person when the data has subject ids, else images."""
    if cfg.privacy_unit != "person":
        return None, "image"
    data = local.train
    subjects = local.store.meta.get("subject")
    mine = None if subjects is None else np.asarray(subjects)[data.frames[:, 0].numpy()]  # each sample's first frame
    if mine is None or not np.any(mine.astype(str) != ""):
        logger.warning("privacy-unit=person, but this client's data has no subject ids (FER2013 has none): "
                       "its epsilon protects one image, not one person")
        return None, "image"
    return person_index(mine), "person"


def _noise_multiplier(cfg: RunConfig, stored: float | None, *, sample_rate: float, steps_per_round: int,
                      unit: str) -> float:
    """Fixed noise for the run; in target-epsilon mode computed once for all planned steps."""
    if stored is not None:
        return stored
    if cfg.target_epsilon <= 0:
        return cfg.noise_multiplier
    planned = steps_per_round * cfg.num_server_rounds
    noise = noise_for_target(target_epsilon=cfg.target_epsilon, delta=cfg.target_delta,
                             sample_rate=sample_rate, steps=planned, accountant=cfg.accountant)
    logger.info("noise multiplier %.4f spends this client's %s-level epsilon %.3f (delta=%g) over %d planned steps "
                "(q=%.4f)", noise, unit, cfg.target_epsilon, cfg.target_delta, planned, sample_rate)
    return noise


def train_local(*, cfg: RunConfig, context: Context, local: LocalData, global_state: dict[str, torch.Tensor],
                server_round: int, proximal_mu: float = 0.0, lineage: str = "") -> LocalResult:
    """Train the global model on this client's data; under dp=sample compose the ledger on disk."""
    engine.configure_threads(cfg.num_cpus)
    device = engine.select_device()
    data = local.train
    model = build_model(cfg, image_size=local.store.image_size[0])
    model.load_state_dict(global_state)
    model.to(device)
    partition_id = int(context.node_config.get("partition-id", -1))  # type: ignore[arg-type]  (a site may have none)
    seed = round_seed(cfg, partition_id if local.site is None else zlib.crc32(local.key.encode()), server_round)
    # q-FedAvg's F_k(w): private, so only without DP (RunConfig.check refuses qfedavg under DP)
    global_loss = (engine.evaluate(model=model, data=data, batch_size=cfg.eval_batch_size, device=device).loss
                   if cfg.strategy == "qfedavg" and cfg.dp == "none" else None)
    torch.manual_seed(seed)  # dropout & co.: the same draws whichever process runs this client
    hp = training_hyperparams(cfg, num_samples=len(data))
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
    metrics: dict[str, float | int] = {**({PARTITION_ID: partition_id} if partition_id >= 0 else {}), **hp.as_metrics(),
                                       "round-learning-rate": learning_rate, "optimizer-state-carried": int(carried)}
    recipe = dict(views=cfg.augment_multiplicity,
                  ema=WeightEMA(model, decay=hp.ema_decay) if hp.ema_decay > 0 else None)
    if cfg.dp == "sample":
        check_lineage(context, lineage)
        where = LedgerFile.locate(context, lineage=lineage, client=local.key)
        ledger, stored_noise = where.load(context, accountant=cfg.accountant)
        persons, unit = privacy_units(cfg, local)
        units = len(persons) if persons is not None else len(data)
        q = sample_rate_for(batch_size=hp.batch_size, num_samples=units)
        local_steps = cfg.local_steps_for(num_samples=units, batch_size=hp.batch_size)  # ~ fraction / q
        steps = local_steps or cfg.local_epochs * steps_per_epoch(q)  # what the ledger composes
        noise = _noise_multiplier(cfg, stored_noise, sample_rate=q, steps_per_round=steps, unit=unit)
        projected = ledger.with_steps(noise_multiplier=noise, sample_rate=q, steps=steps)
        eps_after = projected.epsilon(delta=cfg.target_delta)
        if eps_after > cfg.budget + 1e-9:
            raise BudgetRefusal(
                f"round {server_round}: training would raise this client's {unit}-level epsilon from "
                f"{ledger.epsilon(delta=cfg.target_delta):.3f} to {eps_after:.3f}, over the budget "
                f"{cfg.budget:.3f} (delta={cfg.target_delta}); this client stops training")
        loader = engine.index_loader(units, batch_size=hp.batch_size, seed=seed)  # make_private re-keys it
        parts = make_private(model=model, optimizer=optimizer, loader=loader, noise_multiplier=noise,
                             max_grad_norm=hp.max_grad_norm, ledger=ledger, grad_sample_mode=cfg.grad_sample_mode)
        stats = engine.train(model=parts.model, data=data, optimizer=parts.optimizer, loader=parts.loader,
                             epochs=cfg.local_epochs, device=device, augment=augment, class_weights=weights,
                             physical_batch_size=hp.physical_batch_size, persons=persons, max_steps=local_steps,
                             **recipe)
        ledger = parts.ledger()
        where.save(context, ledger, noise_multiplier=noise, unit=unit, delta=cfg.target_delta)  # before replying
        metrics.update({EPSILON: ledger.epsilon(delta=cfg.target_delta), UNIT_IS_PERSON: int(unit == "person"),
                        "noise-multiplier": noise, "sample-rate": q, "dp-steps": ledger.total_steps})
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
    if cfg.dp == "none":  # computed from private data outside any accounted mechanism: never sent under DP
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
