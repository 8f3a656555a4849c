"""Client-level DP (DP-FedAvg): the strategy wrappers and the epsilon the server reports."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.serverapp.strategy import (DifferentialPrivacyClientSideFixedClipping,
                                     DifferentialPrivacyServerSideAdaptiveClipping,
                                     DifferentialPrivacyServerSideFixedClipping)
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

from fer_models.config import ConfigError, RunConfig
from server.ledger import ServerLedger
from server.strategy import client_level_epsilon, make_strategy

ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))  # Opacus's default RDP orders


def _independent_epsilon(q: float, sigma: float, rounds: int, delta: float) -> float:
    rdp = compute_rdp(q=q, noise_multiplier=sigma, steps=rounds, orders=ORDERS)
    eps, _ = get_privacy_spent(orders=ORDERS, rdp=rdp, delta=delta)
    return float(eps)


@pytest.mark.parametrize("sigma, q, rounds", [(1.0, 0.5, 10), (0.8, 0.1, 50), (1.5, 1.0, 3)])
def test_client_level_epsilon_matches_an_independent_rdp_computation(sigma, q, rounds):
    got = client_level_epsilon(noise_multiplier=sigma, sample_rate=q, rounds=rounds, delta=1e-5)
    assert got == pytest.approx(_independent_epsilon(q, sigma, rounds, 1e-5), rel=1e-9)


def test_client_level_epsilon_grows_with_rounds_and_is_zero_before_training():
    assert client_level_epsilon(noise_multiplier=1.0, sample_rate=0.5, rounds=0, delta=1e-5) == 0.0
    values = [client_level_epsilon(noise_multiplier=1.0, sample_rate=0.5, rounds=r, delta=1e-5)
              for r in (1, 2, 5)]
    assert values == sorted(values) and values[0] < values[-1]
    assert math.isinf(client_level_epsilon(noise_multiplier=0.0, sample_rate=0.5, rounds=1, delta=1e-5))


def test_server_ledger_uses_clients_per_round_over_clients_as_q():
    cfg = RunConfig.from_flat({"dp": "client", "num-clients": 10, "fraction-train": 0.3,
                               "noise-multiplier": 1.2, "min-train-clients": 1})
    ledger = ServerLedger(cfg)
    for r in (1, 2, 3):
        ledger.record_round(r, [], [])
    assert ledger.per_round_max[-1] == pytest.approx(_independent_epsilon(0.3, 1.2, 3, cfg.target_delta))
    assert ledger.summary()["sample_rate"] == pytest.approx(0.3)


@pytest.mark.parametrize("clipping, adaptive, kind", [
    ("server", False, DifferentialPrivacyServerSideFixedClipping),
    ("server", True, DifferentialPrivacyServerSideAdaptiveClipping),
    ("client", False, DifferentialPrivacyClientSideFixedClipping),
])
def test_dp_client_wraps_the_strategy_in_flowers_dp_wrapper(clipping, adaptive, kind):
    cfg = RunConfig.from_flat({"dp": "client", "client-clipping": clipping, "adaptive-clipping": adaptive,
                               "num-clients": 20})
    assert isinstance(make_strategy(cfg), kind)


def test_adaptive_clipping_with_too_few_clients_is_refused_with_advice():
    cfg = RunConfig.from_flat({"dp": "client", "adaptive-clipping": True, "num-clients": 4})
    with pytest.raises(ConfigError, match="clients per round"):
        make_strategy(cfg)


def test_sample_level_ledger_keeps_the_latest_epsilon_per_client_and_the_max():
    cfg = RunConfig.from_flat({"dp": "sample"})
    ledger = ServerLedger(cfg)
    ledger.record_round(1, [{"partition-id": 0, "epsilon": 1.0}, {"partition-id": 1, "epsilon": 1.5}], [])
    ledger.record_round(2, [{"partition-id": 0, "epsilon": 2.0}], [])  # client 1 not sampled
    ledger.record_round(3, [], [{"code": 4701, "reason": "budget"}])
    s = ledger.summary()
    assert s["per_round_max"] == [1.5, 2.0, 2.0]
    assert s["per_client"] == {"0": 2.0, "1": 1.5}
    assert len(s["refusals"]) == 1 and s["refusals"][0]["round"] == 3
    assert np.isclose(s["final_max"], 2.0)
