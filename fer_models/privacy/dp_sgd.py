"""Sample-level differential privacy with Opacus, with an accountant history that outlives rounds.

Flower's Opacus example builds a fresh PrivacyEngine every round, so its epsilon covers one
round. Here the accountant's history ``[(noise_multiplier, sample_rate, steps), ...]`` is a
value the caller keeps (a client keeps it in its Flower state) and hands back every round:
:func:`make_private` restores it into the new engine, so epsilon composes over every step the
client ever took. The Gaussian noise and the Poisson sampling come from a cryptographic source
(:mod:`fer_models.privacy.secure_random`, 256-bit keys from ``os.urandom``), never from a torch generator:
Opacus' loader and noise step are kept, with their coins replaced. Plain PyTorch + Opacus: no Flower here.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Iterator

import torch
from opacus import PrivacyEngine
from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.data_loader import DPDataLoader
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch import nn

import fer_models.models.quiet_opacus  # noqa: F401  (Opacus' root log handler off)
from fer_models.models import check_private_compatible
from fer_models.privacy import grad_samplers  # noqa: F401  registers fedfer's exact, faster Conv3d grad sampler with Opacus
from fer_models.privacy.secure_random import SecureRandom

logger = logging.getLogger(__name__)

# Known, benign warnings Opacus and PyTorch print on every private round.
warnings.filterwarnings("ignore", message="Secure RNG turned off")
warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")
warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")

HistoryEntry = tuple[float, float, int]  # (noise_multiplier, sample_rate, steps)

def secret_source() -> SecureRandom:
    """A cryptographic source for randomness that protects privacy (DP noise, Poisson sampling).

    Keyed with 256 fresh bits of ``os.urandom`` on every call: nothing the server knows (the run
    seed, a partition id, a round number, the code) determines it, and no seed space small enough
    to scan stands behind it (torch's CPU generator keeps 32 bits of any seed: see
    :mod:`fer_models.privacy.secure_random`). Tests replace this function to build the predictable negative
    control; the product never does.
    """
    return SecureRandom()


class SecurePoissonSampler(UniformWithReplacementSampler):
    """Opacus' Poisson batch sampler (each unit in each batch with probability ``sample_rate``, ``steps``
    batches per pass), its coins drawn from a :class:`SecureRandom` instead of a torch generator."""

    def __init__(self, *, num_samples: int, sample_rate: float, source: SecureRandom) -> None:
        super().__init__(num_samples=num_samples, sample_rate=sample_rate, generator=None)
        self.source = source

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            yield self.source.bernoulli(self.num_samples, p=self.sample_rate).nonzero().reshape(-1).tolist()


def secure_poisson_loader(loader: torch.utils.data.DataLoader, *, source: SecureRandom) -> torch.utils.data.DataLoader:
    """Opacus' DP data loader for ``loader`` (rate ``1 / len(loader)``, empty batches shaped like full ones), with
    :class:`SecurePoissonSampler` as its batch sampler. Opacus' own loader only serves as the template: it is
    never iterated, so its (torch) generator never draws."""
    template = DPDataLoader.from_data_loader(loader, generator=None)
    sampler = SecurePoissonSampler(num_samples=len(template.dataset), sample_rate=template.sample_rate,  # type: ignore[arg-type]
                                   source=source)
    return torch.utils.data.DataLoader(template.dataset, batch_sampler=sampler, collate_fn=template.collate_fn,
                                       num_workers=template.num_workers, pin_memory=template.pin_memory)


#: Opacus optimizers whose ``add_noise`` :func:`use_secure_noise` replaces (both add N(0, (sigma*C)^2) to each
#: parameter's summed clipped gradient; the fast-gradient-clipping one may use an adjusted multiplier).
_NOISE_OPTIMIZERS = (DPOptimizer, DPOptimizerFastGradientClipping)


def use_secure_noise(optimizer: DPOptimizer, *, source: SecureRandom) -> None:
    """Make ``optimizer`` draw its Gaussian noise from ``source`` (on each parameter's device), replacing the torch
    generator Opacus would use. An optimizer class whose noise step fedfer has not checked is refused."""
    if type(optimizer) not in _NOISE_OPTIMIZERS:
        raise TypeError(f"{type(optimizer).__name__}: fedfer draws DP noise from its own cryptographic source only "
                        f"for {', '.join(c.__name__ for c in _NOISE_OPTIMIZERS)}; use grad-sample-mode hooks, ew or ghost")

    def add_noise() -> None:
        multiplier = getattr(optimizer, "_adjusted_noise_multiplier", optimizer.noise_multiplier)
        for p in optimizer.params:
            _check_processed_flag(p.summed_grad)
            summed = p.summed_grad
            noise = source.normal(summed.shape, std=multiplier * optimizer.max_grad_norm, device=summed.device,
                                  dtype=summed.dtype)
            p.grad = (summed + noise).view_as(p)
            _mark_as_processed(p.summed_grad)

    optimizer.generator = None  # nothing may fall back to a torch generator
    optimizer.add_noise = add_noise  # type: ignore[method-assign]


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
    Gaussian noise and the Poisson sampling draw from :func:`secret_source` (one fresh 256-bit key
    each); only ``loader``'s dataset and collate function are used, never its generator.
    """
    check_private_compatible(model)
    if noise_multiplier <= 0 or not math.isfinite(noise_multiplier):
        raise ValueError(f"noise_multiplier must be a positive number, got {noise_multiplier}")
    engine = PrivacyEngine(accountant=ledger.accountant)
    engine.accountant.history = [tuple(h) for h in ledger.history]
    poisson = secure_poisson_loader(loader, source=secret_source())
    # poisson_sampling=False: the loader already is a Poisson loader (rate 1 / len(poisson), as Opacus' own)
    dp_model, dp_opt, dp_loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=poisson, noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm, poisson_sampling=False, grad_sample_mode=grad_sample_mode)
    dp_model.forbid_grad_accumulation()  # what Opacus does for its own Poisson loader
    use_secure_noise(dp_opt, source=secret_source())
    return PrivateParts(dp_model, dp_opt, dp_loader, engine, noise_multiplier, 1.0 / len(loader))


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict without Opacus's ``_module.`` prefix, as the server expects."""
    inner = getattr(model, "_module", model)
    return {k: v.detach().cpu() for k, v in inner.state_dict().items()}
