"""A client's optimizer state carried across rounds, and the per-round learning-rate schedule."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from fer_models.config import ConfigError, RunConfig
from fer_models.training.optim_state import load_optimizer_state, lr_factor, optimizer_state_tensors
from tests.test_client_privacy import SMALL, _context, _run_rounds


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 4, generator=gen), torch.randint(0, 3, (8,), generator=gen)
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


@pytest.mark.parametrize("make", [lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
                                  lambda p: torch.optim.AdamW(p, lr=0.01)], ids=["sgd-momentum", "adamw"])
def test_a_fresh_optimizer_given_the_kept_state_continues_exactly_as_the_old_one(make):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    opt = make(model.parameters())
    for seed in range(3):
        _step(model, opt, seed)
    kept = optimizer_state_tensors(opt)
    twin = copy.deepcopy(model)
    fresh = make(twin.parameters())
    assert load_optimizer_state(fresh, kept)
    _step(model, opt, 99)
    _step(twin, fresh, 99)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.allclose(a, b, atol=1e-7)
    # and without the kept state the next step differs (the test can fail)
    cold = copy.deepcopy(twin)
    _step(twin, fresh, 100)
    _step(cold, make(cold.parameters()), 100)
    assert any(not torch.allclose(a, b) for a, b in zip(twin.parameters(), cold.parameters()))


def test_state_that_does_not_fit_the_model_is_ignored_and_changes_nothing():
    big = nn.Linear(4, 6)
    opt = torch.optim.SGD(big.parameters(), lr=0.1, momentum=0.9)
    _step(nn.Sequential(big, nn.Linear(6, 3)), opt, 0)
    other = nn.Linear(4, 5)
    fresh = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    assert not load_optimizer_state(fresh, optimizer_state_tensors(opt))
    assert not fresh.state_dict()["state"]
    assert not load_optimizer_state(fresh, {"weight": torch.zeros(1)})  # not "<index>.<name>"


def test_cosine_schedule_by_hand_and_constant_is_one():
    assert [lr_factor(schedule="cosine", server_round=r, num_rounds=4) for r in (1, 2, 3, 4)] == pytest.approx(
        [1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))])
    assert lr_factor(schedule="constant", server_round=7, num_rounds=3) == 1.0
    with pytest.raises(ValueError, match="1..num_rounds"):
        lr_factor(schedule="cosine", server_round=0, num_rounds=3)
    with pytest.raises(ValueError, match="constant, cosine"):
        lr_factor(schedule="step", server_round=1, num_rounds=3)
    with pytest.raises(ConfigError, match="lr-schedule"):
        RunConfig.from_flat({"lr-schedule": "step"})


CARRY = {**SMALL, "optimizer": "sgd", "learning-rate": 0.05, "weight-decay": 0.0}


def test_a_client_keeps_its_momentum_across_rounds_only_when_asked(flower_identity):
    from client.carry import STATE_KEY

    cfg = RunConfig.from_flat({**CARRY, "optimizer-state": "client"})
    ctx = _context(cfg, 0)
    replies = _run_rounds(cfg, ctx, 2)
    assert [r.content["metrics"]["optimizer-state-carried"] for r in replies] == [0, 1]
    kept = ctx.state.array_records[STATE_KEY].to_torch_state_dict()
    assert kept and all(k.endswith(".momentum_buffer") for k in kept)
    # the epsilon does not depend on it: momentum is post-processing of the noised gradients
    fresh_cfg = RunConfig.from_flat({**CARRY, "optimizer-state": "round"})
    fresh_ctx = _context(fresh_cfg, 0)
    fresh = _run_rounds(fresh_cfg, fresh_ctx, 2)
    assert [r.content["metrics"]["optimizer-state-carried"] for r in fresh] == [0, 0]
    assert STATE_KEY not in fresh_ctx.state.array_records
    assert [r.content["metrics"]["epsilon"] for r in fresh] == [r.content["metrics"]["epsilon"] for r in replies]
    sent = replies[1].content["arrays"].to_torch_state_dict()
    other = fresh[1].content["arrays"].to_torch_state_dict()
    assert any(not torch.equal(sent[k], other[k]) for k in sent)  # same seeds: only the momentum differs


def test_a_client_follows_the_cosine_schedule_round_by_round(flower_identity):
    cfg = RunConfig.from_flat({**CARRY, "lr-schedule": "cosine", "num-server-rounds": 3})
    replies = _run_rounds(cfg, _context(cfg, 0), 3)
    assert [r.content["metrics"]["round-learning-rate"] for r in replies] == pytest.approx(
        [0.05, 0.05 * 0.75, 0.05 * 0.25])
