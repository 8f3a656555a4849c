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
    rows = _grad_sample_rows(model)
    if rows is None:
        return
    if rows % views:
        raise ValueError(f"grad_sample has {rows} rows, not a multiple of {views} views")
    average_rows(model, group=torch.arange(rows // views).repeat_interleave(views))


def average_rows(model: nn.Module, *, group: torch.Tensor) -> None:
    """Replace each parameter's per-row ``grad_sample`` by the mean over the rows of each group.

    ``group[i]`` is the privacy unit (0..U-1) of row i: the U rows that result are what Opacus
    clips, one per unit (a sample's augmented views, or a person's samples). No-op without
    per-sample gradients (non-private training).
    """
    if _grad_sample_rows(model) is None:
        return
    group = group.reshape(-1).long()
    units = int(group.max()) + 1 if group.numel() else 0
    counts = torch.bincount(group, minlength=units).clamp(min=1)
    for p in model.parameters():
        gs = getattr(p, "grad_sample", None)
        if gs is None:
            continue
        last = gs[-1] if isinstance(gs, list) else gs
        if last.shape[0] != group.numel():
            raise ValueError(f"grad_sample has {last.shape[0]} rows, the batch has {group.numel()}")
        summed = torch.zeros((units, *last.shape[1:]), dtype=last.dtype, device=last.device)
        summed.index_add_(0, group.to(last.device), last)
        mean = summed / counts.to(last.device, last.dtype).reshape(-1, *([1] * (last.dim() - 1)))
        if isinstance(gs, list):
            gs[-1] = mean
        else:
            p.grad_sample = mean


def empty_grad_samples(model: nn.Module) -> None:
    """Per-sample gradients of an empty Poisson batch (zero rows), so the DP step adds noise only."""
    for p in model.parameters():
        if p.requires_grad:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)


def _grad_sample_rows(model: nn.Module) -> int | None:
    for p in model.parameters():
        gs = getattr(p, "grad_sample", None)
        if gs is not None:
            return int((gs[-1] if isinstance(gs, list) else gs).shape[0])
    return None


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
