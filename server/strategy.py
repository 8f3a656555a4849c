"""Strategy choice: one of Flower's message-API strategies, wrapped for client-level DP if asked."""

from __future__ import annotations

import logging

from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedMedian, FedProx, FedTrimmedAvg, FedYogi, Strategy
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from fer_models.config import RunConfig
from fer_models.federation.wire import GLOBAL_LOSS, PARTITION_ID, UNIFORM_WEIGHT
from server.client_dp import ClientClippedClientDP, ServerClippedClientDP, client_noise_multiplier
from server.qfedavg import SizeWeightedQFedAvg

logger = logging.getLogger(__name__)


def clients_per_round(cfg: RunConfig) -> int:
    """How many clients FedAvg samples each round (RunConfig.clients_per_round)."""
    return cfg.clients_per_round


#: Reply metrics that identify a client: a mean of them is meaningless, so the logged aggregate leaves them out.
IDENTIFIERS = (PARTITION_ID,)


def aggregate_train_metrics(records: list[RecordDict], weighting_metric_name: str) -> MetricRecord:
    """Flower's weighted mean of the clients' train metrics, without the identifiers (``partition-id``)."""
    out = aggregate_metricrecords(records, weighting_metric_name)
    for key in IDENTIFIERS:
        if key in out:
            del out[key]
    return out


def make_strategy(cfg: RunConfig) -> Strategy:
    """The configured strategy; with dp=client fedfer's calibrated DP-FedAvg (server/client_dp.py).

    Settings a strategy cannot serve under DP are refused by RunConfig.check (fer_models/config/dp_checks.py).
    """
    common = dict(fraction_train=cfg.fraction_train, fraction_evaluate=cfg.fraction_evaluate,
                  min_train_nodes=cfg.min_train_clients,
                  min_evaluate_nodes=1 if cfg.fraction_evaluate > 0 else 0,
                  min_available_nodes=cfg.min_available_clients or cfg.min_train_clients,
                  train_metrics_aggr_fn=aggregate_train_metrics)
    if cfg.dp == "client":  # an unweighted mean: every client's update has the same sensitivity
        return client_dp_strategy(cfg, FedAvg(**common, weighted_by_key=UNIFORM_WEIGHT))
    base: Strategy
    if cfg.strategy == "fedavg":
        base = FedAvg(**common)
    elif cfg.strategy == "fedprox":
        base = FedProx(**common, proximal_mu=cfg.proximal_mu)
    elif cfg.strategy == "fedavgm":
        base = FedAvgM(**common, server_learning_rate=cfg.server_learning_rate, server_momentum=cfg.server_momentum)
    elif cfg.strategy == "fedadam":
        base = FedAdam(**common, eta=cfg.server_learning_rate)
    elif cfg.strategy == "fedyogi":
        base = FedYogi(**common, eta=cfg.server_learning_rate)
    elif cfg.strategy == "qfedavg":  # L = 1 / client_learning_rate in Flower's QFedAvg; weighted by site size
        lipschitz = cfg.qfedavg_lipschitz or 1.0 / cfg.learning_rate
        base = SizeWeightedQFedAvg(**common, client_learning_rate=1.0 / lipschitz, q=cfg.qfedavg_q,
                                   train_loss_key=GLOBAL_LOSS)
    elif cfg.strategy == "fedmedian":
        base = FedMedian(**common)
    elif cfg.strategy == "fedtrimmedavg":
        base = FedTrimmedAvg(**common)
    else:  # RunConfig validates choices; this guards a new choice without a branch
        raise ValueError(f"strategy {cfg.strategy!r} has no implementation")
    return base


def client_dp_strategy(cfg: RunConfig, base: FedAvg) -> ServerClippedClientDP | ClientClippedClientDP:
    """DP-FedAvg around ``base`` with the noise for the configured multiplier or target epsilon."""
    noise = client_noise_multiplier(noise_multiplier=cfg.noise_multiplier, target_epsilon=cfg.target_epsilon,
                                    rounds=cfg.num_server_rounds, delta=cfg.target_delta)
    kind = ServerClippedClientDP if cfg.client_clipping == "server" else ClientClippedClientDP
    strategy = kind(base, noise, cfg.max_grad_norm, clients_per_round(cfg))
    strategy._setup(budget=cfg.budget, delta=cfg.target_delta)
    return strategy
