"""The node's own privacy limits, from its node config: they hold whatever the server's run config says.

A SuperNode's ``--node-config`` (keys in :data:`fer_models.federation.sites.NODE_PRIVACY_KEYS`):

- ``epsilon-cap=E``: the most epsilon this node's data may ever spend, over every run and lineage
  (client/site_ledger.py composes them). A node with a cap trains only under ``dp=sample``.
- ``epsilon-cap-delta=D`` (default 1e-5): the delta the cap is measured at; the run's ``target-delta``
  is used instead when smaller (a larger run delta cannot make the cap's epsilon smaller).
- ``min-noise-multiplier=S``: refuse a round whose noise multiplier is below ``S`` (a node with it
  set trains only under ``dp=sample``).
- ``public-person-count=N`` (privacy-unit=person): a person count the site declares public; the
  Poisson sampling rate is set from it (else from the public number of training samples), never
  from the private number of persons in the data.
- ``privacy-state=new``: start a capped node's privacy state (its marker in the state dir) when none
  exists. A capped node whose state dir holds no marker refuses to train without it.

A simulated node gets its node config from Flower (partition id and count only): it reads the
same keys from ``$FEDFER_<KEY>`` (``FEDFER_EPSILON_CAP=8``, ``FEDFER_MIN_NOISE_MULTIPLIER=0.8``, ...).
A key in the node config wins over the environment.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

from fer_models.federation.sites import (
    EPSILON_CAP,
    EPSILON_CAP_DELTA,
    MIN_NOISE_MULTIPLIER,
    NODE_PRIVACY_KEYS,
    PRIVACY_STATE,
    PUBLIC_PERSON_COUNT,
)

DEFAULT_CAP_DELTA = 1e-5
PRIVACY_STATE_VALUES = ("", "new")


class NodePrivacyError(ValueError):
    """A privacy key of the node config has a value that means nothing (the message names it)."""


def env_name(key: str) -> str:
    """The environment variable a simulated node reads ``key`` from: ``FEDFER_EPSILON_CAP``."""
    return "FEDFER_" + key.upper().replace("-", "_")


def _raw(node: Mapping[str, Any], environ: Mapping[str, str], key: str) -> str:
    value = node.get(key)
    if value is None or str(value).strip() == "":
        value = environ.get(env_name(key), "")
    return str(value).strip()


def _number(node: Mapping[str, Any], environ: Mapping[str, str], key: str, *, integer: bool = False,
            positive: bool = True) -> float | None:
    text = _raw(node, environ, key)
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or (positive and value <= 0) or value < 0 or (integer and value != int(value)):
        kind = "a positive whole number" if integer else "a positive number" if positive else "a number >= 0"
        raise NodePrivacyError(f"node config {key}={text!r}: expected {kind} (set it in the SuperNode's "
                               f"--node-config, or ${env_name(key)} for a simulated node)")
    return value


@dataclass(frozen=True)
class NodePrivacy:
    """The node's privacy limits (None / 0: not set)."""

    epsilon_cap: float | None = None
    cap_delta: float = DEFAULT_CAP_DELTA
    min_noise_multiplier: float = 0.0
    public_person_count: int | None = None
    start_new_state: bool = False

    @classmethod
    def from_node_config(cls, node: Mapping[str, Any], *,
                         environ: Mapping[str, str] | None = None) -> "NodePrivacy":
        env = os.environ if environ is None else environ
        state = _raw(node, env, PRIVACY_STATE)
        if state not in PRIVACY_STATE_VALUES:
            raise NodePrivacyError(f"node config {PRIVACY_STATE}={state!r}: the only value is 'new' (start this "
                                   f"node's privacy state when its state dir holds none); leave it unset otherwise")
        delta = _number(node, env, EPSILON_CAP_DELTA)
        if delta is not None and delta >= 1:
            raise NodePrivacyError(f"node config {EPSILON_CAP_DELTA}={delta}: a delta must be below 1 (e.g. 1e-5)")
        persons = _number(node, env, PUBLIC_PERSON_COUNT, integer=True)
        return cls(epsilon_cap=_number(node, env, EPSILON_CAP),
                   cap_delta=DEFAULT_CAP_DELTA if delta is None else delta,
                   min_noise_multiplier=_number(node, env, MIN_NOISE_MULTIPLIER, positive=False) or 0.0,
                   public_person_count=None if persons is None else int(persons),
                   start_new_state=state == "new")

    @property
    def capped(self) -> bool:
        """True when the node limits what the server may ask (cap or minimum noise): it trains only under DP."""
        return self.epsilon_cap is not None or self.min_noise_multiplier > 0

    def delta_for(self, run_delta: float) -> float:
        """The delta the cap is checked at: the node's, or the run's when smaller."""
        return min(self.cap_delta, run_delta)


__all__ = ["NODE_PRIVACY_KEYS", "NodePrivacy", "NodePrivacyError", "env_name"]
