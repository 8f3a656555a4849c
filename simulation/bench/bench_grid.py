"""A benchmark grid file: strategies x settings, with per-profile budgets (``experiments/paper.yaml``).

Sections: ``common`` (optional), ``strategies``, ``settings`` and ``profiles``; each entry holds run
settings (``fedfer config`` keys). A profile also holds ``epochs``: the sample-gradient passes over
the training set that *every* cell of the profile gets, and a federated round's local work: ``local-epochs``
(whole passes, default 1) or ``local-epoch-fraction`` (a fraction of each client's own epoch). A strategy or
setting may state its own local work (a recipe's choice, e.g. DP-SGD's whole-epoch rounds): its federated
cells then run epochs / local work rounds, so the budget stays the same. The keys that would let cells differ in
that budget are set here, never in the file (see :data:`MANAGED`). Everything is validated when
the file is read, every cell of every profile included, so a typo fails before anything runs.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from fer_models.config import ConfigError, RunConfig, local_work_key
from simulation.launch.experiment import read_yaml_mapping

SECTIONS = ("common", "strategies", "settings", "profiles")
#: Grid-only profile keys (not run settings).
PROFILE_EXTRAS = ("epochs", "local-epochs", "local-epoch-fraction", "federated-fraction", "budget-minutes")
#: Keys the budget and the bench set for every cell; a grid file may not set them.
MANAGED = ("num-server-rounds", "local-epochs", "local-steps", "local-epoch-fraction", "fraction-train", "data-path",
           "out-dir", "overwrite", "resume-from", "run-name")
#: Keys that change how many sample gradients a cell computes: profile-wide only.
BUDGET_KEYS = ("epochs", "federated-fraction", "max-train-samples")
#: A federated round's local work: the profile's, or a strategy's or setting's own (the rounds follow from it).
LOCAL_WORK = ("local-epochs", "local-epoch-fraction")
#: Rounds and epochs are planned to this precision (a third written as 0.33333 plans 9 rounds for 3 epochs).
_PLAN_TOLERANCE = 1e-3


class GridError(ConfigError):
    """A grid file that cannot be read, or holds an unknown or misplaced key."""


@dataclass(frozen=True)
class Cell:
    """One table cell: a strategy under a setting, with every run setting it is launched with."""

    strategy: str
    setting: str
    values: Mapping[str, Any]  # flat run settings, without data-path / out-dir

    @property
    def name(self) -> str:
        return f"{self.strategy}/{self.setting}"

    @property
    def dirname(self) -> str:
        return f"{self.strategy}-{self.setting}"

    @property
    def epochs(self) -> float:
        """Planned passes over the training set: fraction-train x rounds x (local-epoch-fraction, else local
        epochs), to 3 decimals (a third written as 0.33333)."""
        v = self.values
        local = float(v[local_work_key(v)])  # the bench never sets local-steps (MANAGED)
        return round(float(v["fraction-train"]) * int(v["num-server-rounds"]) * local, 3)


@dataclass(frozen=True)
class Grid:
    path: Path
    common: Mapping[str, Any]
    strategies: Mapping[str, Mapping[str, Any]]
    settings: Mapping[str, Mapping[str, Any]]
    profiles: Mapping[str, Mapping[str, Any]]

    def profile(self, name: str, *, sets: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A profile's values with ``sets`` (``--set`` on the bench command) applied; checked."""
        if name not in self.profiles:
            raise GridError(f"{self.path}: no profile {name!r}{_hint(name, self.profiles)}; "
                            f"profiles: {', '.join(self.profiles)}")
        sets = dict(sets or {})
        _check_keys(sets, where=f"{self.path} (--set)", extra=PROFILE_EXTRAS)
        values = {**self.profiles[name], **sets}
        where = f"{self.path}: profiles.{name}"
        _federated_rounds(_positive_int(values, "epochs", where=where), local_work(values, where=where),
                          federated_fraction(values, where=where), where=where)
        return values

    def cells(self, profile: str, *, sets: Mapping[str, Any] | None = None) -> list[Cell]:
        """Every cell of ``profile``, strategies outer, settings inner, each validated as a RunConfig."""
        prof = self.profile(profile, sets=sets)
        epochs, fraction = int(prof["epochs"]), federated_fraction(prof, where=f"{self.path}: profiles.{profile}")
        run_values = {k: v for k, v in prof.items() if k not in PROFILE_EXTRAS}
        out = []
        for strategy, s_values in self.strategies.items():
            for setting, t_values in self.settings.items():
                values = {**self.common, **run_values, **s_values, **t_values}
                centralized = int(values.get("num-clients", RunConfig().num_clients)) == 1
                own = {k: v for entry in (s_values, t_values) for k, v in entry.items() if k in LOCAL_WORK}
                where = f"{self.path}: {strategy}/{setting}" if own else f"{self.path}: profiles.{profile}"
                local, key = local_work(own or prof, where=where)
                rounds, local_epochs, frac = ((epochs, 1, 1.0) if centralized else
                                              (_federated_rounds(epochs, (local, key), fraction, where=where),
                                               local, fraction))
                part = key == "local-epoch-fraction" and not centralized  # centralized: whole epochs
                values.update({"num-server-rounds": rounds, "local-epochs": 1 if part else int(local_epochs),
                               "local-epoch-fraction": local_epochs if part else 0.0, "fraction-train": frac,
                               "run-name": f"paper-{strategy}-{setting}"})
                source = f"{self.path}: {strategy}/{setting} [profile {profile}]"
                try:  # refuses, among others, keys the tuned DP recipe chooses itself, before any cell runs
                    cfg = RunConfig.from_flat(values, source=source)
                except ConfigError as exc:
                    raise GridError(str(exc)) from None
                flat = cfg.to_flat()
                out.append(Cell(strategy=strategy, setting=setting, values={k: flat[k] for k in values}))
        check_equal_budget(out)
        return out


