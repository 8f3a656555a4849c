"""Public pre-training: the initial global model trained, without privacy, on the embedded
SYNTHETIC faces before round 1.

The synthetic faces are public by construction (drawn procedurally, no real person in them), so
training on them spends no privacy budget; DP-SGD then fine-tunes from edge and face-part
features instead of from random weights. The tuned DP recipe switches it on
(:mod:`fer_models.dp_recipe`); ``pretrain-epochs`` sets it for any run. Plain PyTorch, no Flower.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from fer_models import engine
from fer_models.config import RunConfig
from fer_models.data import load_dataset
from fer_models.task import build_model, clips_for
from fer_models.labels import IMAGE_SIDE

logger = logging.getLogger(__name__)

PRETRAIN_LEARNING_RATE = 3e-3
PRETRAIN_BATCH = 64
PRETRAIN_WEIGHT_DECAY = 1e-4  # its own, like lr and batch: the run's weight-decay is for the (DP) training


def initial_model(cfg: RunConfig, *, image_size: int = IMAGE_SIDE) -> nn.Module:
    """The run's initial model: seeded random weights, pre-trained on synthetic faces when asked."""
    model = build_model(cfg, image_size=image_size)
    epochs = cfg.pretrain_epochs
    if epochs > 0:
        if image_size != IMAGE_SIDE:
            logger.warning("public pre-training skipped: the synthetic faces are 48x48, the data %dx%d",
                           image_size, image_size)
        else:
            pretrain_on_synthetic(model, cfg=cfg, epochs=epochs)
    return model


def pretrain_on_synthetic(model: nn.Module, *, cfg: RunConfig, epochs: int) -> float:
    """Train ``model`` in place on the synthetic train split; returns its synthetic test accuracy."""
    store = load_dataset(data_path="", data_format="synthetic", seed=cfg.seed,
                         synthetic_per_class=cfg.synthetic_per_class,
                         synthetic_eval_per_class=cfg.synthetic_eval_per_class)
    train = clips_for(cfg, store, store.indices("train"))
    test = clips_for(cfg, store, store.indices("test"))
    engine.configure_threads(cfg.num_cpus)
    device = engine.select_device()
    model.to(device)
    torch.manual_seed(cfg.seed)
    optimizer = engine.make_optimizer(model, name="adamw", learning_rate=PRETRAIN_LEARNING_RATE,
                                      weight_decay=PRETRAIN_WEIGHT_DECAY)
    loader = engine.index_loader(len(train), batch_size=PRETRAIN_BATCH, seed=cfg.seed)
    stats = engine.train(model=model, data=train, optimizer=optimizer, loader=loader, epochs=epochs, device=device)
    acc = engine.evaluate(model=model, data=test, batch_size=cfg.eval_batch_size, device=device).accuracy
    model.train()
    model.cpu()
    logger.info("public pre-training: %d epochs on %d synthetic faces (%.1f s), synthetic test accuracy %.3f",
                epochs, len(train), stats.seconds, acc)
    return acc
