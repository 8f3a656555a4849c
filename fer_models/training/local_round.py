"""One client's local round, private or not, in plain PyTorch: what the ClientApp and the benchmarks run.

:func:`local_round` resolves the round's hyper-parameters (the config's, or the tuned DP recipe's),
its learning rate (``lr-schedule``), builds the model from the global state, the optimizer (with
the state a client carried from its previous round, ``optimizer-state = client``), the batch
augmentation and the weight EMA, wraps them with Opacus under ``dp = sample`` (secret noise and
Poisson sampling: :func:`fer_models.privacy.dp_sgd.make_private`) and runs the one engine. It
returns a :class:`LocalRound`; writing ledgers, keeping optimizer state and building the reply's
metrics is the caller's (client/training.py). No Flower here.

Seeds: ``seed`` (:func:`round_seed`) drives the model-side randomness only (dropout, augmentation,
the non-private shuffle). DP noise and Poisson sampling never use it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from fer_models.config import RunConfig
from fer_models.config.recipe import TrainingHyperparams, training_hyperparams
from fer_models.data.samples import ClipSet
from fer_models.models.from_config import build_model
from fer_models.privacy.dp_sgd import PrivacyLedger, make_private, plain_state_dict
from fer_models.privacy.sgd_helpers import WeightEMA
from fer_models.training import engine
from fer_models.training.augment import Augmenter
from fer_models.training.optim_state import load_optimizer_state, lr_factor, optimizer_state_tensors
from fer_models.training.private_plan import BudgetRefusal, PrivateRoundPlan, check_run_budget, unit_loader

logger = logging.getLogger(__name__)

__all__ = ["BudgetRefusal", "LocalRound", "PrivateRoundPlan", "class_weights", "local_round", "round_seed"]


@dataclass(frozen=True)
class LocalRound:
    """What one local round produced. The DP fields are None without DP."""

    state: dict[str, torch.Tensor]  # what leaves the client: the EMA of the weights when ema-decay > 0
    stats: engine.TrainStats  # computed from private data: the caller decides what of it may leave
    hyperparams: TrainingHyperparams
    learning_rate: float  # this round's (lr-schedule applied)
    optimizer_state_carried: bool
    optimizer_state: dict[str, torch.Tensor] | None  # to carry into the next round (optimizer-state = client)
    global_loss: float | None = None  # q-FedAvg's F_k(w) of the received model (only without DP)
    epsilon: float | None = None  # over the whole history, after this round
    noise_multiplier: float | None = None
    sample_rate: float | None = None
    dp_steps: int | None = None  # every step of the history
    ledger: PrivacyLedger | None = None  # the history to record before the reply leaves


def round_seed(cfg: RunConfig, partition_id: int, server_round: int) -> int:
    """A distinct, reproducible seed for each (run seed, client, round): for model-side randomness
    only (dropout, augmentation). DP noise and Poisson sampling never use it (see make_private)."""
    return int(np.random.SeedSequence([cfg.seed, partition_id, server_round]).generate_state(1)[0])


def class_weights(cfg: RunConfig, data: ClipSet) -> torch.Tensor | None:
    """Loss weights per class: public numbers (class-weights) or, without DP only, from the local labels."""
    if cfg.class_balance != "weighted-loss":
        return None
    if cfg.public_class_weights is not None:
        return torch.tensor(cfg.public_class_weights, dtype=torch.float32)
    return engine.balanced_class_weights(data.labels)


def local_round(*, cfg: RunConfig, train: ClipSet, global_state: Mapping[str, torch.Tensor], seed: int,
                server_round: int, private: PrivateRoundPlan | None, optimizer_state: Mapping[str, torch.Tensor]
                | None = None, proximal_mu: float = 0.0, image_size: int | None = None,
                device: torch.device | None = None) -> LocalRound:
    """Train ``global_state`` on ``train`` for one round; under dp=sample with ``private``'s plan.

    Raises BudgetRefusal (before the model is built) when ``private`` would take epsilon over the run's
    budget, ValueError when ``private`` does not match ``cfg.dp``. ``image_size`` defaults to the data's."""
    if (private is not None) != (cfg.dp == "sample"):
        raise ValueError(f"dp={cfg.dp} needs private={'a PrivateRoundPlan' if cfg.dp == 'sample' else 'None'} "
                         f"(fer_models.training.private_plan.plan_private_round builds one)")
    if private is not None and proximal_mu > 0:
        logger.info("proximal-mu=%g is not applied under DP (FedProx's term is non-private)", proximal_mu)
    if len(train) == 0:
        raise ValueError("a local round needs training samples (this client has none)")
    hp = training_hyperparams(cfg, num_samples=len(train))
    if private is not None:
        check_run_budget(private, cfg=cfg, server_round=server_round)  # before the model is even built
    engine.configure_threads(cfg.num_cpus)
    device = device or engine.select_device()
    model = build_model(cfg, image_size=int(train.images.shape[-2]) if image_size is None else image_size)
    model.load_state_dict(dict(global_state))
    model.to(device)
    # q-FedAvg's F_k(w): private, so only without DP (RunConfig.check refuses qfedavg under DP)
    global_loss = (engine.evaluate(model=model, data=train, batch_size=cfg.eval_batch_size, device=device).loss
                   if cfg.strategy == "qfedavg" and cfg.dp == "none" else None)
    torch.manual_seed(seed)  # dropout & co.: the same draws whichever process runs this client
    learning_rate = hp.learning_rate * lr_factor(schedule=hp.lr_schedule, server_round=server_round,
                                                 num_rounds=cfg.num_server_rounds)
    optimizer = engine.make_optimizer(model, name=hp.optimizer, learning_rate=learning_rate,
                                      weight_decay=hp.weight_decay, momentum=hp.momentum)
    keep = hp.optimizer_state == "client"
    carried = keep and optimizer_state is not None and load_optimizer_state(optimizer, dict(optimizer_state))
    generator = torch.Generator().manual_seed(seed)
    augment = None
    if cfg.augment != "none":
        augmenter = Augmenter(policy=cfg.augment, same_across_frames=train.real_clips)
        augment = lambda x: augmenter(x, generator=generator)  # noqa: E731
    ema = WeightEMA(model, decay=hp.ema_decay) if hp.ema_decay > 0 else None
    common = dict(data=train, epochs=cfg.local_epochs, device=device, augment=augment,
                  class_weights=class_weights(cfg, train), views=cfg.augment_multiplicity, ema=ema,
                  label_smoothing=cfg.label_smoothing)
    dp: dict[str, object] = {}
    if private is not None:
        loader = unit_loader(slots=private.slots, units=private.units, batch_size=private.batch_size, seed=seed)
        parts = make_private(model=model, optimizer=optimizer, loader=loader, noise_multiplier=private.noise,
                             max_grad_norm=hp.max_grad_norm, ledger=private.ledger,
                             grad_sample_mode=cfg.grad_sample_mode)  # make_private re-keys the loader
        stats = engine.train(model=parts.model, optimizer=parts.optimizer, loader=parts.loader,
                             physical_batch_size=hp.physical_batch_size, persons=private.persons,
                             max_steps=private.local_steps, **common)
        ledger = parts.ledger()
        dp = dict(epsilon=ledger.epsilon(delta=cfg.target_delta), noise_multiplier=private.noise,
                  sample_rate=private.sample_rate, dp_steps=ledger.total_steps, ledger=ledger)
        trained = parts.model
    else:
        batch = min(hp.batch_size, len(train))
        loader = engine.index_loader(len(train), batch_size=batch, seed=seed)
        stats = engine.train(model=model, optimizer=optimizer, loader=loader, proximal_mu=proximal_mu,
                             max_steps=cfg.local_steps_for(num_samples=len(train), batch_size=batch), **common)
        trained = model
    # the EMA of the weights and the optimizer state are post-processing of the (private) iterates
    state = ema.state_dict() if ema is not None else plain_state_dict(trained)
    return LocalRound(state=state, stats=stats, hyperparams=hp, learning_rate=learning_rate,
                      optimizer_state_carried=bool(carried),
                      optimizer_state=optimizer_state_tensors(optimizer) if keep else None,
                      global_loss=global_loss, **dp)  # type: ignore[arg-type]
