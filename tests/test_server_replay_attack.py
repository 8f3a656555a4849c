"""The honest-but-curious server tries to regenerate a client's DP noise and replay its round.

The server knows the run config, the global model it sent, the round number, the client's
partition id and the code; in the DP worst case it even knows the client's data. If the noise
and the Poisson sampling could be derived from those, it would replay the client's round and
recover the update exactly, i.e. the noise would protect nothing (epsilon infinite). Against
fedfer (secret randomness from OS entropy) the replay misses by a distance of the order of the
noise; against the same round with predictable randomness (the test-only negative control) the
replay reproduces the received update to 1e-6, so the attack itself works.
"""

from __future__ import annotations

import math

import pytest
import torch
from flwr.app import Context, RecordDict

from client.training import train_local
from fer_models.config import RunConfig
from fer_models.federation.sites import local_data
from fer_models.federation.task import client_data
from fer_models.models.from_config import build_model
from fer_models.privacy.dp_sgd import sample_rate_for

CFG = {"synthetic-per-class": 12, "synthetic-eval-per-class": 4, "num-clients": 2, "num-server-rounds": 2,
       "min-client-samples": 4, "dp": "sample", "dp-recipe": "none", "noise-multiplier": 1.0,
       "max-grad-norm": 1.0, "batch-size": 16, "local-epochs": 1, "optimizer": "sgd", "momentum": 0.0,
       "weight-decay": 0.0, "learning-rate": 0.5}
PID, ROUND = 1, 1


def _round(cfg: RunConfig, global_state: dict[str, torch.Tensor], state_dir) -> dict[str, torch.Tensor]:
    ctx = Context(run_id=1, node_id=PID + 1, state=RecordDict(), run_config=cfg.to_flat(),
                  node_config={"partition-id": PID, "num-partitions": cfg.num_clients, "state-dir": str(state_dir)})
    return train_local(cfg=cfg, context=ctx, local=local_data(cfg, ctx.node_config),
                       global_state=global_state, server_round=ROUND, lineage="attack-test").state


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(L2 distance, max abs difference) over the trained parameters."""
    diffs = [(a[k].double() - b[k].double()).reshape(-1) for k in a if a[k].is_floating_point()]
    flat = torch.cat(diffs)
    return float(flat.norm()), float(flat.abs().max())


def _noise_scale(cfg: RunConfig, num_params: int) -> float:
    """L2 norm of the difference of two independent noise draws over the round's steps (SGD, no momentum)."""
    n = len(client_data(cfg, partition_id=PID, num_partitions=cfg.num_clients))
    q = sample_rate_for(batch_size=cfg.batch_size, num_samples=n)
    steps, expected_batch = int(1 / q), q * n
    per_coord = cfg.learning_rate * cfg.noise_multiplier * cfg.max_grad_norm / expected_batch * math.sqrt(steps)
    return per_coord * math.sqrt(2 * num_params)


def _attack(cfg: RunConfig, tmp_path) -> tuple[float, float, float]:
    global_state = build_model(cfg).state_dict()
    received = _round(cfg, global_state, tmp_path / "client-node")  # what the client sent
    replayed = _round(cfg, global_state, tmp_path / "server-replay")  # the server's regeneration
    num_params = sum(v.numel() for v in received.values() if v.is_floating_point())
    return (*_distance(received, replayed), _noise_scale(cfg, num_params))


def test_the_server_cannot_replay_a_clients_dp_round(flower_identity, one_thread, tmp_path):
    cfg = RunConfig.from_flat(CFG)
    l2, _, noise = _attack(cfg, tmp_path)
    # the replay misses by about the noise itself (fresh noise and a fresh Poisson draw)
    assert 0.3 * noise < l2 < 3.0 * noise, (l2, noise)


def test_with_predictable_randomness_the_same_replay_recovers_the_update(flower_identity, one_thread, tmp_path,
                                                                          predictable_privacy_randomness):
    cfg = RunConfig.from_flat(CFG)
    l2, max_abs, noise = _attack(cfg, tmp_path)
    assert max_abs < 1e-6 and l2 < 1e-4 * noise, (max_abs, l2, noise)


def test_dp_randomness_never_depends_on_what_the_server_knows(monkeypatch):
    """The sources behind noise and sampling are keyed with 32 bytes of os.urandom, asked for afresh each time."""
    import fer_models.privacy.dp_sgd as privacy
    import fer_models.privacy.secure_random as secure_random

    asked: list[int] = []
    draws = iter([b"\x01" * 32, b"\x02" * 32])

    def urandom(n: int) -> bytes:
        asked.append(n)
        return next(draws)

    monkeypatch.setattr(secure_random.os, "urandom", urandom)
    a, b = privacy.secret_source(), privacy.secret_source()
    assert asked == [32, 32]
    assert torch.equal(a.words(4), secure_random.SecureRandom(key=b"\x01" * 32).words(4))
    assert torch.equal(b.words(4), secure_random.SecureRandom(key=b"\x02" * 32).words(4))
    with pytest.raises(StopIteration):
        privacy.secret_source()  # no cached or derived key: every source asks the OS
