"""The DP recipe's augmentation multiplicity and EMA: per-sample gradients stay per sample (not
per view), and the privacy accounting is exactly that of plain DP-SGD."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from opacus import GradSampleModule

from fer_models.config import ConfigError, RunConfig
from fer_models.federation.task import client_data
from fer_models.models import create_model, list_models
from fer_models.privacy.sgd_helpers import WeightEMA, average_views
from tests.test_client_privacy import SMALL, _context, _run_rounds


@pytest.mark.parametrize("name", list_models())
def test_multiplicity_gives_one_gradient_per_sample_equal_to_the_mean_over_its_views(name):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = create_model(name, dropout=0.0).double()
    b, k = 3, 4
    views = torch.randn(b * k, 2, 1, 48, 48, dtype=torch.float64)  # sample-major: sample 0's 4 views first
    y = torch.randint(0, 7, (b,)).repeat_interleave(k)
    gsm = GradSampleModule(copy.deepcopy(model))
    F.cross_entropy(gsm(views), y).backward()
    average_views(gsm, views=k)
    for (pname, p), p_ref in zip(gsm._module.named_parameters(), model.parameters()):
        assert p.grad_sample.shape[0] == b, f"{pname}: {p.grad_sample.shape[0]} rows, expected one per sample"
    for i in range(b):
        expected = [torch.zeros_like(p) for p in model.parameters()]
        for j in range(k):
            model.zero_grad()
            F.cross_entropy(model(views[i * k + j:i * k + j + 1]), y[i * k + j:i * k + j + 1]).backward()
            for e, p in zip(expected, model.parameters()):
                e += p.grad / k
        for (pname, p), e in zip(gsm._module.named_parameters(), expected):
            assert torch.allclose(p.grad_sample[i], e, atol=1e-8), pname


def test_average_views_refuses_rows_that_do_not_split_into_views():
    model = GradSampleModule(torch.nn.Linear(3, 2))
    F.cross_entropy(model(torch.randn(5, 3)), torch.zeros(5, dtype=torch.long)).backward()
    with pytest.raises(ValueError, match="multiple of 2 views"):
        average_views(model, views=2)


def test_ema_follows_the_weights_with_the_configured_decay():
    lin = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(0.0)
    ema = WeightEMA(lin, decay=0.9)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema.update(lin)
    ema.update(lin)
    assert torch.allclose(ema.state_dict()["weight"], torch.full((1, 2), 1 - 0.9 ** 2))


def test_epsilon_is_identical_with_and_without_multiplicity_and_ema(flower_identity):
    plain = RunConfig.from_flat({**SMALL, "augment": "standard"})
    recipe = RunConfig.from_flat({**SMALL, "augment": "standard", "augment-multiplicity": 3, "ema-decay": 0.9,
                                  "physical-batch-size": 8})
    eps = []
    for cfg in (plain, recipe):
        replies = _run_rounds(cfg, _context(cfg, 0), 2)
        eps.append([float(r.content["metrics"]["epsilon"]) for r in replies])
        steps = [int(r.content["metrics"]["dp-steps"]) for r in replies]
        assert steps[1] == 2 * steps[0]
    assert eps[0] == eps[1]


def test_ema_weights_are_what_the_client_sends(flower_identity, predictable_privacy_randomness):
    cfg = RunConfig.from_flat({**SMALL, "ema-decay": 0.5})
    sent = _run_rounds(cfg, _context(cfg, 0), 1)[0].content["arrays"].to_torch_state_dict()
    no_ema = RunConfig.from_flat(SMALL)
    raw = _run_rounds(no_ema, _context(no_ema, 0), 1)[0].content["arrays"].to_torch_state_dict()
    assert any(not torch.equal(sent[k], raw[k]) for k in sent)  # same seeds and (test-only) predictable DP noise, so only the EMA differs


def test_multiplicity_without_augmentation_is_refused():
    from fer_models.config import ConfigError

    with pytest.raises(ConfigError, match="augment=standard"):
        RunConfig.from_flat({"augment-multiplicity": 4})


# --- the tuned recipe's hyper-parameters --------------------------------------------------------

def test_tuned_recipe_sizes_the_batch_to_the_clients_data_and_scales_the_learning_rate():
    from fer_models.config.recipe import TUNED, training_hyperparams

    cfg = RunConfig.from_flat({"dp": "sample", "target-epsilon": 8.0})
    big = training_hyperparams(cfg, num_samples=28_709)
    assert big.batch_size == TUNED.max_batch and big.learning_rate == pytest.approx(TUNED.learning_rate)
    small = training_hyperparams(cfg, num_samples=2_000)  # a federated client: >= 16 steps per epoch
    assert small.batch_size == 2_000 // TUNED.min_steps_per_epoch
    assert small.learning_rate == pytest.approx(TUNED.learning_rate * small.batch_size / TUNED.max_batch)
    assert small.physical_batch_size <= small.batch_size
    tiny = training_hyperparams(cfg, num_samples=100)
    assert tiny.batch_size == TUNED.min_batch
    assert (big.optimizer, big.max_grad_norm, big.ema_decay) == (TUNED.optimizer, TUNED.max_grad_norm,
                                                                 TUNED.ema_decay)
    assert (big.optimizer_state, big.lr_schedule) == (TUNED.optimizer_state, TUNED.lr_schedule)


@pytest.mark.parametrize("flat", [{"dp": "none", "batch-size": 32, "learning-rate": 0.01},
                                  {"dp": "sample", "noise-multiplier": 1.0, "dp-recipe": "none", "batch-size": 32,
                                   "learning-rate": 0.01}])
def test_without_the_recipe_the_configured_keys_are_used_as_set(flat):
    from fer_models.config.recipe import training_hyperparams

    hp = training_hyperparams(RunConfig.from_flat(flat), num_samples=28_709)
    assert (hp.batch_size, hp.learning_rate) == (32, 0.01)


def test_setting_a_recipe_key_under_the_tuned_recipe_is_refused_naming_it_and_the_way_out():
    from simulation.launch.experiment import resolve_config

    with pytest.raises(ConfigError, match=r"batch-size.*dp-recipe=none"):
        resolve_config(sets=["dp=sample", "target-epsilon=8", "batch-size=128"])
    cfg = resolve_config(sets=["dp=sample", "target-epsilon=8", "batch-size=128", "dp-recipe=none"])
    assert cfg.batch_size == 128
    assert resolve_config(sets=["batch-size=128"]).batch_size == 128  # no DP: no recipe


def test_flwr_run_refuses_a_recipe_key_with_the_clis_message_and_resolves_the_recipe_once():
    """`flwr run` hands the ServerApp and ClientApp every key (defaults included): RunConfig.from_flat
    itself refuses a recipe key set to another value, and the config it returns is what runs."""
    from fer_models.config import default_flat
    from fer_models.config.recipe import TUNED

    with pytest.raises(ConfigError, match=r"run config: batch-size set while dp=sample.*dp-recipe=none"):
        RunConfig.from_flat({**default_flat(), "dp": "sample", "target-epsilon": 8.0, "batch-size": 32})
    cfg = RunConfig.from_flat({**default_flat(), "dp": "sample", "target-epsilon": 8.0})
    assert (cfg.optimizer, cfg.learning_rate, cfg.max_grad_norm, cfg.batch_size, cfg.frontend) == (
        TUNED.optimizer, TUNED.learning_rate, TUNED.max_grad_norm, TUNED.max_batch, TUNED.frontend)
    assert RunConfig.from_flat(cfg.to_flat()) == cfg  # the resolved config reads back as itself


def test_a_dp_client_trains_with_the_recipes_batch_and_reports_it(flower_identity):
    from fer_models.config.recipe import RECIPE_KEYS, training_hyperparams

    cfg = RunConfig.from_flat({**{k: v for k, v in SMALL.items() if k not in RECIPE_KEYS}, "dp-recipe": "tuned",
                               "num-server-rounds": 1})
    n = len(client_data(cfg, partition_id=0, num_partitions=cfg.num_clients))
    expected = training_hyperparams(cfg, num_samples=n)
    reply = _run_rounds(cfg, _context(cfg, 0), rounds=1)[-1]
    assert not reply.has_error()
    metrics = reply.content["metrics"]
    assert metrics["batch-size"] == expected.batch_size
    assert metrics["learning-rate"] == pytest.approx(expected.learning_rate)
    assert metrics["sample-rate"] == pytest.approx(1.0 / -(-n // expected.batch_size))
