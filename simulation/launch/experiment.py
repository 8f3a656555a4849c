"""Experiment files: a YAML mapping of run settings holding only what differs from the defaults.

``base: other.yaml`` (relative to the file) chains a small override file onto another one.
``sites: {clinic: data/clinic.csv, lab: /srv/lab}`` (paths relative to the file) runs one virtual
client per site on its own data: ``client-data=site``, ``data-path`` = the name=path list and
``num-clients`` = the number of sites.
``--set key=value`` pairs are applied last. The result is one :class:`RunConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml

from fer_models.config import ConfigError, RunConfig, check_values


class ExperimentError(ConfigError):
    """An experiment file that cannot be read or holds something other than settings."""


def read_yaml_mapping(path: Path, *, error: type[ConfigError], expected: str) -> dict[str, Any]:
    """The YAML mapping in ``path``; a parse error names the line, anything else says what was expected."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise error(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected {expected}, got {type(data).__name__}")
    return data


def read_experiment(path: Path, *, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Flat settings from a YAML file (following ``base:`` chains), validated key by key later."""
    path = Path(path)
    if not path.is_file():
        raise ExperimentError(f"experiment file {path} does not exist")
    if path.resolve() in _seen:
        raise ExperimentError(f"{path}: 'base' chain loops back to itself")
    data = read_yaml_mapping(path, error=ExperimentError,
                             expected="a mapping of key: value settings")
    values: dict[str, Any] = {}
    base = data.pop("base", None)
    if base is not None:
        values.update(read_experiment(path.parent / str(base), _seen=_seen + (path.resolve(),)))
    sites = data.pop("sites", None)
    if sites is not None:
        values.update(_site_settings(sites, path=path))
    for key, value in data.items():
        if isinstance(value, (dict, list)):
            raise ExperimentError(f"{path}: {key} must be a single value, got a {type(value).__name__}")
        values[str(key)] = value
    RunConfig.from_flat({**RunConfig().to_flat(), **values}, source=str(path))  # validate early
    return values


def _site_settings(sites: Any, *, path: Path) -> dict[str, Any]:
    if not isinstance(sites, dict) or not sites or not all(isinstance(v, str) and v for v in sites.values()):
        raise ExperimentError(f"{path}: sites must map each site's name to its data path, e.g. "
                              f"sites: {{clinic: data/clinic.csv, lab: /srv/lab}}")
    paths = {str(name): (path.parent / Path(p).expanduser()).resolve() for name, p in sites.items()}
    return {"client-data": "site", "num-clients": len(paths),
            "data-path": ",".join(f"{name}={p}" for name, p in paths.items())}


def parse_sets(pairs: Iterable[str]) -> dict[str, str]:
    """``["key=value", ...]`` → dict (values stay strings; RunConfig coerces them by type)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. --set num-server-rounds=3")
        out[key.strip()] = value.strip()
    return out


def resolve_config(*, experiment: Path | None = None, sets: Iterable[str] = (),
                   extra: dict[str, Any] | None = None) -> RunConfig:
    """Defaults ← experiment file ← ``extra`` (CLI flags) ← ``--set`` pairs."""
    values: dict[str, Any] = {}
    if experiment is not None:
        values.update(read_experiment(experiment))
    values.update(extra or {})
    set_values = parse_sets(sets)
    check_values(set_values, source="--set")  # a bad --set value is blamed on --set, not on the file
    values.update(set_values)
    source = f"{experiment} with --set" if experiment and set_values else str(experiment) if experiment else "--set"
    return RunConfig.from_flat(values, source=source)  # refuses recipe keys under dp=sample (config.py)
