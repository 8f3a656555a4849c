"""Sample-level DP in the ClientApp: epsilon composes over rounds; budgets and targets hold.

These call the ClientApp's train handler in-process round after round with the client's
Context (as Flower does), so the ledger kept in ``context.state`` is exercised for real.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from opacus.accountants import RDPAccountant

from client.app import BUDGET_EXCEEDED_CODE, train
from fer_models.config import RunConfig
from fer_models.federation.task import client_data
from fer_models.models.from_config import build_model

SMALL = {"synthetic-per-class": 12, "synthetic-eval-per-class": 4, "num-clients": 2, "batch-size": 16,
         "dp": "sample", "dp-recipe": "none", "noise-multiplier": 1.1, "max-grad-norm": 1.0, "num-server-rounds": 3,
         "min-client-samples": 4}


_RUN_IDS = itertools.count(1)


def _context(cfg: RunConfig, pid: int, *, run_id: int | None = None) -> Context:
    """A fresh client context; a new run id (so a new ledger lineage) unless ``run_id`` is given."""
    return Context(run_id=next(_RUN_IDS) if run_id is None else run_id, node_id=pid + 1, node_config={"partition-id": pid, "num-partitions": cfg.num_clients},
                   state=RecordDict(), run_config=cfg.to_flat())


def _message(state: dict[str, torch.Tensor], server_round: int) -> Message:
    content = RecordDict({"arrays": ArrayRecord(state), "config": ConfigRecord({"server-round": server_round})})
    return Message(content=content, dst_node_id=1, message_type="train")


def _run_rounds(cfg: RunConfig, ctx: Context, rounds: int) -> list[Message]:
    state = build_model(cfg).state_dict()
    replies = []
    for r in range(1, rounds + 1):
        reply = train(_message(state, r), ctx)
        replies.append(reply)
        if not reply.has_error():
            state = reply.content["arrays"].to_torch_state_dict()
    return replies


def _independent_epsilon(noise: float, q: float, steps: int, delta: float) -> float:
    acc = RDPAccountant()
    for _ in range(steps):
        acc.step(noise_multiplier=noise, sample_rate=q)
    return acc.get_epsilon(delta=delta)


def test_epsilon_after_three_rounds_is_the_composition_over_all_rounds(flower_identity):
    cfg = RunConfig.from_flat(SMALL)
    for pid in range(cfg.num_clients):
        ctx = _context(cfg, pid)
        replies = _run_rounds(cfg, ctx, 3)
        eps = [float(r.content["metrics"]["epsilon"]) for r in replies]
        n = len(client_data(cfg, partition_id=pid, num_partitions=cfg.num_clients))
        batches = math.ceil(n / cfg.batch_size)  # Opacus: q = 1 / batches, int(1/q) steps per epoch
        q, steps_round = 1.0 / batches, cfg.local_epochs * batches
        expected = _independent_epsilon(cfg.noise_multiplier, q, 3 * steps_round, cfg.target_delta)
        assert eps[-1] == pytest.approx(expected, rel=1e-9)
        one_round = _independent_epsilon(cfg.noise_multiplier, q, steps_round, cfg.target_delta)
        assert eps[0] == pytest.approx(one_round, rel=1e-9)
        assert eps[0] < eps[1] < eps[2]  # a per-round reset would give three equal values


def test_arrays_sent_back_are_the_plain_models(flower_identity):
    cfg = RunConfig.from_flat(SMALL)
    reply = _run_rounds(cfg, _context(cfg, 0), 1)[0]
    keys = list(reply.content["arrays"].keys())
    assert keys == list(build_model(cfg).state_dict().keys())
    assert not any(k.startswith("_module.") for k in keys)


def test_client_refuses_the_round_that_would_exceed_its_budget(flower_identity, caplog):
    cfg = RunConfig.from_flat(SMALL)
    ctx = _context(cfg, 0)
    first = _run_rounds(cfg, ctx, 1)[0]
    eps1 = float(first.content["metrics"]["epsilon"])
    # a budget between one and two rounds' worth: round 2 must be refused, ledger untouched
    tight = RunConfig.from_flat({**SMALL, "epsilon-budget": eps1 * 1.2})
    ctx.run_config = tight.to_flat()
    replies = [train(_message(build_model(cfg).state_dict(), 2), ctx) for _ in range(2)]
    for reply in replies:
        assert reply.has_error() and reply.error.code == BUDGET_EXCEEDED_CODE
        assert "budget" in reply.error.reason and f"{eps1:.3f}" not in reply.error.reason  # a generic reason
    assert f"{eps1:.3f}" in caplog.text and "over the budget" in caplog.text  # the detail: in the node's log


def test_target_epsilon_mode_lands_at_or_just_under_the_target(flower_identity):
    cfg = RunConfig.from_flat({**SMALL, "target-epsilon": 3.0, "noise-multiplier": 0.0})
    replies = _run_rounds(cfg, _context(cfg, 1), cfg.num_server_rounds)
    final = float(replies[-1].content["metrics"]["epsilon"])
    assert 0.9 * 3.0 <= final <= 3.0 + 1e-6
    noise = {float(r.content["metrics"]["noise-multiplier"]) for r in replies}
    assert len(noise) == 1  # computed once for all planned rounds
