"""Public pre-training on the synthetic faces: the initial model moves away from its random
init and learns the synthetic task; the tuned DP recipe switches it on, plain runs do not."""

from __future__ import annotations

import pytest
import torch

from fer_models.config import RunConfig
from fer_models.config.recipe import TUNED
from fer_models.federation.pretrain import initial_model, pretrain_on_synthetic
from fer_models.models.from_config import build_model

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = {"synthetic-per-class": 80, "synthetic-eval-per-class": 20}


def test_pretraining_changes_the_initial_weights_and_learns_the_synthetic_task():
    cfg = RunConfig.from_flat({**SMALL, "pretrain-epochs": 10})
    random_init = build_model(cfg).state_dict()
    model = build_model(cfg)
    accuracy = pretrain_on_synthetic(model, cfg=cfg, epochs=10)
    assert accuracy > 2 / 7  # chance is 1/7
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, random_init[k])]
    assert moved, "pre-training left every weight at its random init"
    assert model.training  # handed back ready for (DP) training


def test_without_pretraining_the_initial_model_is_the_seeded_random_init():
    cfg = RunConfig.from_flat(SMALL)
    a, b = initial_model(cfg).state_dict(), build_model(cfg).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_tuned_dp_recipe_pretrains_and_dp_recipe_none_does_not():
    tuned = RunConfig.from_flat({"dp": "sample", "target-epsilon": 8.0})
    assert tuned.pretrain_epochs == TUNED.pretrain_epochs > 0  # the resolved config says what runs
    assert RunConfig.from_flat({"dp": "sample", "target-epsilon": 8.0, "dp-recipe": "none"}).pretrain_epochs == 0
    assert RunConfig.from_flat({"pretrain-epochs": 3}).pretrain_epochs == 3


def _cached_cfg(tmp_path, **extra):
    return RunConfig.from_flat({**SMALL, "pretrain-epochs": 2, "cache-dir": str(tmp_path / "cache"), **extra})


def test_a_second_run_loads_the_pretrained_model_from_the_cache_instead_of_training(tmp_path, monkeypatch):
    cfg = _cached_cfg(tmp_path)
    first = initial_model(cfg).state_dict()
    assert len(list((tmp_path / "cache" / "pretrained").glob("*.pt"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("pre-trained again although the cache holds this model")

    monkeypatch.setattr("fer_models.federation.pretrain.pretrain_on_synthetic", no_training)
    again = initial_model(cfg).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], v) for k, v in build_model(cfg).state_dict().items())  # it did train


def test_the_cache_misses_when_anything_that_decides_the_pretrained_weights_changes(tmp_path):
    from fer_models.federation.pretrain import pretrain_cache_path

    base = _cached_cfg(tmp_path)
    key = pretrain_cache_path(build_model(base), cfg=base)
    assert key == pretrain_cache_path(build_model(base), cfg=_cached_cfg(tmp_path, **{"num-clients": 7}))
    for change in ({"pretrain-epochs": 3}, {"seed": 1}, {"model": "cnn"}, {"activation": "tanh"}, {"synthetic-per-class": 81},
                   {"clip-length": 3}):
        cfg = _cached_cfg(tmp_path, **change)
        assert pretrain_cache_path(build_model(cfg), cfg=cfg) != key, change


def test_an_unreadable_cache_file_is_pretrained_again_and_replaced(tmp_path, caplog):
    from fer_models.federation.pretrain import pretrain_cache_path

    cfg = _cached_cfg(tmp_path)
    path = pretrain_cache_path(build_model(cfg), cfg=cfg)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    trained = initial_model(cfg).state_dict()
    assert "unreadable" in caplog.text
    assert torch.load(path, weights_only=True).keys() == trained.keys()
