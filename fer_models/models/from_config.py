"""The configured model: ``create_model`` with the options a run config selects, seeded from the run seed."""

from __future__ import annotations

import torch
from torch import nn

from fer_models.common.labels import IMAGE_SIDE
from fer_models.config import RunConfig
from fer_models.models.registry import create_model
from fer_models.models.stages import ENCODERS


def model_options(cfg: RunConfig) -> dict[str, object]:
    """Keyword options of ``create_model`` that come from the config (and the DP recipe)."""
    options: dict[str, object] = {"activation": cfg.activation, "frontend": cfg.frontend,
                                  "frame_readout": cfg.frame_readout, **ENCODERS[cfg.encoder]}
    if cfg.model == "cnn_rnn":
        options.update(rnn=cfg.rnn, temporal_attention=cfg.temporal_attention)
    return options


def build_model(cfg: RunConfig, *, image_size: int = IMAGE_SIDE) -> nn.Module:
    """The configured model, initialised from the run seed (identical on every process)."""
    torch.manual_seed(cfg.seed)
    return create_model(cfg.model, image_size=image_size, **model_options(cfg))
