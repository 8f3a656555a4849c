"""The one train/eval engine: used by clients, the server's global evaluation and baselines.

The loop is the same with and without differential privacy: under DP the caller passes the
Opacus-wrapped model, optimizer and Poisson index loader (see :mod:`fer_models.privacy.dp_sgd`).
Batches are gathered by index from the in-memory uint8 store and augmented as tensors.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fer_models.common.labels import NUM_CLASSES
from fer_models.data.person_index import PersonIndex
from fer_models.data.samples import Augment, ClipSet
from fer_models.privacy.sgd_helpers import WeightEMA, average_rows, empty_grad_samples

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainStats:
    loss: float
    accuracy: float
    num_examples: int  # samples in the local training set (the FedAvg weight)
    samples_seen: int  # sample-gradients computed (sum of batch sizes over all steps)
    steps: int
    seconds: float


@dataclass(frozen=True)
class EvalResult:
    loss: float
    accuracy: float
    num_examples: int
    y_true: np.ndarray
    y_pred: np.ndarray


def select_device(preferred: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if preferred == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preferred)


def configure_threads(num_cpus: float | None = None) -> int:
    """Match torch's intra-op threads to the CPUs this process was given; returns the count."""
    if num_cpus is None or num_cpus <= 0:
        available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        num_cpus = float(available or 1)
    threads = max(1, int(num_cpus))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def make_optimizer(model: nn.Module, *, name: str, learning_rate: float, weight_decay: float,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=momentum,
                               weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}: expected adamw or sgd")


def balanced_class_weights(labels: torch.Tensor) -> torch.Tensor:
    """Inverse-frequency weights ``n / (C * count_c)`` (0 for absent classes), for a weighted loss."""
    counts = torch.bincount(labels, minlength=NUM_CLASSES).to(torch.float32)
    present = counts > 0
    weights = torch.zeros(NUM_CLASSES)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def index_loader(num_samples: int, *, batch_size: int, seed: int) -> torch.utils.data.DataLoader:
    """Shuffled batches of sample indices; Opacus turns this into a Poisson loader under DP."""
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        _IndexDataset(num_samples), batch_size=batch_size, shuffle=True, generator=generator
    )


class _IndexDataset(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor]:
        return (torch.tensor(i, dtype=torch.long),)  # a 1-field sample, as Opacus's collate expects


