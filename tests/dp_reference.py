"""The DP-SGD update computed by definition, sample by sample: what Opacus' result is checked against."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def clipped_mean_by_hand(model: nn.Module, x: Tensor, y: Tensor, *, clip: float) -> list[Tensor]:
    """Mean over samples of each sample's cross-entropy gradient, clipped to norm ``clip`` (Opacus' 1e-6 guard)."""
    total = [torch.zeros_like(p) for p in model.parameters()]
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        grads = [p.grad.detach().clone() for p in model.parameters()]
        scale = min(1.0, clip / (float(torch.sqrt(sum((g ** 2).sum() for g in grads))) + 1e-6))
        for t, g in zip(total, grads):
            t += g * scale
    return [t / len(x) for t in total]
