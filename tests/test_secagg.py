"""secure-aggregation=secaggplus: the server sees masked vectors only, and still gets FedAvg's mean.

The federation runs in-process (simulation/bench/secagg_federation.py): each node runs fedfer's ClientApp
mods around a stand-in trainer that returns a known update, and every message crosses a copy. What the server received is checked against each client's own weights and
update; the global model against a weighted mean computed here with numpy.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from fer_models.config import ConfigError, RunConfig
from fer_models.federation.wire import SECAGG_HALTED, SECAGG_REQUIRED
from fer_models.privacy import secagg_prg
from server.secagg import SecAggPlusGrid, SecAggSettings, weight_key_of
from server.strategy import make_strategy
from simulation.bench.secagg_federation import Federation

SHAPES = {"conv": (12, 40), "bias": (500,), "head": (80, 7)}  # >= 480 entries: chance |r| < 0.3 by > 6 sd


def _global() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: rng.normal(0, 0.1, s).astype(np.float32) for k, s in SHAPES.items()}


def _federation(cfg: RunConfig, examples: list[int], *, down: dict[int, str] | None = None) -> Federation:
    rng = np.random.default_rng(1)
    updates = [{k: rng.normal(0, 0.05, s).astype(np.float32) for k, s in SHAPES.items()} for _ in examples]
    return Federation(cfg.to_flat(), updates, examples, down=down)


def _secure_round(cfg: RunConfig, fed: Federation, *, max_weight: float = 1000.0, screen=None):
    strategy = make_strategy(cfg)
    settings = SecAggSettings.from_config(cfg, uniform_weight=cfg.dp == "client", pool_size=int(max_weight))
    grid = SecAggPlusGrid(fed, settings=settings, weight_key=weight_key_of(strategy), screen=screen)  # type: ignore[arg-type]
    start = ArrayRecord({k: Array(v) for k, v in _global().items()})
    messages = strategy.configure_train(1, start, ConfigRecord({}), grid)  # type: ignore[arg-type]
    replies = list(grid.send_and_receive(messages, timeout=10))
    arrays, _ = strategy.aggregate_train(1, replies)
    got = {} if arrays is None else dict(zip(arrays.keys(), arrays.to_numpy_ndarrays()))
    return strategy, grid, got, replies


def _cfg(**extra) -> RunConfig:
    return RunConfig.from_flat({"num-clients": 4, "min-train-clients": 4, "secure-aggregation": "secaggplus", **extra})


def _numeric_arrays(message: Message) -> list[np.ndarray]:
    """Every array the server can read from a reply: its ArrayRecords and any ndarray serialized in a config."""
    found = [a for rec in message.content.array_records.values() for a in rec.to_numpy_ndarrays()]
    for rec in message.content.config_records.values():
        for value in rec.values():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, bytes):
                    try:
                        found.append(bytes_to_ndarray(item))
                    except Exception:  # keys, ciphertexts: not arrays
                        pass
    return found


def _reveals(message: Message, secrets: dict[str, np.ndarray]) -> bool:
    """True if an array of the reply equals or correlates (|r| > 0.3) with one of ``secrets``' arrays."""
    for arr in _numeric_arrays(message):
        for secret in secrets.values():
            if arr.size != secret.size or arr.size < 2:
                continue
            a, s = arr.astype(np.float64).ravel(), secret.astype(np.float64).ravel()
            if np.allclose(a, s) or abs(np.corrcoef(a, s)[0, 1]) > 0.3:
                return True
    return False


def _mean_of(fed: Federation, nodes: list[int]) -> dict[str, np.ndarray]:
    """By hand: the global model plus the example-weighted mean of ``nodes``' updates."""
    n = np.array([fed.nodes[i] for i in nodes], dtype=np.float64)
    return {k: start + sum(w * fed.updates[i][k].astype(np.float64) for w, i in zip(n, nodes)) / n.sum()
            for k, start in _global().items()}


def _within_bound(got: dict[str, np.ndarray], exact: dict[str, np.ndarray], grid: SecAggPlusGrid) -> bool:
    """Every entry within the round's reported quantization error (plus float32 storage of the result)."""
    bound = grid.last_round["secagg_quantization_error_max"]
    return all(np.abs(got[k] - exact[k]).max() <= bound + 1e-6 for k in SHAPES)


def test_no_reply_reveals_its_clients_update_while_the_global_model_is_fedavgs_mean(flower_identity):
    fed = _federation(_cfg(), [120, 300, 75, 505])
    _, grid, got, replies = _secure_round(_cfg(), fed)
    assert len(replies) == 4 and len(fed.received) == 4 * 4  # four stages, four clients
    for reply in fed.received:
        nid = reply.metadata.src_node_id
        assert not _reveals(reply, fed.trained[nid]) and not _reveals(reply, fed.updates[nid])
    # the check itself can fail: the trainer's plain reply reveals both
    plain = Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in fed.trained[100].items()})}),
                    dst_node_id=1, message_type="train")
    assert _reveals(plain, fed.trained[100])
    bound = grid.last_round["secagg_quantization_error_max"]
    assert 0 < bound < 1e-4 and _within_bound(got, _mean_of(fed, list(fed.nodes)), grid)
    assert all(np.abs(got[k] - start).max() > 100 * bound for k, start in _global().items())  # far above the error