def train(*, model: nn.Module, data: ClipSet, optimizer: torch.optim.Optimizer,
          loader: Iterable[torch.Tensor], epochs: int, device: torch.device,
          augment: Augment | None = None, class_weights: torch.Tensor | None = None,
          proximal_mu: float = 0.0, views: int = 1, ema: WeightEMA | None = None,
          physical_batch_size: int = 0, persons: PersonIndex | None = None, max_steps: int = 0,
          label_smoothing: float = 0.0) -> TrainStats:
    """Run ``epochs`` passes of ``loader`` (index batches) over ``data``; returns running stats.

    ``max_steps > 0`` (``local-steps``) replaces the epochs: exactly that many optimizer steps,
    passing over the loader again (a fresh shuffle, or fresh Poisson batches) as often as needed.

    ``proximal_mu > 0`` adds FedProx's term ``mu/2 * ||w - w_start||^2`` (non-private runs only).
    ``views = K > 1``: every sample is fed as K augmented views and its gradient is the mean over
    them (under DP before clipping: see :func:`fer_models.privacy.sgd_helpers.average_views`). ``ema`` is
    updated after every optimizer step. ``physical_batch_size > 0`` (DP only) splits each logical
    Poisson batch into physical batches of at most that size with Opacus's BatchMemoryManager.
    ``persons`` (privacy-unit = person): the loader yields person indices; every sample of a drawn
    person enters the step and a person's per-sample gradients are averaged before clipping.
    An empty Poisson batch is a noise-only DP step (zero per-sample gradients, then the noise).
    ``label_smoothing`` is that of ``F.cross_entropy`` (each sample's own loss: DP accounting is unchanged).
    """
    model.train()
    weights = class_weights.to(device) if class_weights is not None else None
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else None
    if max_steps < 0:
        raise ValueError(f"max_steps must be >= 0 (got {max_steps})")
    total_loss, correct, seen, steps, logical = 0.0, 0, 0, 0, 0
    start = time.perf_counter()
    epoch = 0
    while (logical < max_steps) if max_steps else (epoch < epochs):
        steps_before = steps
        for (idx,) in _physical(loader, optimizer, physical_batch_size):
            if max_steps and logical >= max_steps:
                break
            idx = idx.reshape(-1)
            optimizer.zero_grad(set_to_none=True)
            if idx.numel() == 0:  # an empty Poisson batch still counts as a (noise-only) DP step
                empty_grad_samples(model)
                optimizer.step()
                steps += 1
                logical += 1
                continue
            idx, unit = persons.expand(idx) if persons is not None else (idx, torch.arange(idx.numel()))
            rows, unit = (idx.repeat_interleave(views), unit.repeat_interleave(views)) if views > 1 else (idx, unit)
            x, y = data.batch(rows, augment=augment)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = model(x)
            per_sample = F.cross_entropy(logits, y, reduction="none", label_smoothing=label_smoothing)
            if weights is not None:
                per_sample = per_sample * weights[y]
            loss = per_sample.mean()
            if anchor is not None:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))
                loss = loss + 0.5 * proximal_mu * prox
            loss.backward()
            if views > 1 or persons is not None:
                average_rows(model, group=unit)
            optimizer.step()
            if not getattr(optimizer, "_is_last_step_skipped", False):  # a logical step (DP: physical batches)
                logical += 1
                if ema is not None:
                    ema.update(model)
            steps += 1
            n = int(y.shape[0])
            seen += n // views
            total_loss += float(per_sample.detach().sum()) / views
            correct += int((logits.detach().argmax(1) == y).sum()) // views
        epoch += 1
        logger.debug("pass %d: %d steps, running loss %.4f", epoch, steps, total_loss / max(seen, 1))
        if steps == steps_before:
            break  # an empty loader: no pass can make progress
    seconds = time.perf_counter() - start
    return TrainStats(loss=total_loss / max(seen, 1), accuracy=correct / max(seen, 1),
                      num_examples=len(data), samples_seen=seen, steps=steps, seconds=seconds)


def _physical(loader: Iterable, optimizer: torch.optim.Optimizer, physical_batch_size: int) -> Iterable:
    """The loader itself, or (DP with a physical batch cap) Opacus's memory-managed version of it."""
    if physical_batch_size <= 0 or not hasattr(optimizer, "signal_skip_step"):
        return loader
    from opacus.utils.batch_memory_manager import wrap_data_loader

    return wrap_data_loader(data_loader=loader, max_batch_size=physical_batch_size, optimizer=optimizer)


@torch.no_grad()
def predict_logits(*, model: nn.Module, data: ClipSet, batch_size: int, device: torch.device) -> torch.Tensor:
    """Logits ``(S, classes)`` of ``model`` for every sample of ``data`` (eval mode, no augmentation), on CPU."""
    model.eval()
    out = [model(data.batch(torch.arange(start, min(start + batch_size, len(data))))[0].to(device)).cpu()
           for start in range(0, len(data), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, NUM_CLASSES)


def evaluate(*, model: nn.Module, data: ClipSet, batch_size: int, device: torch.device) -> EvalResult:
    """Loss, accuracy and predictions of ``model`` on every sample of ``data`` (no augmentation)."""
    logits = predict_logits(model=model, data=data, batch_size=batch_size, device=device)
    y_true = data.labels.numpy()
    y_pred = logits.argmax(1).numpy() if len(data) else np.zeros(0, dtype=np.int64)
    n = len(data)
    total_loss = float(F.cross_entropy(logits, data.labels, reduction="sum")) if n else 0.0
    return EvalResult(loss=total_loss / max(n, 1), accuracy=float((y_pred == y_true).mean()) if n else 0.0,
                      num_examples=n, y_true=y_true, y_pred=y_pred)
