"""Sample-level differential privacy with Opacus, with an accountant history that outlives rounds.

Flower's Opacus example builds a fresh PrivacyEngine every round, so its epsilon covers one
round. Here the accountant's history ``[(noise_multiplier, sample_rate, steps), ...]`` is a
value the caller keeps (a client keeps it in its Flower state) and hands back every round:
:func:`make_private` restores it into the new engine, so epsilon composes over every step the
client ever took. Plain PyTorch + Opacus: no Flower here.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass, field

import torch
from opacus import PrivacyEngine
from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.data_loader import switch_generator
from torch import nn

from fer_models import grad_samplers  # noqa: F401  registers fedfer's exact, faster Conv3d grad sampler with Opacus
from fer_models.models import check_private_compatible

logger = logging.getLogger(__name__)

# Known, benign warnings Opacus and PyTorch print on every private round.
warnings.filterwarnings("ignore", message="Secure RNG turned off")
warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")
warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")

HistoryEntry = tuple[float, float, int]  # (noise_multiplier, sample_rate, steps)

#: Bits of fresh OS entropy behind every generator of privacy randomness.
SECRET_SEED_BITS = 64


def secret_generator() -> torch.Generator:
    """A generator for randomness that protects privacy (DP noise, Poisson sampling).

    Seeded from fresh OS entropy (``os.urandom``) on every call: nothing the server knows (the run
    seed, a partition id, a round number) determines it, so nobody can regenerate the noise or
    replay the sampling. Opacus's ``secure_mode`` would draw from a CSPRNG for every sample, but it
    needs ``torchcsprng``, which is not built for current torch; a 64-bit secret seed per client
    round is the equivalent available here (README "Privacy guarantees" states the difference).
    Tests replace this function to build the predictable negative control; the product never does.
    """
    return torch.Generator().manual_seed(int.from_bytes(os.urandom(SECRET_SEED_BITS // 8), "little"))


class PrivacyBudgetExceeded(RuntimeError):
    """Training the next round would spend more epsilon than the configured budget."""


@dataclass(frozen=True)
class PrivacyLedger:
    """An accountant's composition history; epsilon is always computed over all of it."""

    accountant: str = "rdp"
    history: tuple[HistoryEntry, ...] = field(default_factory=tuple)

    def with_steps(self, *, noise_multiplier: float, sample_rate: float, steps: int) -> "PrivacyLedger":
        """The ledger after ``steps`` more DP-SGD steps (merging with the last entry when equal)."""
        if steps <= 0:
            return self
        hist = list(self.history)
        if hist and hist[-1][0] == noise_multiplier and hist[-1][1] == sample_rate:
            hist[-1] = (noise_multiplier, sample_rate, hist[-1][2] + steps)
        else:
            hist.append((float(noise_multiplier), float(sample_rate), int(steps)))
        return PrivacyLedger(self.accountant, tuple(hist))

    @property
    def total_steps(self) -> int:
        return sum(s for _, _, s in self.history)

    def epsilon(self, *, delta: float) -> float:
        """Epsilon spent over the whole history (0 when nothing was spent)."""
        if not self.history:
            return 0.0
        acc = create_accountant(self.accountant)
        acc.history = [tuple(h) for h in self.history]
        return float(acc.get_epsilon(delta=delta))


def noise_for_target(*, target_epsilon: float, delta: float, sample_rate: float, steps: int,
                     accountant: str = "rdp") -> float:
    """Noise multiplier that spends ``target_epsilon`` over ``steps`` steps at ``sample_rate``."""
    if target_epsilon <= 0 or steps <= 0:
        raise ValueError("target_epsilon and steps must be positive")
    return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                      sample_rate=sample_rate, steps=steps, accountant=accountant))


def sample_rate_for(*, batch_size: int, num_samples: int) -> float:
    """Poisson sampling rate Opacus uses: ``1 / ceil(num_samples / batch_size)`` (= 1 / batches per epoch)."""
    if num_samples <= 0:
        raise ValueError("a client with no samples cannot train under DP")
    return 1.0 / math.ceil(num_samples / batch_size)


def steps_per_epoch(sample_rate: float) -> int:
    """Steps Opacus's Poisson loader takes per epoch (``int(1 / q)``)."""
    return max(1, int(1 / sample_rate))


@dataclass
class PrivateParts:
    """What :func:`make_private` returns: use these in place of the plain objects."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loader: torch.utils.data.DataLoader
    engine: PrivacyEngine
    noise_multiplier: float
    sample_rate: float

    def ledger(self) -> PrivacyLedger:
        """The composed history: everything restored plus every step taken since."""
        return PrivacyLedger(self.engine.accountant.mechanism(),
                             tuple(tuple(h) for h in self.engine.accountant.history))


def make_private(*, model: nn.Module, optimizer: torch.optim.Optimizer,
                 loader: torch.utils.data.DataLoader, noise_multiplier: float, max_grad_norm: float,
                 ledger: PrivacyLedger, grad_sample_mode: str = "hooks") -> PrivateParts:
    """Wrap model/optimizer/loader with Opacus, restoring ``ledger`` into the new accountant.

    The model is checked first: a layer Opacus cannot make private is refused, naming it. The
    Gaussian noise and the Poisson sampling draw from :func:`secret_generator` (one fresh secret
    generator each): whatever generator ``loader`` came with is replaced.
    """
    check_private_compatible(model)
    if noise_multiplier <= 0 or not math.isfinite(noise_multiplier):
        raise ValueError(f"noise_multiplier must be a positive number, got {noise_multiplier}")
    engine = PrivacyEngine(accountant=ledger.accountant)
    engine.accountant.history = [tuple(h) for h in ledger.history]
    dp_model, dp_opt, dp_loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=switch_generator(data_loader=loader, generator=secret_generator()),
        noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm, poisson_sampling=True,
        grad_sample_mode=grad_sample_mode, noise_generator=secret_generator(),
    )
    return PrivateParts(dp_model, dp_opt, dp_loader, engine, noise_multiplier, 1.0 / len(loader))


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict without Opacus's ``_module.`` prefix, as the server expects."""
    inner = getattr(model, "_module", model)
    return {k: v.detach().cpu() for k, v in inner.state_dict().items()}
