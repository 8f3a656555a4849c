"""Strategy choice: one of Flower's message-API strategies, wrapped for client-level DP if asked."""

from __future__ import annotations

import logging
import math

from flwr.serverapp.strategy import (DifferentialPrivacyClientSideAdaptiveClipping,
                                     DifferentialPrivacyClientSideFixedClipping,
                                     DifferentialPrivacyServerSideAdaptiveClipping,
                                     DifferentialPrivacyServerSideFixedClipping, FedAdam, FedAvg,
                                     FedMedian, FedProx, FedTrimmedAvg, Strategy)

from fer_models.config import ConfigError, RunConfig

logger = logging.getLogger(__name__)


def clients_per_round(cfg: RunConfig) -> int:
    """How many clients FedAvg samples each round (Flower: int(N * fraction), at least the minimum)."""
    return max(int(cfg.num_clients * cfg.fraction_train), cfg.min_train_clients)


def make_strategy(cfg: RunConfig) -> Strategy:
    """The configured strategy; with dp=client wrapped in Flower's DP-FedAvg wrapper."""
    common = dict(fraction_train=cfg.fraction_train, fraction_evaluate=cfg.fraction_evaluate,
                  min_train_nodes=cfg.min_train_clients,
                  min_evaluate_nodes=1 if cfg.fraction_evaluate > 0 else 0,
                  min_available_nodes=cfg.min_available_clients or cfg.min_train_clients)
    base: Strategy
    if cfg.strategy == "fedavg":
        base = FedAvg(**common)
    elif cfg.strategy == "fedprox":
        base = FedProx(**common, proximal_mu=cfg.proximal_mu)
    elif cfg.strategy == "fedadam":
        base = FedAdam(**common, eta=cfg.server_learning_rate)
    elif cfg.strategy == "fedmedian":
        base = FedMedian(**common)
    elif cfg.strategy == "fedtrimmedavg":
        base = FedTrimmedAvg(**common)
    else:  # RunConfig validates choices; this guards a new choice without a branch
        raise ValueError(f"strategy {cfg.strategy!r} has no implementation")
    if cfg.dp != "client":
        return base
    sampled = clients_per_round(cfg)
    if cfg.adaptive_clipping and cfg.noise_multiplier >= sampled / 10:
        # Flower's adaptive clipping spends part of the noise on the clipped-count estimate
        # (stddev = clients/20), which only works while noise-multiplier < clients per round / 10.
        raise ConfigError(f"adaptive-clipping with noise-multiplier={cfg.noise_multiplier} needs more than "
                          f"{int(cfg.noise_multiplier * 10)} clients per round (has {sampled}); sample more "
                          f"clients, lower noise-multiplier, or set adaptive-clipping=false")
    if cfg.client_clipping == "server":
        if cfg.adaptive_clipping:
            return DifferentialPrivacyServerSideAdaptiveClipping(
                base, cfg.noise_multiplier, sampled, initial_clipping_norm=cfg.max_grad_norm)
        return DifferentialPrivacyServerSideFixedClipping(base, cfg.noise_multiplier, cfg.max_grad_norm, sampled)
    if cfg.adaptive_clipping:
        return DifferentialPrivacyClientSideAdaptiveClipping(
            base, cfg.noise_multiplier, sampled, initial_clipping_norm=cfg.max_grad_norm)
    return DifferentialPrivacyClientSideFixedClipping(base, cfg.noise_multiplier, cfg.max_grad_norm, sampled)


def client_level_epsilon(*, noise_multiplier: float, sample_rate: float, rounds: int, delta: float) -> float:
    """DP-FedAvg epsilon after ``rounds`` rounds at client sampling rate q (RDP accountant)."""
    if rounds <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(noise_multiplier, sample_rate, rounds)]
    return float(acc.get_epsilon(delta=delta))
