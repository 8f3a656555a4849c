"""Every experiment file fedfer ships resolves to a valid run config (the paper grid has its own tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fer_models.config import RunConfig
from simulation.experiment import read_experiment, resolve_config

EXPERIMENTS = sorted(p for p in (Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml")
                     if p.name != "paper.yaml")


def test_the_shipped_experiment_files_are_found():
    assert {p.name for p in EXPERIMENTS} >= {"fer2013-quick.yaml", "fer2013-federated.yaml"}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_each_experiment_file_resolves_and_its_values_take_effect(path: Path):
    values = read_experiment(path)
    cfg = resolve_config(experiment=path)
    flat = cfg.to_flat()
    for key, value in values.items():
        assert flat[key] == RunConfig.from_flat({key: value}).to_flat()[key], key


def test_the_federated_recipe_spends_twenty_epochs_of_fer2013():
    cfg = resolve_config(experiment=next(p for p in EXPERIMENTS if p.name == "fer2013-federated.yaml"))
    sample_gradients = cfg.num_server_rounds * cfg.num_clients * cfg.local_steps * cfg.batch_size
    assert abs(sample_gradients / 28_709 - 20) < 0.1
    assert (cfg.strategy, cfg.frontend, cfg.model, cfg.optimizer_state) == ("fedavgm", "scatter", "cnn_rnn", "client")
