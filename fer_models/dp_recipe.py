"""Pieces of the DP-SGD recipe of De et al. (2022) that work on top of the training loop.

- Augmentation multiplicity: each sample (the privacy unit: one clip) is seen as K augmented
  views in the same step; the per-sample gradient is the *mean over its views*, taken before
  Opacus clips it, so a sample still contributes one clipped gradient (sensitivity unchanged,
  accounting unchanged).
- An exponential moving average of the weights: post-processing of the private iterates, so it
  costs no privacy; evaluation and the weights a client sends use it.

Plain PyTorch + Opacus conventions (``p.grad_sample``); no Flower.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def average_views(model: nn.Module, *, views: int) -> None:
    """Replace each parameter's per-row ``grad_sample`` (B*K rows) by the per-sample mean (B rows).

    Rows must be ordered sample-major (sample 0's K views, then sample 1's, ...), as
    ``indices.repeat_interleave(K)`` produces. Call after ``backward()`` and before the
    optimizer step.
    """
    if views <= 1:
        return
    for p in model.parameters():
        gs = getattr(p, "grad_sample", None)
        if gs is None:
            continue
        last = gs[-1] if isinstance(gs, list) else gs
        if last.shape[0] % views:
            raise ValueError(f"grad_sample has {last.shape[0]} rows, not a multiple of {views} views")
        mean = last.reshape(last.shape[0] // views, views, *last.shape[1:]).mean(dim=1)
        if isinstance(gs, list):
            gs[-1] = mean
        else:
            p.grad_sample = mean


class WeightEMA:
    """Exponential moving average of a model's parameters: ``ema = d * ema + (1 - d) * w`` per step."""

    def __init__(self, model: nn.Module, *, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(_plain(model)).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_p, p in zip(self.shadow.parameters(), _plain(model).parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.shadow.state_dict().items()}


def _plain(model: nn.Module) -> nn.Module:
    return getattr(model, "_module", model)
