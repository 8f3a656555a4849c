"""One client's local round: core calls plus the privacy ledger kept in the client's state."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import Context

from client.carry import keep_optimizer, restore_optimizer
from client.ledger import (ledger_metrics, load_ledger, restore_if_missing, save_ledger, store_noise,
                           stored_noise)
from fer_models import engine
from fer_models.augment import Augmenter
from fer_models.config import RunConfig
from fer_models.dp_recipe import WeightEMA, training_hyperparams
from fer_models.optim_state import lr_factor
from fer_models.privacy import (PrivacyLedger, make_private, noise_for_target, plain_state_dict,
                                sample_rate_for, steps_per_epoch)
from fer_models.task import build_model, client_data, clips_for, load_store

logger = logging.getLogger(__name__)


class BudgetRefusal(RuntimeError):
    """This client would exceed its epsilon budget by training this round."""


@dataclass(frozen=True)
class LocalResult:
    state: dict[str, torch.Tensor]
    metrics: dict[str, float | int]


def round_seed(cfg: RunConfig, partition_id: int, server_round: int) -> int:
    """A distinct, reproducible seed for each (run seed, client, round)."""
    return int(np.random.SeedSequence([cfg.seed, partition_id, server_round]).generate_state(1)[0])


def _noise_multiplier(cfg: RunConfig, context: Context, *, sample_rate: float, steps_per_round: int) -> float:
    """Fixed noise for the run; in target-epsilon mode computed once for all planned steps."""
    if cfg.target_epsilon <= 0:
        return cfg.noise_multiplier
    noise = stored_noise(context)
    if noise is None:
        planned = steps_per_round * cfg.num_server_rounds
        noise = noise_for_target(target_epsilon=cfg.target_epsilon, delta=cfg.target_delta,
                                 sample_rate=sample_rate, steps=planned, accountant=cfg.accountant)
        store_noise(context, noise)
        logger.info("noise multiplier %.4f spends epsilon %.3f over %d planned steps (q=%.4f)",
                    noise, cfg.target_epsilon, planned, sample_rate)
    return noise


def train_local(*, cfg: RunConfig, context: Context, partition_id: int, num_partitions: int,
                global_state: dict[str, torch.Tensor], server_round: int,
                proximal_mu: float = 0.0, server_config: Any = None) -> LocalResult:
    """Train the global model on this client's share; under dp=sample compose the ledger."""
    engine.configure_threads(cfg.num_cpus)
    device = engine.select_device()
    data = client_data(cfg, partition_id=partition_id, num_partitions=num_partitions)
    model = build_model(cfg, image_size=load_store(cfg).image_size[0])
    model.load_state_dict(global_state)
    model.to(device)
    seed = round_seed(cfg, partition_id, server_round)
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
    weights = engine.balanced_class_weights(data.labels) if cfg.class_balance == "weighted-loss" else None
    metrics: dict[str, float | int] = {"partition-id": partition_id, **hp.as_metrics(),
                                       "round-learning-rate": learning_rate, "optimizer-state-carried": int(carried)}
    recipe = dict(views=cfg.augment_multiplicity,
                  ema=WeightEMA(model, decay=hp.ema_decay) if hp.ema_decay > 0 else None)
    if cfg.dp == "sample":
        if server_config is not None and restore_if_missing(context, server_config, partition_id=partition_id,
                                                            accountant=cfg.accountant):
            logger.info("client %d: privacy ledger restored from the server's checkpoint", partition_id)
        ledger = load_ledger(context, accountant=cfg.accountant)
        q = sample_rate_for(batch_size=hp.batch_size, num_samples=len(data))
        steps = cfg.local_epochs * steps_per_epoch(q)
        noise = _noise_multiplier(cfg, context, sample_rate=q, steps_per_round=steps)
        projected = ledger.with_steps(noise_multiplier=noise, sample_rate=q, steps=steps)
        eps_after = projected.epsilon(delta=cfg.target_delta)
        if eps_after > cfg.budget + 1e-9:
            raise BudgetRefusal(
                f"round {server_round}: training would raise epsilon from "
                f"{ledger.epsilon(delta=cfg.target_delta):.3f} to {eps_after:.3f}, over the budget "
                f"{cfg.budget:.3f} (delta={cfg.target_delta}); this client stops training")
        loader = engine.index_loader(len(data), batch_size=hp.batch_size, seed=seed)
        parts = make_private(model=model, optimizer=optimizer, loader=loader, noise_multiplier=noise,
                             max_grad_norm=hp.max_grad_norm, ledger=ledger,
                             grad_sample_mode=cfg.grad_sample_mode, noise_seed=seed)
        stats = engine.train(model=parts.model, data=data, optimizer=parts.optimizer, loader=parts.loader,
                             epochs=cfg.local_epochs, device=device, augment=augment, class_weights=weights,
                             physical_batch_size=hp.physical_batch_size, **recipe)
        ledger = parts.ledger()
        save_ledger(context, ledger)
        metrics.update({"epsilon": ledger.epsilon(delta=cfg.target_delta), "noise-multiplier": noise,
                        "sample-rate": q, "dp-steps": ledger.total_steps, **ledger_metrics(context)})
        trained = parts.model
    else:
        loader = engine.index_loader(len(data), batch_size=min(hp.batch_size, len(data)), seed=seed)
        stats = engine.train(model=model, data=data, optimizer=optimizer, loader=loader,
                             epochs=cfg.local_epochs, device=device, augment=augment,
                             class_weights=weights, proximal_mu=proximal_mu, **recipe)
        trained = model
    if hp.optimizer_state == "client":
        keep_optimizer(context, optimizer)  # built from noised gradients: post-processing, stays here
    # the EMA of the weights is post-processing of the (private) iterates: it is what leaves the client
    state = recipe["ema"].state_dict() if recipe["ema"] is not None else plain_state_dict(trained)
    metrics.update({"num-examples": stats.num_examples, "train-loss": stats.loss,
                    "train-accuracy": stats.accuracy, "train-seconds": stats.seconds,
                    "samples-seen": stats.samples_seen})
    return LocalResult(state=state, metrics=metrics)


def evaluate_local(*, cfg: RunConfig, partition_id: int, num_partitions: int,
                   global_state: dict[str, torch.Tensor]) -> dict[str, float | int]:
    """Evaluate the global model on this client's IID share of the validation split."""
    engine.configure_threads(cfg.num_cpus)
    device = engine.select_device()
    store = load_store(cfg)
    split = "val" if store.has_split("val") else "test"
    idx = np.array_split(np.random.default_rng(cfg.seed).permutation(store.indices(split)),
                         num_partitions)[partition_id]
    model = build_model(cfg, image_size=store.image_size[0])
    model.load_state_dict(global_state)
    model.to(device)
    res = engine.evaluate(model=model, data=clips_for(cfg, store, np.sort(idx)),
                          batch_size=cfg.eval_batch_size, device=device)
    return {"num-examples": res.num_examples, "eval-loss": res.loss, "eval-accuracy": res.accuracy}
