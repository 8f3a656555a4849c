"""What a dp=sample local round is allowed to do, decided from public counts before its first gradient.

:func:`plan_private_round` fixes the round's Poisson sampling rate, step count and noise multiplier
from *public* numbers (the sampling runs over ``slots`` public slots, of which the first ``units``
hold a person or a sample: see client/private_round.py for where the counts come from), and
:func:`check_run_budget` refuses the round when composing it onto the history would take epsilon
over the run's ``epsilon-budget``. Both are pure: no file, no Flower. The node's own limits
(minimum noise, epsilon cap over every lineage) and the ledger files stay with the client, which
builds the plan; :func:`fer_models.training.local_round.local_round` checks the plan's budget again
before it builds the model, so a plan over budget never trains.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from fer_models.config import RunConfig
from fer_models.config.recipe import training_hyperparams
from fer_models.data.person_index import PersonIndex
from fer_models.privacy.dp_sgd import PrivacyLedger, noise_for_target, sample_rate_for, steps_per_epoch
from fer_models.training import engine

logger = logging.getLogger(__name__)

__all__ = ["BudgetRefusal", "PrivateRoundPlan", "check_run_budget", "noise_multiplier", "plan_private_round",
           "unit_loader"]


class BudgetRefusal(RuntimeError):
    """This client would exceed its epsilon budget (the run's, or its node's cap or minimum noise) by training."""


@dataclass(frozen=True)
class PrivateRoundPlan:
    """A dp=sample round's settings, all from public counts, and the history it composes onto."""

    ledger: PrivacyLedger  # the lineage's history before this round
    noise: float
    sample_rate: float
    batch_size: int  # the logical batch the rate was set from
    local_steps: int  # 0: whole local epochs
    steps: int  # DP-SGD steps this round composes (local_steps, or epochs x steps per epoch)
    persons: PersonIndex | None
    unit: str  # "person" or "image"
    slots: int  # public count the Poisson sampling runs over
    units: int  # units that hold data (persons or samples)

    def projected(self) -> PrivacyLedger:
        """The history after this round."""
        return self.ledger.with_steps(noise_multiplier=self.noise, sample_rate=self.sample_rate, steps=self.steps)


def noise_multiplier(cfg: RunConfig, stored: float | None, *, sample_rate: float, steps_per_round: int,
                     unit: str) -> float:
    """Fixed noise for the lineage; in target-epsilon mode computed once for all planned steps (from public q)."""
    if stored is not None:
        return stored
    if cfg.target_epsilon <= 0:
        return cfg.noise_multiplier
    planned = steps_per_round * cfg.num_server_rounds
    noise = noise_for_target(target_epsilon=cfg.target_epsilon, delta=cfg.target_delta,
                             sample_rate=sample_rate, steps=planned, accountant=cfg.accountant)
    logger.info("noise multiplier %.4f spends this client's %s-level epsilon %.3f (delta=%g) over %d planned steps "
                "(q=%.4f)", noise, unit, cfg.target_epsilon, cfg.target_delta, planned, sample_rate)
    return noise


def plan_private_round(*, cfg: RunConfig, ledger: PrivacyLedger, num_samples: int, slots: int, units: int,
                       persons: PersonIndex | None = None, unit: str = "image",
                       stored_noise: float | None = None) -> PrivateRoundPlan:
    """The round's rate, steps and noise for a client of ``num_samples`` training samples whose Poisson sampling
    runs over ``slots`` public slots (``units`` of them hold data); checks nothing against a budget."""
    if cfg.dp != "sample":
        raise ValueError(f"a private round plan is for dp=sample; the run has dp={cfg.dp}")
    if slots <= 0 or units <= 0:
        raise ValueError(f"a private round needs data: slots={slots}, units={units} (both must be positive)")
    batch_size = training_hyperparams(cfg, num_samples=num_samples).batch_size
    q = sample_rate_for(batch_size=batch_size, num_samples=slots)
    local_steps = cfg.local_steps_for(num_samples=slots, batch_size=batch_size)  # ~ fraction / q
    steps = local_steps or cfg.local_epochs * steps_per_epoch(q)  # what the ledger composes
    noise = noise_multiplier(cfg, stored_noise, sample_rate=q, steps_per_round=steps, unit=unit)
    return PrivateRoundPlan(ledger=ledger, noise=noise, sample_rate=q, batch_size=batch_size, local_steps=local_steps,
                            steps=steps, persons=persons, unit=unit, slots=slots, units=units)


def check_run_budget(plan: PrivateRoundPlan, *, cfg: RunConfig, server_round: int) -> PrivacyLedger:
    """The projected history after the round; raises BudgetRefusal when its epsilon exceeds the run's budget."""
    projected = plan.projected()
    eps_after = projected.epsilon(delta=cfg.target_delta)
    if eps_after > cfg.budget + 1e-9:
        raise BudgetRefusal(
            f"round {server_round}: training would raise this client's {plan.unit}-level epsilon from "
            f"{plan.ledger.epsilon(delta=cfg.target_delta):.3f} to {eps_after:.3f}, over the budget "
            f"{cfg.budget:.3f} (delta={cfg.target_delta}); this client stops training")
    return projected


class _KeepBelow:
    """Collate of index batches over public slots: slot i holds unit i when i < units, else nobody."""

    def __init__(self, units: int) -> None:
        self.units = units

    def __call__(self, batch: list[tuple[torch.Tensor]]) -> tuple[torch.Tensor]:
        idx = torch.stack([b[0] for b in batch]).reshape(-1)
        return (idx[idx < self.units],)


def unit_loader(*, slots: int, units: int, batch_size: int, seed: int) -> torch.utils.data.DataLoader:
    """Index batches over ``slots`` public slots of which the first ``units`` hold a unit (Opacus makes it a Poisson
    loader of rate 1 / len(loader) over the slots, with expected batch ``slots / len(loader)``)."""
    if slots == units:
        return engine.index_loader(units, batch_size=batch_size, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(slots)), batch_size=batch_size,
                                       shuffle=True, generator=generator, collate_fn=_KeepBelow(units))