@pytest.mark.parametrize("first_down", [Stage.SHARE_KEYS, Stage.COLLECT_MASKED_VECTORS])
def test_clients_that_drop_out_mid_round_leave_the_mean_of_those_that_sent_masked_vectors(flower_identity,
                                                                                            first_down):
    examples = [120, 300, 75, 505, 200]
    cfg = _cfg(**{"num-clients": 5, "min-train-clients": 3})
    # 102 dies before sending its key shares or its masked vector, 104 after it (its unmask shares never come)
    fed = _federation(cfg, examples, down={102: first_down, 104: Stage.UNMASK})
    _, grid, got, replies = _secure_round(cfg, fed)
    summed = [100, 101, 103, 104]
    assert sorted(r.metadata.src_node_id for r in replies) == summed
    assert _within_bound(got, _mean_of(fed, summed), grid)


def test_a_reply_the_server_rejects_by_its_metrics_is_left_out_of_the_sum_before_it_is_formed(flower_identity):
    fed = _federation(_cfg(), [120, 300, 75, 505])
    _, grid, got, replies = _secure_round(_cfg(), fed, screen=lambda m: (4703, "ledger reset")
                                          if m["partition-id"] == 1 else None)
    assert [r.error.reason for r in replies if r.has_error()] == ["ledger reset"]
    assert _within_bound(got, _mean_of(fed, [100, 102, 103]), grid)


def test_a_client_whose_weight_exceeds_the_max_weight_refuses_and_the_others_are_summed(flower_identity):
    fed = _federation(_cfg(), [120, 300, 75, 505])
    _, grid, got, replies = _secure_round(_cfg(), fed, max_weight=400)
    (refusal,) = [r for r in replies if r.has_error()]
    assert refusal.metadata.src_node_id == 103 and "set secagg-max-weight" in refusal.error.reason
    assert _within_bound(got, _mean_of(fed, [100, 101, 102]), grid)


def test_too_many_dropouts_halt_the_round_with_an_error_per_client(flower_identity):
    cfg = _cfg()
    fed = _federation(cfg, [10, 20, 30, 40], down={100: Stage.SHARE_KEYS, 101: Stage.SHARE_KEYS})
    _, grid, got, replies = _secure_round(cfg, fed)
    assert len(replies) == 4 and all(r.has_error() and "halted" in r.error.reason for r in replies)
    assert got == {} and grid.last_round == {}


def _log_stages(fed: Federation) -> list[str]:
    """The SecAgg+ stage of every message the server sends to ``fed`` from now on."""
    sent, inner = [], fed.send_and_receive

    def spy(messages, *, timeout=None):
        messages = list(messages)
        sent.extend(m.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE] for m in messages)
        return inner(messages, timeout=timeout)

    fed.send_and_receive = spy  # type: ignore[method-assign]
    return sent


def test_three_clients_are_summed_with_fedfers_mask_expansion_on_both_ends(flower_identity):
    import importlib

    cfg = _cfg(**{"num-clients": 3, "min-train-clients": 3})
    fed = _federation(cfg, [120, 300, 75])
    stages = _log_stages(fed)
    _, grid, got, replies = _secure_round(cfg, fed)
    for name in ("flwr.client.mod.secure_aggregation.secaggplus_mod",
                 "flwr.server.workflow.secure_aggregation.secaggplus_workflow"):
        assert importlib.import_module(name).pseudo_rand_gen is secagg_prg.pseudo_rand_gen
    assert stages.count(Stage.UNMASK) == 3 and grid.last_round["secagg_clients_summed"] == 3
    assert _within_bound(got, _mean_of(fed, [100, 101, 102]), grid)


@pytest.mark.parametrize("examples, extra, down", [
    ([120, 300, 75], {"num-clients": 3, "min-train-clients": 3}, [102]),  # threshold 2 of 3: Flower would unmask
    ([120, 300, 75, 505], {"secagg-reconstruction-threshold": 2}, [101, 103]),
])
def test_a_round_with_fewer_than_three_masked_updates_halts_before_any_key_share_is_asked_for(flower_identity,
                                                                                               examples, extra, down):
    cfg = _cfg(**extra)
    fed = _federation(cfg, examples, down={nid: Stage.COLLECT_MASKED_VECTORS for nid in down})
    stages = _log_stages(fed)
    _, grid, got, replies = _secure_round(cfg, fed)
    assert stages.count(Stage.COLLECT_MASKED_VECTORS) == len(examples) and Stage.UNMASK not in stages
    assert got == {} and grid.last_round == {}
    assert len(replies) == len(examples)
    assert all(r.has_error() and r.error.code == SECAGG_HALTED for r in replies)
    assert all("fewer than 3 masked updates: unmasking would reveal the sum of 2" in r.error.reason for r in replies)


