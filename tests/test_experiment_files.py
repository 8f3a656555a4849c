"""Every experiment file fedfer ships resolves to a valid run config (the paper grid has its own tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fer_models.config import RunConfig
from simulation.launch.experiment import read_experiment, resolve_config

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
    # every client passes over a third of its own data per round: 60 rounds = 20 epochs at every client
    assert cfg.local_steps == 0 and abs(cfg.num_server_rounds * cfg.local_epoch_fraction - 20) < 0.01
    # an IID tenth of FER2013's 28,709 Training images (2,870 or 2,871) takes 15 steps of 64, as measured
    assert {cfg.local_steps_for(num_samples=n, batch_size=cfg.batch_size) for n in (2870, 2871)} == {15}
    assert (cfg.strategy, cfg.frontend, cfg.model, cfg.optimizer_state) == ("fedavgm", "scatter", "cnn_rnn", "client")
