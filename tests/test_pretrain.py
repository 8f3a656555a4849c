"""Public pre-training on the synthetic faces: the initial model moves away from its random
init and learns the synthetic task; the tuned DP recipe switches it on, plain runs do not."""

from __future__ import annotations

import pytest
import torch

from fer_models.config import RunConfig
from fer_models.dp_recipe import TUNED
from fer_models.pretrain import initial_model, pretrain_on_synthetic
from fer_models.task import build_model

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