def test_client_level_dp_noises_the_unmasked_mean_of_client_clipped_updates(flower_identity):
    cfg = _cfg(**{"dp": "client", "client-clipping": "client", "noise-multiplier": 1e-9, "max-grad-norm": 0.5})
    fed = _federation(cfg, [120, 300, 75, 505])
    strategy, grid, got, _ = _secure_round(cfg, fed)
    assert strategy.releases == 1  # the DP release was made (and accounted) on the secure mean
    clipped = {}
    for nid, upd in fed.updates.items():  # by hand: each update scaled to L2 norm <= 0.5, unweighted mean
        norm = np.sqrt(sum(float((u.astype(np.float64) ** 2).sum()) for u in upd.values()))
        clipped[nid] = {k: u * min(1.0, 0.5 / norm) for k, u in upd.items()}
    assert all(np.sqrt(sum(float((u ** 2).sum()) for u in fed.updates[n].values())) > 0.5 for n in fed.nodes)
    for k, start in _global().items():
        exact = start + sum(clipped[nid][k] for nid in fed.nodes) / 4
        assert np.abs(got[k] - exact).max() <= grid.last_round["secagg_quantization_error_max"] + 1e-5


def test_a_client_refuses_to_send_its_update_outside_secure_aggregation(flower_identity):
    cfg = _cfg()
    fed = _federation(cfg, [10, 20, 30, 40])
    msg = Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in _global().items()}),
                              "config": ConfigRecord({})}), dst_node_id=100, message_type="train")
    reply = fed.send_and_receive([msg])[0]
    assert reply.has_error() and reply.error.code == SECAGG_REQUIRED
    assert 100 not in fed.trained  # it did not even train


@pytest.mark.parametrize("extra, names", [
    ({"strategy": "fedmedian"}, ("strategy=fedmedian", "strategy=fedavg")),
    ({"strategy": "fedtrimmedavg"}, ("strategy=fedtrimmedavg", "sees only their sum")),
    ({"dp": "client", "client-clipping": "server"}, ("client-clipping=server", "set client-clipping=client")),
    ({"num-clients": 2, "min-train-clients": 2}, ("2 client(s) per round", "at least 3")),
    ({"secagg-num-shares": 7}, ("secagg-num-shares=7", "0 (every sampled client)")),
    ({"secagg-num-shares": 3, "secagg-reconstruction-threshold": 3}, ("secagg-reconstruction-threshold=3",)),
    ({"secagg-quantization-range": 2**31}, ("secagg-quantization-range", "overflow")),
])
def test_combinations_secaggplus_cannot_serve_are_refused_with_the_way_out(extra, names):
    with pytest.raises(ConfigError) as err:
        _cfg(**extra)
    assert all(n in str(err.value) for n in names), str(err.value)


def test_secagg_settings_without_secure_aggregation_are_refused():
    with pytest.raises(ConfigError, match="secagg-num-shares set while secure-aggregation=none"):
        RunConfig.from_flat({"secagg-num-shares": 3})


def test_fedprox_fedadam_and_sample_level_dp_are_served():
    for extra in ({"strategy": "fedprox"}, {"strategy": "fedadam"}, {"dp": "sample", "target-epsilon": 8.0},
                  {"dp": "client", "client-clipping": "client"}):
        assert _cfg(**extra).secure_aggregation == "secaggplus"


def test_the_server_wraps_its_grid_only_under_secaggplus_with_weights_bounded_by_the_training_pool(cache_dir):
    from fer_models.federation.task import load_store, train_pool
    from server.secagg import secure_grid

    small = {"synthetic-per-class": 5, "synthetic-eval-per-class": 2}
    plain = RunConfig.from_flat(small)
    grid = _federation(plain, [1, 2, 3])
    store = load_store(plain)
    assert secure_grid(grid, cfg=plain, store=store, strategy=make_strategy(plain)) is grid  # type: ignore[arg-type]
    fedavg, dp = _cfg(**small), _cfg(**small, **{"dp": "client", "client-clipping": "client"})
    wrapped = secure_grid(grid, cfg=fedavg, store=store, strategy=make_strategy(fedavg))  # type: ignore[arg-type]
    assert isinstance(wrapped, SecAggPlusGrid) and wrapped.weight_key == "num-examples"
    assert wrapped.settings.max_weight == len(train_pool(fedavg, store)) == 35
    uniform = secure_grid(grid, cfg=dp, store=store, strategy=make_strategy(dp))  # type: ignore[arg-type]
    assert uniform.weight_key == "uniform-weight" and uniform.settings.max_weight == 1.0  # type: ignore[union-attr]
