"""Aggregation as fedfer configures it: the strategy each setting maps to, and FedAvg's weighting
(by the public example count without DP; unweighted under client-level DP, see test_client_level_dp)."""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from fer_models.config import RunConfig
from server.strategy import make_strategy


def _reply(arrays: dict[str, np.ndarray], n: int) -> Message:
    content = RecordDict({"arrays": ArrayRecord({k: torch.from_numpy(v) for k, v in arrays.items()}),
                          "metrics": MetricRecord({"num-examples": n, "train-loss": 1.0})})
    return Message(content=content, dst_node_id=1, message_type="train")


def test_fedavg_weights_are_the_example_weighted_mean(flower_identity):
    a = {"w": np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32), "b": np.array([0.0], dtype=np.float32)}
    b = {"w": np.array([[5.0, 6.0], [7.0, 8.0]], dtype=np.float32), "b": np.array([4.0], dtype=np.float32)}
    strategy = make_strategy(RunConfig())
    assert isinstance(strategy, FedAvg)
    arrays, _ = strategy.aggregate_train(1, [_reply(a, 30), _reply(b, 10)])
    got = arrays.to_numpy_ndarrays()
    # by hand: (30*a + 10*b) / 40
    assert np.allclose(got[0], [[2.0, 3.0], [4.0, 5.0]])
    assert np.allclose(got[1], [1.0])


def test_each_strategy_setting_maps_to_its_flower_strategy_with_fedfers_parameters():
    from flwr.serverapp.strategy import FedAdam, FedMedian, FedProx, FedTrimmedAvg

    base = {"num-clients": 10, "fraction-train": 0.5, "min-train-clients": 3}
    prox = make_strategy(RunConfig.from_flat({**base, "strategy": "fedprox", "proximal-mu": 0.3}))
    assert isinstance(prox, FedProx) and prox.proximal_mu == 0.3
    adam = make_strategy(RunConfig.from_flat({**base, "strategy": "fedadam", "server-learning-rate": 0.05}))
    assert isinstance(adam, FedAdam) and adam.eta == 0.05
    assert isinstance(make_strategy(RunConfig.from_flat({**base, "strategy": "fedmedian"})), FedMedian)
    assert isinstance(make_strategy(RunConfig.from_flat({**base, "strategy": "fedtrimmedavg"})), FedTrimmedAvg)
    plain = make_strategy(RunConfig.from_flat(base))
    assert (plain.fraction_train, plain.min_train_nodes, plain.weighted_by_key) == (0.5, 3, "num-examples")


def _reply_of(pid: int, n: int, loss: float) -> Message:
    content = RecordDict({"arrays": ArrayRecord({"w": torch.zeros(2)}),
                          "metrics": MetricRecord({"num-examples": n, "train-loss": loss, "partition-id": pid})})
    return Message(content=content, dst_node_id=1, message_type="train")


def test_the_aggregated_train_metrics_average_the_losses_but_not_the_partition_ids(flower_identity):
    for name in ("fedavg", "fedprox", "fedmedian", "fedtrimmedavg"):
        strategy = make_strategy(RunConfig.from_flat({"strategy": name}))
        _, metrics = strategy.aggregate_train(1, [_reply_of(0, 30, 1.0), _reply_of(3, 10, 3.0)])
        assert "partition-id" not in metrics, name  # a mean of ids (0.75) would mean nothing
        assert metrics["train-loss"] == 1.5, name  # by hand: (30 * 1 + 10 * 3) / 40
