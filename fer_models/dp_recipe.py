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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from fer_models.config import RunConfig


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


# ------------------------------------------------------------------------------------------------
# The tuned recipe: which hyper-parameters dp=sample uses unless dp-recipe=none
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainingHyperparams:
    """What one client's local training uses (from the config, or from the recipe under DP)."""

    batch_size: int
    physical_batch_size: int
    optimizer: str
    learning_rate: float
    momentum: float
    weight_decay: float
    optimizer_state: str
    lr_schedule: str
    max_grad_norm: float
    ema_decay: float

    def as_metrics(self) -> dict[str, float | int]:
        from fer_models.wire import CLIENT_SETTINGS

        return dict(zip(CLIENT_SETTINGS, (self.batch_size, self.learning_rate, self.max_grad_norm, self.ema_decay)))


@dataclass(frozen=True)
class DPRecipe:
    """Measured DP-SGD defaults (benchmarks/dp_ablation.py; README "DP recipe").

    The model starts from a fixed ScatterNet (``frontend``) with tanh conv blocks; clients train
    with normalized DP-SGD (small clip, large lr, momentum) from a model pre-trained on the public
    synthetic faces. Keeping momentum across rounds and a cosine learning rate are switches the
    recipe leaves off: measured neutral (within 0.2 points) at the cpu budget.

    The logical batch is as large as ``max_batch`` but no larger than ``1 / min_steps_per_epoch``
    of the client's data (a client with few samples still takes several noisy steps per epoch),
    and never below ``min_batch``. The learning rate is scaled linearly with the batch from
    ``learning_rate`` at ``max_batch``: a smaller batch averages fewer clipped gradients against
    the same noise, so it takes a proportionally smaller step.
    """

    max_batch: int = 512
    min_batch: int = 64
    min_steps_per_epoch: int = 16
    physical_batch: int = 256
    optimizer: str = "sgd"
    learning_rate: float = 4.0
    momentum: float = 0.9
    weight_decay: float = 0.0  # 1e-4 cost about 4 points at the cpu budget (lr 4 shrinks the weights fast)
    optimizer_state: str = "round"  # keeping momentum across rounds measured neutral behind the ScatterNet
    lr_schedule: str = "constant"  # cosine measured neutral behind the ScatterNet (dp_ablation)
    max_grad_norm: float = 0.1
    ema_decay: float = 0.0  # off: at the cpu budget its lag cost more than its smoothing gave (dp_ablation)
    frontend: str = "scatter"
    activation: str = "tanh"
    pretrain_epochs: int = 8

    def batch_for(self, num_samples: int) -> int:
        return int(max(self.min_batch, min(self.max_batch, num_samples // self.min_steps_per_epoch)))

    def run_values(self) -> dict[str, Any]:
        """The run-config keys this recipe sets, with the run-wide values (batch and learning rate at the
        largest batch: each client scales both to its size, and reports what it used)."""
        return {"frontend": self.frontend, "activation": self.activation, "pretrain-epochs": self.pretrain_epochs,
                "batch-size": self.max_batch, "physical-batch-size": self.physical_batch,
                "optimizer": self.optimizer, "learning-rate": self.learning_rate, "momentum": self.momentum,
                "weight-decay": self.weight_decay, "optimizer-state": self.optimizer_state,
                "lr-schedule": self.lr_schedule, "max-grad-norm": self.max_grad_norm, "ema-decay": self.ema_decay}


TUNED = DPRecipe()
#: Run-config keys the tuned recipe chooses under dp=sample (a user who sets one must say dp-recipe=none).
RECIPE_KEYS = tuple(TUNED.run_values())


def training_hyperparams(cfg: "RunConfig", *, num_samples: int, recipe: DPRecipe = TUNED) -> TrainingHyperparams:
    """What a client holding ``num_samples`` uses: the (resolved) config's values; under the tuned DP
    recipe the logical batch is sized to the client and the learning rate scaled with it."""
    batch, learning_rate, physical = cfg.batch_size, cfg.learning_rate, cfg.physical_batch_size
    if recipe_active(cfg):
        batch = recipe.batch_for(num_samples)
        learning_rate = cfg.learning_rate * batch / cfg.batch_size
        physical = min(cfg.physical_batch_size, batch)
    return TrainingHyperparams(batch_size=batch, physical_batch_size=physical, optimizer=cfg.optimizer,
                               learning_rate=learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               optimizer_state=cfg.optimizer_state, lr_schedule=cfg.lr_schedule,
                               max_grad_norm=cfg.max_grad_norm, ema_decay=cfg.ema_decay)


def recipe_active(cfg: "RunConfig") -> bool:
    """True when the tuned DP recipe chooses the hyper-parameters (dp=sample, dp-recipe=tuned)."""
    return cfg.dp == "sample" and cfg.dp_recipe == "tuned"
