"""What a dp=sample round needs from the node before its first gradient, and what it records after its last.

Before training (every refusal is raised here, so nothing is trained when a round is refused): the
lineage ledger and the site ledger are checked (fail closed), the core's plan sets the sampling rate,
step count and noise multiplier from *public* counts (fer_models/training/private_plan.py), and the
round is checked against the node's minimum noise, the run's epsilon budget and the node's epsilon
cap (over every lineage on this data), and reserved in the site ledger. After training, :meth:`PrivateRound.record` writes both
ledgers before the reply leaves.

Public counts (privacy-unit=person): the number of persons in the data is private. The Poisson
rate is therefore ``1 / ceil(N / batch)`` with ``N`` the node's ``public-person-count``, else the
number of training samples (public: it is the reply's ``num-examples``; never below the number of
persons). Persons are drawn by Poisson sampling over ``N`` public slots at that rate; a slot past
the data's persons holds nobody (:func:`fer_models.training.private_plan.unit_loader`), so the
sampling rate, the step count, the noise multiplier (target-epsilon mode), Opacus' expected batch size and epsilon all come from
public numbers. With ``public-person-count`` below the real count the persons past it are never
drawn (the node's log warns).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from flwr.app import Context

from client.ledger import LedgerFile, check_lineage
from client.node_privacy import NodePrivacy
from client.site_ledger import SiteLedger
from fer_models.config import RunConfig
from fer_models.data.person_index import PersonIndex, person_index
from fer_models.federation.sites import EPSILON_CAP, MIN_NOISE_MULTIPLIER, PUBLIC_PERSON_COUNT, LocalData
from fer_models.privacy.dp_sgd import PrivacyLedger
from fer_models.training.private_plan import (
    BudgetRefusal,
    PrivateRoundPlan,
    check_run_budget,
    plan_private_round,
    unit_loader,
)

logger = logging.getLogger(__name__)

__all__ = ["BudgetRefusal", "PrivateRound", "prepare_private_round", "privacy_units", "public_unit_count",
           "unit_loader"]


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


@dataclass(frozen=True)
class PrivateRound:
    """A dp=sample round that passed every check: its plan (for the core's local round), and the ledgers to write
    after it."""

    plan: PrivateRoundPlan
    where: LedgerFile
    site: SiteLedger
    entry: str

    def record(self, context: Context, ledger: PrivacyLedger, *, delta: float) -> None:
        """Write the lineage ledger and the site ledger (call before replying)."""
        self.where.save(context, ledger, noise_multiplier=self.plan.noise, unit=self.plan.unit, delta=delta)
        with self.site.locked():
            self.site.write(context, entry=self.entry, ledger=ledger)


def prepare_private_round(*, cfg: RunConfig, context: Context, local: LocalData, privacy: NodePrivacy, lineage: str,
                          server_round: int) -> PrivateRound:
    """Check and reserve a dp=sample round before training; raises BudgetRefusal, LedgerMissing or LedgerMismatch."""
    check_lineage(context, lineage)
    site = SiteLedger.locate(context, local)
    site.check_state(context, privacy)
    entry = f"{lineage}--{local.key}"
    where = LedgerFile.locate(context, lineage=lineage, client=local.key)
    ledger, stored_noise = where.load(context, accountant=cfg.accountant, recorded_elsewhere=entry in site.entries())
    persons, unit = privacy_units(cfg, local)
    plan = plan_private_round(cfg=cfg, ledger=ledger, num_samples=len(local.train), persons=persons, unit=unit,
                              units=len(persons) if persons is not None else len(local.train),
                              slots=public_unit_count(privacy, persons=persons, num_samples=len(local.train)),
                              stored_noise=stored_noise)
    if plan.noise < privacy.min_noise_multiplier:
        raise BudgetRefusal(f"round {server_round}: noise multiplier {plan.noise:.4f} is below this node's "
                            f"{MIN_NOISE_MULTIPLIER}={privacy.min_noise_multiplier:g}; this client does not train")
    projected = check_run_budget(plan, cfg=cfg, server_round=server_round)
    cap_delta = privacy.delta_for(cfg.target_delta)
    before, after = site.reserve(context, entry=entry, projected=projected, cap=privacy.epsilon_cap, delta=cap_delta)
    if privacy.epsilon_cap is not None and after > privacy.epsilon_cap + 1e-9:
        raise BudgetRefusal(
            f"round {server_round}: training would raise this data's {unit}-level epsilon over every run and lineage "
            f"from {before:.3f} to {after:.3f}, over this node's {EPSILON_CAP}={privacy.epsilon_cap:g} "
            f"(delta={cap_delta:g}); this client does not train, whatever the run's epsilon-budget says")
    return PrivateRound(plan=plan, where=where, site=site, entry=entry)