def load_grid(path: Path) -> Grid:
    """Read and validate a grid file: unknown sections and keys are named with a suggestion."""
    path = Path(path)
    if not path.is_file():
        raise GridError(f"grid file {path} does not exist")
    data = read_yaml_mapping(path, error=GridError, expected=f"the sections {', '.join(SECTIONS)}")
    for key in data:
        if key not in SECTIONS:
            raise GridError(f"{path}: unknown section {key!r}{_hint(str(key), SECTIONS)}; "
                            f"sections are {', '.join(SECTIONS)}")
    common = _mapping(data.get("common") or {}, where=f"{path}: common")
    _check_keys(common, where=f"{path}: common")
    _no_budget(common, where=f"{path}: common")  # local work: in profiles, strategies or settings
    named: dict[str, dict[str, dict[str, Any]]] = {}
    for section in ("strategies", "settings", "profiles"):
        entries = _mapping(data.get(section), where=f"{path}: {section}")
        if not entries:
            raise GridError(f"{path}: {section} is empty; it needs at least one entry")
        named[section] = {}
        for name, entry in entries.items():
            where = f"{path}: {section}.{name}"
            if "/" in str(name) or not str(name).strip():
                raise GridError(f"{where}: names may not be empty or contain '/'")
            entry = _mapping(entry or {}, where=where)
            _check_keys(entry, where=where, extra=PROFILE_EXTRAS if section == "profiles" else LOCAL_WORK)
            if section != "profiles":
                _no_budget(entry, where=where)
            named[section][str(name)] = entry
    grid = Grid(path=path, common=common, strategies=named["strategies"], settings=named["settings"],
                profiles=named["profiles"])
    for profile in grid.profiles:
        grid.cells(profile)  # every cell of every profile is a valid RunConfig
    return grid


def check_equal_budget(cells: list[Cell]) -> None:
    """Every cell must plan the same passes over the same training set; raises GridError if not."""
    budgets = {(c.epochs, c.values.get("max-train-samples", 0)) for c in cells}  # epochs: to 3 decimals
    if len(budgets) > 1:
        detail = "; ".join(f"{c.name}: {c.epochs:g} epochs, max-train-samples {c.values.get('max-train-samples', 0)}"
                           for c in cells)
        raise GridError(f"cells do not compute the same sample gradients: {detail}")


