"""Public pre-training: the initial global model trained, without privacy, on the embedded
SYNTHETIC faces before round 1.

The synthetic faces are public by construction (drawn procedurally, no real person in them), so
training on them spends no privacy budget; DP-SGD then fine-tunes from edge and face-part
features instead of from random weights. The tuned DP recipe switches it on
(:mod:`fer_models.config.recipe`); ``pretrain-epochs`` sets it for any run. Plain PyTorch, no Flower.

The pre-trained weights are cached on disk (``cache-dir``/pretrained, beside the decoded datasets),
keyed by everything that decides them: the random initial weights (model, its settings, the seed),
the synthetic set and clip settings, the epochs and pre-training constants, torch's version and
the source of the code that trains them. A run whose key matches loads them instead of training
again (measured on 2 cores: 14-17 s for the pixel cnn_rnn, 12 s behind the ScatterNet front-end with its
memo of the maps, 57 s without, at every ServerApp start without the cache); any change misses.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

import torch
from torch import nn

from fer_models.common.atomic import atomic_write_bytes
from fer_models.common.labels import IMAGE_SIDE
from fer_models.config import RunConfig
from fer_models.data import load_dataset
from fer_models.data.cache import cache_root
from fer_models.federation.task import clips_for
from fer_models.models.from_config import build_model, model_options
from fer_models.training import engine

logger = logging.getLogger(__name__)

PRETRAIN_LEARNING_RATE = 3e-3
PRETRAIN_BATCH = 64
PRETRAIN_WEIGHT_DECAY = 1e-4  # its own, like lr and batch: the run's weight-decay is for the (DP) training
#: Bump to ignore every cached pre-trained model (the key already covers this code's source).
PRETRAIN_CACHE_VERSION = 1
_PACKAGE = Path(__file__).resolve().parents[1]  # fer_models/
#: The code whose change changes the pre-trained weights: hashed into the cache key.
_SOURCES = ("federation/pretrain.py", "training/engine.py", "federation/task.py", "data/synthetic.py", "data/clips.py",
            "models")


def initial_model(cfg: RunConfig, *, image_size: int = IMAGE_SIDE) -> nn.Module:
    """The run's initial model: seeded random weights, pre-trained on synthetic faces when asked (from the
    disk cache when the same pre-training ran before)."""
    model = build_model(cfg, image_size=image_size)
    epochs = cfg.pretrain_epochs
    if epochs > 0:
        if image_size != IMAGE_SIDE:
            logger.warning("public pre-training skipped: the synthetic faces are 48x48, the data %dx%d",
                           image_size, image_size)
        elif not _load_cached(model, path := pretrain_cache_path(model, cfg=cfg)):
            pretrain_on_synthetic(model, cfg=cfg, epochs=epochs)
            _store(model, path)
    return model


def pretrain_cache_path(model: nn.Module, *, cfg: RunConfig) -> Path:
    """Where the pre-trained weights of ``model`` (at its random init) under ``cfg`` are cached."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    settings = {"model": cfg.model, "options": model_options(cfg), "epochs": cfg.pretrain_epochs, "seed": cfg.seed,
                "synthetic-per-class": cfg.synthetic_per_class,
                "synthetic-eval-per-class": cfg.synthetic_eval_per_class, "clip-length": cfg.clip_length,
                "clip-source": cfg.clip_source, "lr": PRETRAIN_LEARNING_RATE, "batch": PRETRAIN_BATCH,
                "weight-decay": PRETRAIN_WEIGHT_DECAY, "torch": torch.__version__, "version": PRETRAIN_CACHE_VERSION}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for rel in _SOURCES:
        target = _PACKAGE / rel
        for source in sorted(target.rglob("*.py")) if target.is_dir() else [target]:
            digest.update(source.read_bytes())
    return cache_root(cfg.cache_dir) / "pretrained" / f"{digest.hexdigest()[:40]}.pt"


def _load_cached(model: nn.Module, path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if {k: tuple(v.shape) for k, v in state.items()} != expected:
            raise ValueError("its tensors are not this model's")
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - a bad cache file is re-made, never fatal
        logger.warning("pre-trained model cache %s unreadable (%s): pre-training again", path, exc)
        return False
    model.train()
    logger.info("public pre-training: loaded from the cache %s", path)
    return True


def _store(model: nn.Module, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:
        logger.warning("pre-trained model not cached (%s): set cache-dir or FEDFER_CACHE to a writable folder", exc)


def pretrain_on_synthetic(model: nn.Module, *, cfg: RunConfig, epochs: int) -> float:
    """Train ``model`` in place on the synthetic train split; returns its synthetic test accuracy."""
    store = load_dataset(data_path="", data_format="synthetic", seed=cfg.seed,
                         synthetic_per_class=cfg.synthetic_per_class,
                         synthetic_eval_per_class=cfg.synthetic_eval_per_class)
    train = clips_for(cfg, store, store.indices("train"), training=True)
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
