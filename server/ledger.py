"""The server's privacy record: what every client reported spending, round by round, with its unit.

Under ``dp=sample`` each client owns its epsilon (its ledger lives on its own node); the server
only records what the clients report, and rejects a reply whose epsilon is lower than the one it
recorded for that client (a reset ledger). Under ``dp=client`` the epsilon is the federation's,
per site, computed from the releases the DP strategy actually made (server/client_dp.py).
Every epsilon this module writes carries its unit, delta and owner (:func:`epsilon_label`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from fer_models.config import RunConfig
from fer_models.config.dp_trust import dp_trust
from fer_models.federation.wire import EPSILON, LEDGER_REGRESSION, PARTITION_ID, PRIVACY_REFUSALS, UNIT_IS_PERSON


class ReleaseCounter(Protocol):
    releases: int
    skipped: list[dict[str, Any]]
    noise_multiplier: float

    def epsilon(self, releases: int | None = None) -> float: ...


def client_key(metrics: dict[str, Any]) -> str:
    """Who a reply is from, for the record: its partition id, or (a site started without one) its node id."""
    return str(int(metrics[PARTITION_ID])) if PARTITION_ID in metrics else f"node-{metrics.get('node_id')}"


def client_order(item: tuple[str, Any]) -> tuple[int, str]:
    return (int(item[0]), "") if item[0].isdigit() else (1 << 62, item[0])


def epsilon_label(*, unit: str, delta: float, owner: str) -> str:
    """How every epsilon is named: ``image-level, delta=1e-05, each client's own``."""
    return f"{unit}-level, delta={delta:g}, {owner}"


@dataclass
class ServerLedger:
    """Per-client epsilon (sample-level DP) or the federation's per-site epsilon (client-level DP)."""

    cfg: RunConfig
    per_client: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    per_round_max: list[float] = field(default_factory=list)
    refusals: list[dict[str, Any]] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=dict)  # client -> "image" | "person"
    client_dp: ReleaseCounter | None = None  # the DP-FedAvg strategy under dp=client

    @property
    def enabled(self) -> bool:
        return self.cfg.dp != "none"

    @property
    def unit(self) -> str:
        """The privacy unit of the reported epsilon (the weakest one when clients differ)."""
        if self.cfg.dp == "client":
            return "site"
        units = set(self.units.values())
        return "person" if units == {"person"} else "image"

    @property
    def label(self) -> str:
        owner = ("the federation's (every site; the server adds the noise)" if self.cfg.dp == "client"
                 else "the largest of the clients' own")
        return epsilon_label(unit=self.unit, delta=self.cfg.target_delta, owner=owner)

    def screen(self, metrics: dict[str, Any]) -> tuple[int, str] | None:
        """(error code, reason) if a reply must not be aggregated: its epsilon went down (ledger reset)."""
        if self.cfg.dp != "sample" or EPSILON not in metrics:
            return None
        key = client_key(metrics)
        history = self.per_client.get(key)
        reported = float(metrics[EPSILON])
        if history and reported < history[-1]["epsilon"] - 1e-9:
            return LEDGER_REGRESSION, (
                f"client {key} reported epsilon {reported:.3f}, below the {history[-1]['epsilon']:.3f} recorded after "
                f"round {int(history[-1]['round'])}: its privacy ledger was reset, so its update is rejected")
        return None

    def record_round(self, server_round: int, client_metrics: list[dict[str, Any]],
                     errors: list[dict[str, Any]]) -> float | None:
        """Fold one round's replies in; returns the max epsilon after this round (None without DP)."""
        if self.cfg.dp == "sample":
            for m in client_metrics:
                if EPSILON in m:
                    key = client_key(m)
                    self.per_client.setdefault(key, []).append({"round": server_round, "epsilon": float(m[EPSILON])})
                    self.units[key] = "person" if int(m.get(UNIT_IS_PERSON, 0)) else "image"
            self.refusals.extend({"round": server_round, **e} for e in errors if e.get("code") in PRIVACY_REFUSALS)
            latest = [hist[-1]["epsilon"] for hist in self.per_client.values() if hist]
            eps = max(latest) if latest else 0.0
        elif self.cfg.dp == "client":
            eps = self.client_dp.epsilon() if self.client_dp is not None else math.nan
        else:
            return None
        self.per_round_max.append(eps)
        return eps

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"level": self.cfg.dp, "unit": self.unit, "delta": self.cfg.target_delta,
                               "label": self.label, "per_round_max": list(self.per_round_max),
                               "final_max": self.per_round_max[-1] if self.per_round_max else 0.0,
                               "trust": dp_trust(self.cfg.dp)}
        if self.cfg.dp == "sample":
            out["owner"] = "each client (its ledger is on its own node); final_max is the largest"
            out["per_client"] = {k: v[-1]["epsilon"] for k, v in sorted(self.per_client.items(), key=client_order)}
            out["per_client_unit"] = dict(sorted(self.units.items(), key=client_order))
            out["per_client_history"] = self.per_client
            out["budget"] = self.cfg.budget if self.cfg.budget != float("inf") else None
            out["refusals"] = self.refusals
        else:
            out["owner"] = "the federation: each site's whole data"
            out["per_client"] = {}
            out["noise_multiplier"] = self.client_dp.noise_multiplier if self.client_dp else self.cfg.noise_multiplier
            out["sample_rate"] = 1.0
            out["sampling"] = "fixed-size draw from a public seed: no amplification claimed"
            out["releases"] = self.client_dp.releases if self.client_dp else 0
            out["rounds_not_released"] = list(self.client_dp.skipped) if self.client_dp else []
            out["budget"] = self.cfg.budget if self.cfg.budget != float("inf") else None
        return out