def select_cells(cells: list[Cell], only: str | None) -> list[Cell]:
    """Cells matching ``--only`` (comma-separated ``strategy/setting`` patterns; ``*`` wildcards)."""
    if not only:
        return cells
    patterns = [p.strip() for p in only.split(",") if p.strip()]
    names = [c.name for c in cells]
    for pattern in patterns:
        if not fnmatch.filter(names, pattern):
            raise GridError(f"--only {pattern!r} matches no cell{_hint(pattern, names)}; cells: {', '.join(names)}")
    return [c for c in cells if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]


def _check_keys(entry: Mapping[str, Any], *, where: str, extra: tuple[str, ...] = ()) -> None:
    known = set(RunConfig().to_flat()) | set(extra)
    for key in entry:
        if key in MANAGED and key not in extra:
            if key in LOCAL_WORK:
                raise GridError(f"{where}: {key!r} (a federated round's local work) belongs in profiles, strategies "
                                f"or settings")
            raise GridError(f"{where}: {key!r} is set by fedfer bench from the profile's epochs (so every cell "
                            f"computes the same sample gradients); remove it")
        if key not in known:
            raise GridError(f"{where}: unknown key {key!r}{_hint(str(key), known)}; known keys are listed by "
                            f"`fedfer config`, plus {', '.join(PROFILE_EXTRAS)} in profiles")


def _no_budget(entry: Mapping[str, Any], *, where: str) -> None:
    for key in BUDGET_KEYS:
        if key in entry:
            raise GridError(f"{where}: {key!r} belongs in profiles (the budget is the same for every cell)")


def _mapping(value: Any, *, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GridError(f"{where}: expected a mapping, got {type(value).__name__}")
    for key, v in value.items():
        if isinstance(v, list):
            raise GridError(f"{where}: {key} must be a single value, got a list")
    return {str(k): v for k, v in value.items()}


def federated_fraction(values: Mapping[str, Any], *, where: str) -> float:
    """The profile's ``federated-fraction``: the clients sampled per federated round (default 1.0, all)."""
    raw = values.get("federated-fraction", 1.0)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0.0 < float(raw) <= 1.0:
        raise GridError(f"{where}: federated-fraction must be a number in (0, 1] (got {raw!r})")
    return float(raw)


def _federated_rounds(epochs: int, work: tuple[float, str], fraction: float, *, where: str) -> int:
    """Federated rounds of a budget: epochs / (local work x federated-fraction), which must be whole."""
    local, key = work
    rounds = epochs / (local * fraction)
    if abs(rounds - round(rounds)) > _PLAN_TOLERANCE or round(rounds) < 1:
        raise GridError(f"{where}: epochs={epochs} is not a whole number of federated rounds of {key}={local:g} x "
                        f"federated-fraction={fraction:g} (federated cells run epochs / ({key} x "
                        f"federated-fraction) rounds)")
    return round(rounds)


def local_work(values: Mapping[str, Any], *, where: str) -> tuple[float, str]:
    """A profile's local work per federated round and the key that states it: ``local-epochs`` (whole
    passes, default 1) or ``local-epoch-fraction`` (a fraction of each client's own epoch; not both)."""
    if "local-epoch-fraction" not in values:
        return float(_positive_int(values, "local-epochs", where=where, default=1)), "local-epochs"
    if "local-epochs" in values:
        raise GridError(f"{where}: local-epochs and local-epoch-fraction both size a round's local work: keep one")
    raw = values["local-epoch-fraction"]
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0.0 < float(raw) <= 1.0:
        raise GridError(f"{where}: local-epoch-fraction must be a number in (0, 1] (got {raw!r})")
    return float(raw), "local-epoch-fraction"


def _positive_int(values: Mapping[str, Any], key: str, *, where: str, default: int | None = None) -> int:
    raw = values.get(key, default)
    if raw is None:
        raise GridError(f"{where}: needs {key!r} (sample-gradient passes over the training set per cell)")
    try:
        n = int(raw)
    except (TypeError, ValueError):
        raise GridError(f"{where}: {key}={raw!r}: expected a positive integer") from None
    if n < 1 or isinstance(raw, bool) or (isinstance(raw, float) and raw != n):
        raise GridError(f"{where}: {key}={raw!r}: expected a positive integer")
    return n


def _hint(word: str, choices: Any) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""
