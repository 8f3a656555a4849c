"""What a dp=sample round needs before its first gradient, and what it records after its last.

Before training (every refusal is raised here, so nothing is trained when a round is refused): the
lineage ledger and the site ledger are checked (fail closed), the sampling rate and step count are
set from *public* counts, the noise multiplier is fixed, and the round is checked against the run's
epsilon budget, the node's minimum noise and the node's epsilon cap (over every lineage on this
data), and reserved in the site ledger. After training, :meth:`PrivateRound.record` writes both
ledgers before the reply leaves.

Public counts (privacy-unit=person): the number of persons in the data is private. The Poisson
rate is therefore ``1 / ceil(N / batch)`` with ``N`` the node's ``public-person-count``, else the
number of training samples (public: it is the reply's ``num-examples``; never below the number of
persons). Persons are drawn by Poisson sampling over ``N`` public slots at that rate; a slot past
the data's persons holds nobody (:func:`unit_loader`), so the sampling rate, the step count, the
noise multiplier (target-epsilon mode), Opacus' expected batch size and epsilon all come from
public numbers. With ``public-person-count`` below the real count the persons past it are never
drawn (the node's log warns).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import Context

from client.ledger import LedgerFile, check_lineage
from client.node_privacy import NodePrivacy
from client.site_ledger import SiteLedger
from fer_models.training import engine
from fer_models.config import RunConfig
from fer_models.data.person_index import PersonIndex, person_index
from fer_models.privacy.dp_sgd import PrivacyLedger, noise_for_target, sample_rate_for, steps_per_epoch
from fer_models.federation.sites import EPSILON_CAP, MIN_NOISE_MULTIPLIER, PUBLIC_PERSON_COUNT, LocalData

logger = logging.getLogger(__name__)


class BudgetRefusal(RuntimeError):
    """This client would exceed its epsilon budget (the run's, or its node's cap or minimum noise) by training."""


def privacy_units(cfg: RunConfig, local: LocalData) -> tuple[PersonIndex | None, str]:
    """(persons, unit name): persons under privacy-unit=person when the data has subject ids, else images."""
    if cfg.privacy_unit != "person":
        return None, "image"
    data = local.train
    subjects = local.store.meta.get("subject")
    mine = None if subjects is None else np.asarray(subjects)[data.frames[:, 0].numpy()]  # each sample's first frame
    if mine is None or not np.any(mine.astype(str) != ""):
        logger.warning("privacy-unit=person, but this client's data has no subject ids (FER2013 has none): "
                       "its epsilon protects one image, not one person")
        return None, "image"
    return person_index(mine), "person"


def public_unit_count(privacy: NodePrivacy, *, persons: PersonIndex | None, num_samples: int) -> int:
    """The public count the sampling rate is set from (see the module docstring)."""
    if persons is None:
        return num_samples  # images: their number is public (num-examples)
    declared = privacy.public_person_count
    if declared is None:
        return num_samples
    if declared < len(persons):
        logger.warning("%s=%d is below this data's %d persons: the persons past the first %d are never drawn",
                       PUBLIC_PERSON_COUNT, declared, len(persons), declared)
    return declared


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


@dataclass(frozen=True)
class PrivateRound:
    """A dp=sample round that passed every check: its settings, and the ledgers to write after it."""

    ledger: PrivacyLedger  # the lineage's history before this round
    noise: float
    sample_rate: float
    local_steps: int  # 0: whole local epochs
    persons: PersonIndex | None
    unit: str
    slots: int  # public count the Poisson sampling runs over
    units: int  # units that hold data (persons or samples)
    where: LedgerFile
    site: SiteLedger
    entry: str

    def record(self, context: Context, ledger: PrivacyLedger, *, delta: float) -> None:
        """Write the lineage ledger and the site ledger (call before replying)."""
        self.where.save(context, ledger, noise_multiplier=self.noise, unit=self.unit, delta=delta)
        with self.site.locked():
            self.site.write(context, entry=self.entry, ledger=ledger)


def prepare_private_round(*, cfg: RunConfig, context: Context, local: LocalData, privacy: NodePrivacy, lineage: str,
                   batch_size: int, server_round: int) -> PrivateRound:
    """Check and reserve a dp=sample round before training; raises BudgetRefusal, LedgerMissing or LedgerMismatch."""
    check_lineage(context, lineage)
    site = SiteLedger.locate(context, local)
    site.check_state(context, privacy)
    entry = f"{lineage}--{local.key}"
    where = LedgerFile.locate(context, lineage=lineage, client=local.key)
    ledger, stored_noise = where.load(context, accountant=cfg.accountant, recorded_elsewhere=entry in site.entries())
    persons, unit = privacy_units(cfg, local)
    units = len(persons) if persons is not None else len(local.train)
    slots = public_unit_count(privacy, persons=persons, num_samples=len(local.train))
    q = sample_rate_for(batch_size=batch_size, num_samples=slots)
    local_steps = cfg.local_steps_for(num_samples=slots, batch_size=batch_size)  # ~ fraction / q
    steps = local_steps or cfg.local_epochs * steps_per_epoch(q)  # what the ledger composes
    noise = noise_multiplier(cfg, stored_noise, sample_rate=q, steps_per_round=steps, unit=unit)
    if noise < privacy.min_noise_multiplier:
        raise BudgetRefusal(f"round {server_round}: noise multiplier {noise:.4f} is below this node's "
                            f"{MIN_NOISE_MULTIPLIER}={privacy.min_noise_multiplier:g}; this client does not train")
    projected = ledger.with_steps(noise_multiplier=noise, sample_rate=q, steps=steps)
    eps_after = projected.epsilon(delta=cfg.target_delta)
    if eps_after > cfg.budget + 1e-9:
        raise BudgetRefusal(
            f"round {server_round}: training would raise this client's {unit}-level epsilon from "
            f"{ledger.epsilon(delta=cfg.target_delta):.3f} to {eps_after:.3f}, over the budget "
            f"{cfg.budget:.3f} (delta={cfg.target_delta}); this client stops training")
    cap_delta = privacy.delta_for(cfg.target_delta)
    before, after = site.reserve(context, entry=entry, projected=projected, cap=privacy.epsilon_cap, delta=cap_delta)
    if privacy.epsilon_cap is not None and after > privacy.epsilon_cap + 1e-9:
        raise BudgetRefusal(
            f"round {server_round}: training would raise this data's {unit}-level epsilon over every run and lineage "
            f"from {before:.3f} to {after:.3f}, over this node's {EPSILON_CAP}={privacy.epsilon_cap:g} "
            f"(delta={cap_delta:g}); this client does not train, whatever the run's epsilon-budget says")
    return PrivateRound(ledger=ledger, noise=noise, sample_rate=q, local_steps=local_steps, persons=persons,
                        unit=unit, slots=slots, units=units, where=where, site=site, entry=entry)
