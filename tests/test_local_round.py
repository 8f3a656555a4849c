"""The core's local round (fer_models.training.local_round) without Flower: the weights it returns are those of
the engine run by hand with the same seed, its epsilon is an independent RDP recount of the steps it took, and
a round over the budget is refused before any gradient."""

from __future__ import annotations

import pytest
import torch
from opacus.accountants import RDPAccountant

from fer_models.config import RunConfig
from fer_models.federation.task import client_data
from fer_models.models.from_config import build_model
from fer_models.privacy.dp_sgd import PrivacyLedger
from fer_models.training import engine
from fer_models.training.local_round import BudgetRefusal, local_round, round_seed
from fer_models.training.private_plan import plan_private_round

pytestmark = pytest.mark.usefixtures("one_thread")

# one client of 42 images, batch 16: q = 1/3, 3 DP steps per epoch, 3 local epochs
SMALL = {"synthetic-per-class": 12, "synthetic-eval-per-class": 4, "num-clients": 2, "batch-size": 16,
         "min-client-samples": 4, "num-server-rounds": 2}
DP = {**SMALL, "dp": "sample", "dp-recipe": "none", "noise-multiplier": 1.1, "max-grad-norm": 1.0}
CPU = torch.device("cpu")


def _start(cfg: RunConfig) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.clone() for k, v in build_model(cfg).state_dict().items()}


def _by_hand(cfg: RunConfig, data, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, seed: int) -> None:
    """The non-private round written out from the engine's parts (model and optimizer already set up)."""
    torch.manual_seed(seed)
    loader = engine.index_loader(len(data), batch_size=min(cfg.batch_size, len(data)), seed=seed)
    engine.train(model=model, data=data, optimizer=optimizer, loader=loader, epochs=cfg.local_epochs, device=CPU)


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_non_private_round_gives_exactly_the_weights_of_the_engine_run_by_hand_with_the_same_seed():
    cfg = RunConfig.from_flat({**SMALL, "optimizer": "sgd", "momentum": 0.9, "optimizer-state": "client"})
    data = client_data(cfg, partition_id=0, num_partitions=2)
    start = _start(cfg)
    seeds = [round_seed(cfg, 0, r) for r in (1, 2)]
    assert len(set(seeds)) == 2  # a fresh seed per round
    first = local_round(cfg=cfg, train=data, global_state=start, seed=seeds[0], server_round=1, private=None,
                        device=CPU)
    second = local_round(cfg=cfg, train=data, global_state=first.state, seed=seeds[1], server_round=2, private=None,
                         optimizer_state=first.optimizer_state, device=CPU)
    # by hand: one model and one optimizer through both rounds (the momentum carried, as optimizer-state=client)
    model = build_model(cfg)
    model.load_state_dict(start)
    optimizer = engine.make_optimizer(model, name="sgd", learning_rate=cfg.learning_rate,
                                      weight_decay=cfg.weight_decay, momentum=0.9)
    _by_hand(cfg, data, model, optimizer, seed=seeds[0])
    after_one = {k: v.detach().clone() for k, v in model.state_dict().items()}
    _by_hand(cfg, data, model, optimizer, seed=seeds[1])
    assert _equal(first.state, after_one) and not first.optimizer_state_carried
    assert _equal(second.state, model.state_dict()) and second.optimizer_state_carried
    assert first.stats.samples_seen == cfg.local_epochs * len(data) and first.stats.num_examples == len(data)
    assert first.epsilon is None and first.ledger is None and first.learning_rate == cfg.learning_rate
    # control: without the carried momentum the second round differs (the comparison can fail)
    cold = local_round(cfg=cfg, train=data, global_state=first.state, seed=seeds[1], server_round=2, private=None,
                       device=CPU)
    assert not cold.optimizer_state_carried and not _equal(cold.state, second.state)


def test_a_private_round_reports_the_epsilon_of_an_independent_rdp_recount_over_the_whole_history():
    cfg = RunConfig.from_flat(DP)
    data = client_data(cfg, partition_id=0, num_partitions=2)
    assert len(data) == 42
    before = PrivacyLedger("rdp", ((1.1, 1 / 3, 9),))  # a lineage that already trained one round
    plan = plan_private_round(cfg=cfg, ledger=before, num_samples=len(data), slots=len(data), units=len(data))
    assert (plan.noise, plan.sample_rate, plan.steps) == (1.1, pytest.approx(1 / 3), 9)  # 3 epochs x int(1/q)
    result = local_round(cfg=cfg, train=data, global_state=_start(cfg), seed=round_seed(cfg, 0, 2), server_round=2,
                         private=plan, device=CPU)
    assert (result.noise_multiplier, result.sample_rate, result.dp_steps) == (1.1, plan.sample_rate, 18)
    acc = RDPAccountant()
    for _ in range(result.dp_steps):
        acc.step(noise_multiplier=result.noise_multiplier, sample_rate=result.sample_rate)
    assert result.epsilon == pytest.approx(acc.get_epsilon(delta=cfg.target_delta), rel=1e-9)
    assert result.ledger is not None and result.ledger.total_steps == 18
    assert result.ledger.epsilon(delta=cfg.target_delta) == pytest.approx(result.epsilon)
    assert not any(k.startswith("_module.") for k in result.state)  # the server's key names, not Opacus'


def test_a_plan_over_the_run_budget_is_refused_before_any_gradient(trained):
    spent = PrivacyLedger("rdp", ((1.1, 1 / 3, 9),))
    eps_spent = spent.epsilon(delta=1e-5)
    cfg = RunConfig.from_flat({**DP, "epsilon-budget": eps_spent * 1.2})  # a second round would exceed it
    data = client_data(cfg, partition_id=0, num_partitions=2)
    plan = plan_private_round(cfg=cfg, ledger=spent, num_samples=len(data), slots=len(data), units=len(data))
    with pytest.raises(BudgetRefusal, match="over the budget"):
        local_round(cfg=cfg, train=data, global_state=_start(cfg), seed=1, server_round=2, private=plan, device=CPU)
    assert trained == []
    # control: the same plan under a budget that holds two rounds trains (the spy does see training)
    roomy = RunConfig.from_flat({**DP, "epsilon-budget": plan.projected().epsilon(delta=1e-5) * 1.01})
    result = local_round(cfg=roomy, train=data, global_state=_start(cfg), seed=1, server_round=2, private=plan,
                         device=CPU)
    assert trained == [1] and result.dp_steps == 18


def test_the_plan_must_match_the_run_dp_mode():
    cfg = RunConfig.from_flat(DP)
    data = client_data(cfg, partition_id=0, num_partitions=2)
    with pytest.raises(ValueError, match="dp=sample needs private=a PrivateRoundPlan"):
        local_round(cfg=cfg, train=data, global_state=_start(cfg), seed=1, server_round=1, private=None)
    plan = plan_private_round(cfg=cfg, ledger=PrivacyLedger(), num_samples=len(data), slots=len(data),
                              units=len(data))
    plain = RunConfig.from_flat(SMALL)
    with pytest.raises(ValueError, match="dp=none needs private=None"):
        local_round(cfg=plain, train=data, global_state=_start(plain), seed=1, server_round=1, private=plan)
