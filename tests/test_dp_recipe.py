"""The DP recipe's augmentation multiplicity and EMA: per-sample gradients stay per sample (not
per view), and the privacy accounting is exactly that of plain DP-SGD."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from opacus import GradSampleModule

from fer_models.dp_recipe import WeightEMA, average_views
from fer_models.models import create_model, list_models
from tests.test_client_privacy import SMALL, _context, _run_rounds
from fer_models.config import RunConfig


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


def test_ema_weights_are_what_the_client_sends(flower_identity):
    cfg = RunConfig.from_flat({**SMALL, "ema-decay": 0.5})
    sent = _run_rounds(cfg, _context(cfg, 0), 1)[0].content["arrays"].to_torch_state_dict()
    no_ema = RunConfig.from_flat(SMALL)
    raw = _run_rounds(no_ema, _context(no_ema, 0), 1)[0].content["arrays"].to_torch_state_dict()
    assert any(not torch.equal(sent[k], raw[k]) for k in sent)  # same seeds, so only the EMA differs


def test_multiplicity_without_augmentation_is_refused():
    from fer_models.config import ConfigError

    with pytest.raises(ConfigError, match="augment=standard"):
        RunConfig.from_flat({"augment-multiplicity": 4})
