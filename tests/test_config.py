"""The run config: one set of keys and defaults, strict parsing, experiment files."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fer_models.config import ConfigError, RunConfig, default_flat
from simulation.launch.experiment import ExperimentError, parse_sets, read_experiment, resolve_config

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_app_config_equals_the_typed_defaults():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["flwr"]["app"]["config"] == default_flat()


def test_pyproject_config_parses_into_the_typed_config():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert RunConfig.from_flat(pyproject["tool"]["flwr"]["app"]["config"]) == RunConfig()


def test_unknown_key_is_refused_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown key 'num-round'.*did you mean 'num-server-rounds'"):
        RunConfig.from_flat({"num-round": 3})


FLOAT_KEYS = [k for k, v in default_flat().items() if isinstance(v, float)]


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", float("nan"), float("inf")])
def test_nan_and_infinity_are_refused_for_every_float_key(key, value):
    with pytest.raises(ConfigError, match=rf"{key}=.*finite number"):
        RunConfig.from_flat({key: value})


def test_learning_rate_nan_is_refused_from_the_command_line():
    with pytest.raises(ConfigError, match="learning-rate='nan'.*finite"):
        resolve_config(experiment=None, sets=["learning-rate=nan"], extra={})


@pytest.mark.parametrize("key, value, expected", [
    ("num-server-rounds", "three", "expected an integer"),
    ("num-server-rounds", 2.5, "expected an integer"),
    ("learning-rate", "fast", "expected a number"),
    ("dp", "maybe", "expected one of none, sample, client"),
    ("fraction-train", 1.5, "must be <= 1.0"),
    ("num-clients", 0, "must be >= 1"),
    ("overwrite", "perhaps", "expected true or false"),
])
def test_bad_values_name_the_key_and_what_is_expected(key, value, expected):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_flat({key: value})
    assert key in str(err.value) and expected in str(err.value)


def test_string_values_from_the_command_line_are_coerced_by_type():
    cfg = RunConfig.from_flat(parse_sets(["num-server-rounds=7", "learning-rate=0.01", "overwrite=true"]))
    assert (cfg.num_server_rounds, cfg.learning_rate, cfg.overwrite) == (7, 0.01, True)


def test_config_is_frozen():
    cfg = RunConfig()
    with pytest.raises(Exception):
        cfg.seed = 3  # type: ignore[misc]


def test_dp_sample_without_noise_or_target_is_refused():
    with pytest.raises(ConfigError, match="noise-multiplier > 0 or target-epsilon > 0"):
        RunConfig.from_flat({"dp": "sample", "noise-multiplier": 0.0})


def test_experiment_file_holds_only_overrides_and_chains_bases(tmp_path):
    (tmp_path / "base.yaml").write_text("num-clients: 6\nlocal-epochs: 2\n")
    (tmp_path / "variant.yaml").write_text("base: base.yaml\nlocal-epochs: 3\n")
    cfg = resolve_config(experiment=tmp_path / "variant.yaml", sets=["seed=4"])
    assert (cfg.num_clients, cfg.local_epochs, cfg.seed) == (6, 3, 4)
    assert cfg.batch_size == RunConfig().batch_size


def test_experiment_file_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("num-clients: 4\nlocal-epochs: [1\n")
    with pytest.raises(ExperimentError, match=r"bad\.yaml line \d+"):
        read_experiment(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("num-clinets: 4\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml.*unknown key 'num-clinets'"):
        read_experiment(typo)
    with pytest.raises(ExperimentError, match="does not exist"):
        read_experiment(tmp_path / "missing.yaml")


def test_set_without_equals_sign_is_refused():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_sets(["num-server-rounds"])


def test_a_checkpoint_from_before_a_new_key_resumes_while_the_key_keeps_its_default():
    from server.checkpoint import CheckpointError, check_resumable

    saved = RunConfig().to_flat()
    del saved["max-update-norm-ratio"]  # written before the key existed
    check_resumable(saved, RunConfig())
    with pytest.raises(CheckpointError, match=r"max-update-norm-ratio: checkpoint has 100.0, this run has 5.0"):
        check_resumable(saved, RunConfig.from_flat({"max-update-norm-ratio": 5}))
