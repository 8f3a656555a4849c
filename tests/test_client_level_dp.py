"""Client-level DP (DP-FedAvg): noise calibrated to the unweighted mean actually formed, epsilon
accounted for the sampling actually used (a public fixed-size draw: no amplification), all-or-nothing
rounds, budgets honoured, and the settings it cannot serve refused."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

from fer_models.config import ConfigError, RunConfig
from fer_models.federation.wire import NUM_EXAMPLES, UNIFORM_WEIGHT
from server.client_dp import ClientClippedClientDP, ServerClippedClientDP, client_level_epsilon
from server.ledger import ServerLedger
from server.strategy import make_strategy

ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))  # Opacus's default RDP orders
DIM = 4000


def _cfg(**extra) -> RunConfig:
    return RunConfig.from_flat({"dp": "client", "num-clients": 5, "noise-multiplier": 0.8, "max-grad-norm": 2.0,
                                **extra})


def _replies(updates: list[np.ndarray], examples: list[int]) -> list[Message]:
    out = []
    for i, (u, n) in enumerate(zip(updates, examples)):
        sent = Message(RecordDict(), dst_node_id=i + 1, message_type="train")
        content = RecordDict({"arrays": ArrayRecord({"w": Array(u.astype(np.float64))}),
                              "metrics": MetricRecord({NUM_EXAMPLES: n, UNIFORM_WEIGHT: 1})})
        out.append(Message(content, reply_to=sent))
    return out


def _aggregate(strategy, updates, examples, server_round=1) -> np.ndarray | None:
    strategy.current_arrays = ArrayRecord({"w": Array(np.zeros(DIM))})  # the global model the clients started from
    arrays, _ = strategy.aggregate_train(server_round, _replies(updates, examples))
    return None if arrays is None else arrays["w"].numpy()


def test_the_aggregates_noise_std_is_sigma_c_over_m(flower_identity):
    cfg = _cfg()
    strategy = make_strategy(cfg)
    m = strategy.num_sampled_clients
    assert m == 5
    rng = np.random.default_rng(0)
    u = rng.normal(size=DIM)
    u *= 0.5 * cfg.max_grad_norm / np.linalg.norm(u)  # inside the clipping ball: clipping changes nothing
    noise = np.concatenate([_aggregate(strategy, [u] * m, [10, 20, 30, 40, 50]) - u for _ in range(100)])
    expected = cfg.noise_multiplier * cfg.max_grad_norm / m
    assert np.std(noise) == pytest.approx(expected, rel=0.05)
    assert abs(np.mean(noise)) < 5 * expected / np.sqrt(noise.size)


def test_the_mean_is_unweighted_whatever_the_clients_report(flower_identity):
    strategy = make_strategy(_cfg(**{"noise-multiplier": 1e-9}))
    rng = np.random.default_rng(1)
    updates = [rng.normal(size=DIM) * s for s in (0.01, 0.02, 0.03, 0.04, 10.0)]  # the last one gets clipped
    clipped = [u * min(1.0, 2.0 / np.linalg.norm(u)) for u in updates]
    got = _aggregate(strategy, updates, [1, 1, 1, 1, 100000])
    assert np.allclose(got, np.mean(clipped, axis=0), atol=1e-6)


def test_a_round_with_fewer_replies_than_calibrated_is_not_aggregated(flower_identity):
    strategy = make_strategy(_cfg())
    u = np.full(DIM, 1e-3)
    assert _aggregate(strategy, [u] * 4, [10] * 4) is None  # one of 5 dropped: the noise would be too small
    assert strategy.releases == 0 and "4 of the 5" in strategy.skipped[0]["reason"]
    assert _aggregate(strategy, [u] * 5, [10] * 5, server_round=2) is not None
    assert strategy.releases == 1


@pytest.mark.parametrize("rounds", [1, 3, 20])
def test_reported_epsilon_equals_an_independent_accountant_without_amplification(flower_identity, rounds):
    cfg = _cfg(**{"fraction-train": 0.6, "num-clients": 10})  # 6 of 10 drawn each round, from a public seed
    strategy = make_strategy(cfg)
    ledger = ServerLedger(cfg, client_dp=strategy)
    for r in range(1, rounds + 1):
        strategy.releases += 1
        ledger.record_round(r, [], [])
    acc = RDPAccountant()
    for _ in range(rounds):
        acc.step(noise_multiplier=cfg.noise_multiplier, sample_rate=1.0)
    assert ledger.per_round_max[-1] == pytest.approx(acc.get_epsilon(delta=cfg.target_delta), rel=1e-9)
    rdp = compute_rdp(q=1.0, noise_multiplier=cfg.noise_multiplier, steps=rounds, orders=ORDERS)
    assert ledger.per_round_max[-1] == pytest.approx(get_privacy_spent(orders=ORDERS, rdp=rdp,
                                                                      delta=cfg.target_delta)[0], rel=1e-9)
    summary = ledger.summary()
    assert summary["unit"] == "site" and summary["sample_rate"] == 1.0 and "delta=1e-05" in summary["label"]


def test_target_epsilon_sets_the_noise_and_the_budget_stops_further_releases():
    cfg = _cfg(**{"noise-multiplier": 0.0, "target-epsilon": 4.0, "num-server-rounds": 5})
    strategy = make_strategy(cfg)
    assert strategy.epsilon(5) == pytest.approx(4.0, rel=0.05) and strategy.epsilon(5) <= 4.0 + 1e-6
    strategy.releases = 5
    assert list(strategy.configure_train(6, ArrayRecord(), None, None)) == []  # a 6th release would exceed 4.0
    assert "over the budget" in strategy.skipped[-1]["reason"]


def test_epsilon_budget_below_one_release_trains_nothing():
    cfg = _cfg(**{"epsilon-budget": client_level_epsilon(noise_multiplier=0.8, rounds=1, delta=1e-5) * 0.99})
    strategy = make_strategy(cfg)
    assert list(strategy.configure_train(1, ArrayRecord(), None, None)) == []


@pytest.mark.parametrize("clipping, kind", [("server", ServerClippedClientDP), ("client", ClientClippedClientDP)])
def test_dp_client_uses_the_calibrated_wrapper(clipping, kind):
    assert isinstance(make_strategy(_cfg(**{"client-clipping": clipping})), kind)


@pytest.mark.parametrize("extra, words", [
    ({"strategy": "fedmedian"}, "strategy=fedmedian"),
    ({"strategy": "fedadam"}, "strategy=fedadam"),
    ({"adaptive-clipping": True}, "adaptive-clipping"),
    ({"noise-multiplier": 0.0}, "noise-multiplier > 0"),
    ({"fraction-evaluate": 0.5}, "fraction-evaluate"),
])
def test_settings_whose_calibration_is_not_proven_are_refused(extra, words):
    with pytest.raises(ConfigError, match=words):
        _cfg(**extra)


def test_the_server_log_says_the_server_is_trusted_to_add_the_noise(flower_identity, caplog):
    with caplog.at_level("INFO", logger="server.client_dp"):
        make_strategy(_cfg())
    assert any("dp=client" in r.message and "the server is trusted to add the noise" in r.message
               and "NOT against the server" in r.message for r in caplog.records), caplog.text
