"""Convergence tools: local work in steps (local-steps) and the server optimizers (FedAvgM, FedYogi)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from torch import nn

from fer_models.config import SERVER_LR_DEFAULTS, ConfigError, RunConfig
from fer_models.data.samples import ClipSet
from fer_models.training import engine
from server.strategy import make_strategy
from tests.test_client_privacy import SMALL, _context, _independent_epsilon, _run_rounds


def _tiny_data(n: int) -> ClipSet:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 8, 8), dtype=torch.uint8, generator=gen)
    return ClipSet(images=images, frames=torch.arange(n)[:, None], labels=torch.randint(0, 7, (n,), generator=gen))


class _Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 7)
        self.rows: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows.append(int(x.shape[0]))
        return self.fc(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize("steps", [3, 7, 16])
def test_local_steps_take_exactly_that_many_optimizer_steps_across_passes(steps):
    data = _tiny_data(20)  # 3 batches of 8 per pass (8, 8, 4): 7 and 16 steps need more than one pass
    model = _Counting()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = engine.index_loader(len(data), batch_size=8, seed=0)
    stats = engine.train(model=model, data=data, optimizer=opt, loader=loader, epochs=1, device=torch.device("cpu"),
                         max_steps=steps)
    assert stats.steps == steps and len(model.rows) == steps
    per_pass = [8, 8, 4]
    expected = (per_pass * (steps // 3 + 1))[:steps]
    assert model.rows == expected and stats.samples_seen == sum(expected)


def test_without_local_steps_the_epochs_decide():
    data = _tiny_data(20)
    model = _Counting()
    stats = engine.train(model=model, data=data, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                         loader=engine.index_loader(20, batch_size=8, seed=0), epochs=2, device=torch.device("cpu"))
    assert stats.steps == 6 and stats.samples_seen == 40


def test_a_dp_client_with_local_steps_composes_exactly_those_steps(flower_identity):
    cfg = RunConfig.from_flat({**SMALL, "local-steps": 5, "num-server-rounds": 2})
    replies = _run_rounds(cfg, _context(cfg, 0), 2)
    metrics = [r.content["metrics"] for r in replies]
    assert [m["dp-steps"] for m in metrics] == [5, 10]
    q = metrics[0]["sample-rate"]
    assert metrics[1]["epsilon"] == pytest.approx(_independent_epsilon(1.1, q, 10, cfg.target_delta), rel=1e-6)


def test_server_learning_rate_zero_resolves_to_the_strategy_default_and_names_it():
    for strategy, lr in SERVER_LR_DEFAULTS.items():
        cfg = RunConfig.from_flat({"strategy": strategy})
        assert cfg.server_learning_rate == lr and cfg.to_flat()["server-learning-rate"] == lr
    assert RunConfig.from_flat({"strategy": "fedavgm", "server-learning-rate": 0.5}).server_learning_rate == 0.5
    with pytest.raises(ConfigError, match="server-momentum"):
        RunConfig.from_flat({"strategy": "fedavgm", "server-momentum": 1.5})


def _reply(state: dict[str, np.ndarray], n: int) -> Message:
    content = RecordDict({"arrays": ArrayRecord({k: torch.from_numpy(v.copy()) for k, v in state.items()}),
                          "metrics": MetricRecord({"num-examples": n})})
    return Message(content=content, dst_node_id=1, message_type="train")


def test_fedavgm_moves_by_lr_times_the_momentum_of_the_averaged_updates(flower_identity):
    """Two rounds by hand: v1 = d1, v2 = beta * v1 + d2, w_r = w_{r-1} + lr * v_r (d = mean update)."""
    lr, beta = 0.7, 0.5
    strategy = make_strategy(RunConfig.from_flat({"strategy": "fedavgm", "server-learning-rate": lr,
                                                  "server-momentum": beta, "num-clients": 2}))
    w0 = {"w": np.zeros(3, dtype=np.float32)}
    strategy.current_arrays = ArrayRecord({k: torch.from_numpy(v) for k, v in w0.items()})  # configure_train's
    a, b = np.array([1.0, 2.0, 3.0], np.float32), np.array([3.0, 2.0, 1.0], np.float32)
    r1, _ = strategy.aggregate_train(1, [_reply({"w": a}, 1), _reply({"w": b}, 3)])
    d1 = (a * 1 + b * 3) / 4
    w1 = lr * d1
    np.testing.assert_allclose(r1.to_numpy_ndarrays()[0], w1, rtol=1e-6)
    c = np.array([0.0, 1.0, 0.0], np.float32)
    r2, _ = strategy.aggregate_train(2, [_reply({"w": w1 + c}, 1), _reply({"w": w1 + c}, 1)])
    v2 = beta * d1 + c
    np.testing.assert_allclose(r2.to_numpy_ndarrays()[0], w1 + lr * v2, rtol=1e-5)


def test_local_epoch_fraction_gives_each_client_steps_in_proportion_to_its_own_data():
    cfg = RunConfig.from_flat({"local-epoch-fraction": 1 / 3})
    # the Dirichlet 0.5 split of FER2013 over 10 clients holds clients of 689 and 9,815 images
    assert cfg.local_steps_for(num_samples=9815, batch_size=64) == 51  # 154 batches / 3 = 51.3
    assert cfg.local_steps_for(num_samples=689, batch_size=64) == 4  # 11 batches / 3 = 3.7
    half = RunConfig.from_flat({"local-epoch-fraction": 0.5})
    assert half.local_steps_for(num_samples=42, batch_size=16) == 2  # 3 batches / 2 = 1.5: half up
    assert cfg.local_steps_for(num_samples=20, batch_size=64) == 1  # never 0 (0 would mean whole epochs)
    assert RunConfig.from_flat({"local-steps": 15}).local_steps_for(num_samples=9815, batch_size=64) == 15
    assert RunConfig.from_flat({}).local_steps_for(num_samples=9815, batch_size=64) == 0  # local-epochs decide
    with pytest.raises(ConfigError, match="local-steps=15 and local-epoch-fraction=0.5"):
        RunConfig.from_flat({"local-steps": 15, "local-epoch-fraction": 0.5})


def test_a_client_with_a_local_epoch_fraction_sees_that_fraction_of_its_data(flower_identity):
    cfg = RunConfig.from_flat({**SMALL, "dp": "none", "local-epoch-fraction": 0.5, "num-server-rounds": 1})
    (reply,) = _run_rounds(cfg, _context(cfg, 0), 1)
    metrics = reply.content["metrics"]
    n = int(metrics["num-examples"])
    steps = int(0.5 * -(-n // 16) + 0.5)  # half of its ceil(n / 16) batches, rounded half up
    assert 1 <= steps <= n // 16  # whole batches only, less than one pass
    assert metrics["samples-seen"] == steps * 16


def test_a_dp_client_with_a_local_epoch_fraction_composes_fraction_over_sample_rate_steps(flower_identity):
    cfg = RunConfig.from_flat({**SMALL, "local-epoch-fraction": 0.5, "num-server-rounds": 2})
    replies = _run_rounds(cfg, _context(cfg, 0), 2)
    metrics = [r.content["metrics"] for r in replies]
    q = metrics[0]["sample-rate"]  # 1 / batches per epoch
    steps = int(0.5 / q + 0.5)
    assert steps >= 1 and [m["dp-steps"] for m in metrics] == [steps, 2 * steps]
    assert metrics[1]["epsilon"] == pytest.approx(_independent_epsilon(1.1, q, 2 * steps, cfg.target_delta), rel=1e-6)
