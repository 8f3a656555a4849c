"""Client-level DP (DP-FedAvg) whose reported epsilon matches the aggregate the server actually forms.

Flower's fixed-clipping wrappers add Gaussian noise of std ``sigma * C / m`` to the mean of ``m``
clipped updates. fedfer builds on them and closes what would break that calibration:

- the mean is unweighted (clients send a constant weight, :data:`fer_models.federation.wire.UNIFORM_WEIGHT`):
  a FedAvg weighted by self-reported example counts would change one client's sensitivity;
- a round with fewer successful replies than the ``m`` the noise was calibrated for (a dropout, an
  error) is not aggregated, so a mean over fewer clients never leaves with too little noise;
- Flower draws the ``m`` clients with a public seed, so no sampling amplification is claimed:
  every release is accounted as a Gaussian mechanism of multiplier ``sigma`` (q = 1, RDP);
- ``epsilon-budget`` (or ``target-epsilon``) is honoured: a release that would exceed it is not made.

The epsilon protects one *site* (all of a client's data), delta ``target-delta``, for the federation.
The server adds the noise, so it is trusted to: the epsilon holds against the other sites and whoever
receives the model, not against the server (:data:`fer_models.config.dp_trust.DP_CLIENT_TRUST`, logged when
the strategy is set up and written into report.md).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
)
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from fer_models.config.dp_trust import DP_CLIENT_TRUST

logger = logging.getLogger(__name__)

#: No amplification by client sampling is claimed: the draw is made from a public seed.
CLIENT_SAMPLE_RATE = 1.0


def client_level_epsilon(*, noise_multiplier: float, rounds: int, delta: float,
                         sample_rate: float = CLIENT_SAMPLE_RATE) -> float:
    """Epsilon of ``rounds`` Gaussian releases of multiplier ``noise_multiplier`` (RDP accountant)."""
    if rounds <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    acc = RDPAccountant()
    acc.history = [(noise_multiplier, sample_rate, rounds)]
    return float(acc.get_epsilon(delta=delta))


def client_noise_multiplier(*, noise_multiplier: float, target_epsilon: float, rounds: int, delta: float) -> float:
    """The configured multiplier, or the one that spends ``target_epsilon`` over ``rounds`` releases."""
    if target_epsilon <= 0:
        return noise_multiplier
    return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                      sample_rate=CLIENT_SAMPLE_RATE, steps=rounds, accountant="rdp"))


class _Calibrated:
    """Mixin over a Flower fixed-clipping wrapper: all-or-nothing rounds, releases counted, budget kept."""

    noise_multiplier: float
    num_sampled_clients: int

    def _setup(self, *, budget: float, delta: float) -> None:
        self.budget = budget
        self.delta = delta
        self.releases = 0
        self.skipped: list[dict[str, Any]] = []
        logger.info("dp=client (site-level epsilon, delta=%g): %s", delta, DP_CLIENT_TRUST)

    def epsilon(self, releases: int | None = None) -> float:
        return client_level_epsilon(noise_multiplier=self.noise_multiplier, delta=self.delta,
                                    rounds=self.releases if releases is None else releases)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        if self.epsilon(self.releases + 1) > self.budget + 1e-9:
            reason = (f"another release would raise the site-level epsilon from {self.epsilon():.3f} to "
                      f"{self.epsilon(self.releases + 1):.3f}, over the budget {self.budget:.3f} (delta={self.delta})")
            logger.warning("round %d not trained: %s", server_round, reason)
            self.skipped.append({"round": server_round, "reason": reason})
            return []
        return super().configure_train(server_round, arrays, config, grid)  # type: ignore[misc]

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        ok = sum(not r.has_error() for r in replies)
        if not replies:
            return None, None
        if ok != self.num_sampled_clients or ok != len(replies):
            reason = (f"{ok} of the {self.num_sampled_clients} clients the noise was calibrated for replied: the "
                      f"mean of fewer clipped updates would need more noise, so the round is not aggregated")
            logger.warning("round %d: %s", server_round, reason)
            self.skipped.append({"round": server_round, "reason": reason})
            return None, None
        arrays, metrics = super().aggregate_train(server_round, replies)  # type: ignore[misc]
        if arrays is not None:
            self.releases += 1
        return arrays, metrics


class ServerClippedClientDP(_Calibrated, DifferentialPrivacyServerSideFixedClipping):
    """Updates clipped by the server, noise on the unweighted mean."""


class ClientClippedClientDP(_Calibrated, DifferentialPrivacyClientSideFixedClipping):
    """Updates clipped by the clients (``fixedclipping_mod``), noise on the unweighted mean."""
