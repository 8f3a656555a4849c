"""q-FedAvg (strategy=qfedavg): the client's loss release and the server's loss-weighted step.

The client sends the received global model's loss on its training data (q-FedAvg's F_k(w)) only
without DP; the server's step is checked against q-FedAvg's formula written out here by hand
(Li et al. 2020, Algorithm 2, each site weighted by its share p_k of the examples): d_k = L (w - w_k),
step = sum p_k F_k^q d_k / sum p_k (q F_k^(q-1) |d_k|^2 + L F_k^q). With q = 0 that is FedAvg.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from fer_models.config import ConfigError, RunConfig
from fer_models.federation.task import client_data
from fer_models.federation.wire import GLOBAL_LOSS
from fer_models.models.from_config import build_model
from fer_models.training import engine
from server.strategy import make_strategy
from tests.test_client_privacy import _context, _run_rounds

SMALL = {"synthetic-per-class": 12, "synthetic-eval-per-class": 4, "num-clients": 2, "batch-size": 16,
         "num-server-rounds": 1, "local-epochs": 1, "min-client-samples": 4}


def test_the_client_sends_the_global_models_loss_on_its_training_data_without_dp(flower_identity):
    cfg = RunConfig.from_flat({**SMALL, "strategy": "qfedavg"})
    [reply] = _run_rounds(cfg, _context(cfg, 0), 1)
    sent = reply.content["metrics"][GLOBAL_LOSS]
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)  # _run_rounds sends build_model(cfg)'s weights: the same seed gives the same model
    data = client_data(cfg, partition_id=0, num_partitions=cfg.num_clients)
    expected = engine.evaluate(model=model.eval(), data=data, batch_size=7, device=torch.device("cpu")).loss
    assert sent == pytest.approx(expected, rel=1e-5)
    assert reply.content["metrics"]["train-loss"] != pytest.approx(sent)  # after training, not the same number


def test_other_strategies_send_no_global_loss(flower_identity):
    cfg = RunConfig.from_flat(SMALL)
    [reply] = _run_rounds(cfg, _context(cfg, 0), 1)
    assert GLOBAL_LOSS not in reply.content["metrics"]


@pytest.mark.parametrize("extra,match", [({"dp": "sample", "noise-multiplier": 1.0}, "qfedavg with dp=sample"),
                                         ({"dp": "client", "noise-multiplier": 1.0}, "strategy=qfedavg with dp=client"),
                                         ({"secure-aggregation": "secaggplus"}, "q-FedAvg needs every"),
                                         ({"learning-rate": 0.0}, "qfedavg-lipschitz")])
def test_qfedavg_is_refused_where_its_loss_or_its_updates_would_break_a_guarantee(extra, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig.from_flat({"strategy": "qfedavg", **extra})


def _reply(w: np.ndarray, loss: float, n: int = 10) -> Message:
    content = RecordDict({"arrays": ArrayRecord({"w": torch.from_numpy(w.astype(np.float32))}),
                          "metrics": MetricRecord({"num-examples": n, GLOBAL_LOSS: loss})})
    return Message(content=content, dst_node_id=1, message_type="train")


def _by_hand(w0: np.ndarray, sites: list[tuple[np.ndarray, float, int]], *, q: float,
             lipschitz: float) -> np.ndarray:
    num, den, total = np.zeros_like(w0, dtype=np.float64), 0.0, sum(n for _, _, n in sites)
    for wk, loss, n in sites:
        d = lipschitz * (w0 - wk)
        num += n / total * loss ** q * d
        den += n / total * (q * loss ** (q - 1) * float(np.sum(d * d)) + lipschitz * loss ** q)
    return w0 - num / den


@pytest.mark.parametrize("q,lipschitz", [(0.0, 0.0), (1.0, 0.0), (2.0, 5.0), (1.0, 1e-4)])
def test_the_server_steps_as_qfedavg_with_the_configured_q_and_lipschitz(q, lipschitz, flower_identity):
    cfg = RunConfig.from_flat({"strategy": "qfedavg", "qfedavg-q": q, "qfedavg-lipschitz": lipschitz,
                               "learning-rate": 0.25, "num-clients": 2})
    strategy = make_strategy(cfg)
    w0 = np.array([0.5, -1.0, 2.0])
    strategy.current_arrays = ArrayRecord({"w": torch.from_numpy(w0.astype(np.float32))})  # configure_train's
    sites = [(np.array([1.0, -1.0, 2.5]), 0.5, 30), (np.array([0.0, 0.0, 2.0]), 2.0, 10)]
    result, _ = strategy.aggregate_train(1, [_reply(w, loss, n) for w, loss, n in sites])
    expected = _by_hand(w0, sites, q=q, lipschitz=lipschitz or 1 / 0.25)
    np.testing.assert_allclose(result.to_numpy_ndarrays()[0], expected, rtol=1e-5)


def test_with_a_small_lipschitz_estimate_the_worse_served_site_pulls_harder(flower_identity):
    """q = 0: the plain mean of the sites' models; q = 2: nearer the site with the higher loss."""
    w0 = np.zeros(2)
    sites = [(np.array([1.0, 0.0]), 0.5), (np.array([0.0, 1.0]), 2.0)]
    steps = {}
    for q in (0.0, 2.0):
        strategy = make_strategy(RunConfig.from_flat({"strategy": "qfedavg", "qfedavg-q": q,
                                                      "qfedavg-lipschitz": 1e-6, "num-clients": 2}))
        strategy.current_arrays = ArrayRecord({"w": torch.from_numpy(w0.astype(np.float32))})
        result, _ = strategy.aggregate_train(1, [_reply(w, loss) for w, loss in sites])
        steps[q] = result.to_numpy_ndarrays()[0]
    np.testing.assert_allclose(steps[0.0], [0.5, 0.5], rtol=1e-4)
    assert steps[2.0][1] > 0.9 and steps[2.0][0] < 0.1  # (2/0.5)^2 = 16 times the weight


def test_with_q_zero_the_step_is_fedavgs_size_weighted_mean(flower_identity):
    w0 = np.array([0.5, -1.0, 2.0])
    sites = [(np.array([1.0, -1.0, 2.5]), 0.5, 30), (np.array([0.0, 0.0, 2.0]), 2.0, 10), (np.ones(3), 1.0, 60)]
    results = {}
    for strategy_name in ("qfedavg", "fedavg"):
        strategy = make_strategy(RunConfig.from_flat({"strategy": strategy_name, "qfedavg-q": 0.0, "num-clients": 3}))
        strategy.current_arrays = ArrayRecord({"w": torch.from_numpy(w0.astype(np.float32))})
        result, _ = strategy.aggregate_train(1, [_reply(w, loss, n) for w, loss, n in sites])
        results[strategy_name] = result.to_numpy_ndarrays()[0]
    np.testing.assert_allclose(results["qfedavg"], results["fedavg"], rtol=1e-5)
    np.testing.assert_allclose(results["fedavg"], (30 * sites[0][0] + 10 * sites[1][0] + 60 * sites[2][0]) / 100, rtol=1e-6)
