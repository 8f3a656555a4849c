"""Every grad-sample mode fedfer offers (the default `ew` included) gives the exact DP-SGD update:
with zero noise, Opacus's clipped, averaged gradient equals one computed sample by sample."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from fer_models.config import RunConfig
from fer_models.models import create_model, list_models
from fer_models.privacy.dp_sgd import PrivacyLedger, make_private
from fer_models.training.engine import index_loader
from tests.dp_reference import clipped_mean_by_hand

pytestmark = pytest.mark.usefixtures("one_thread")
CLIP = 0.5


#: every model at its defaults, and the stronger encoders' stages (small widths) in the hybrid model
MODELS = [(name, {}) for name in list_models()] + [
    ("cnn_rnn", {"stage": stage, "channels": (8, 16, 16, 24)}) for stage in ("double", "residual")]


@pytest.mark.parametrize("mode", ["hooks", "ew", "functorch"])
@pytest.mark.parametrize("name,options", MODELS, ids=[n + "".join(f"-{v}" for v in o.values() if isinstance(v, str))
                                                      for n, o in MODELS])
def test_clipped_update_equals_per_sample_computation(name, options, mode):
    torch.manual_seed(0)
    model = create_model(name, dropout=0.0, **options)
    x, y = torch.randn(6, 3, 1, 48, 48), torch.randint(0, 7, (6,))
    expected = clipped_mean_by_hand(copy.deepcopy(model), x, y, clip=CLIP)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    parts = make_private(model=model, optimizer=opt, loader=index_loader(6, batch_size=6, seed=0),
                         noise_multiplier=1e-12, max_grad_norm=CLIP, ledger=PrivacyLedger(), grad_sample_mode=mode)
    parts.optimizer.expected_batch_size = len(x)
    parts.optimizer.zero_grad()
    F.cross_entropy(parts.model(x), y).backward()
    parts.optimizer.pre_step()
    for (pname, p), e in zip(parts.model.named_parameters(), expected):
        assert torch.allclose(p.grad, e, atol=1e-5, rtol=1e-3), f"{name}/{mode}: {pname}"


def test_default_mode_is_one_of_the_checked_ones():
    assert RunConfig().grad_sample_mode in ("hooks", "ew", "functorch")


@pytest.mark.parametrize("mode", ["hooks", "ew"])
def test_an_empty_poisson_batch_is_a_noise_only_step(mode):
    from fer_models.data.samples import static_clips
    from fer_models.data.synthetic import generate_synthetic
    from fer_models.training import engine

    torch.manual_seed(0)
    model = create_model("cnn", dropout=0.0)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    parts = make_private(model=model, optimizer=opt, loader=index_loader(6, batch_size=6, seed=0),
                         noise_multiplier=1.0, max_grad_norm=CLIP, ledger=PrivacyLedger(), grad_sample_mode=mode)
    store = generate_synthetic(per_class=1, eval_per_class=1, seed=0)
    data = static_clips(store, store.indices("train")[:6])
    empty = [(torch.zeros(0, dtype=torch.long),)]  # what Poisson sampling draws now and then
    stats = engine.train(model=parts.model, data=data, optimizer=parts.optimizer, loader=empty, epochs=1,
                         device=torch.device("cpu"))
    assert stats.steps == 1 and stats.samples_seen == 0
    moved = [float((p.detach() - b).std()) for p, b in zip(parts.model.parameters(), before)]
    # pure noise of std sigma * C / expected batch (6 * 1/1) moved every parameter
    assert all(m == pytest.approx(CLIP / 6, rel=0.5) for m, p in zip(moved, before) if p.numel() > 100)
