"""The server's privacy ledger: what every client reported spending, round by round."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fer_models.config import RunConfig
from server.strategy import client_level_epsilon, clients_per_round


@dataclass
class ServerLedger:
    """Per-client epsilon (sample-level DP) or the federation's epsilon (client-level DP)."""

    cfg: RunConfig
    per_client: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    per_round_max: list[float] = field(default_factory=list)
    refusals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return self.cfg.dp != "none"

    def record_round(self, server_round: int, client_metrics: list[dict[str, Any]],
                     errors: list[dict[str, Any]]) -> float | None:
        """Fold one round's replies in; returns the max epsilon after this round (None without DP)."""
        if self.cfg.dp == "sample":
            for m in client_metrics:
                if "epsilon" in m:
                    key = str(int(m["partition-id"]))
                    self.per_client.setdefault(key, []).append(
                        {"round": server_round, "epsilon": float(m["epsilon"])})
            self.refusals.extend({"round": server_round, **e} for e in errors if e.get("code") == 4701)
            latest = [hist[-1]["epsilon"] for hist in self.per_client.values() if hist]
            eps = max(latest) if latest else 0.0
        elif self.cfg.dp == "client":
            q = clients_per_round(self.cfg) / self.cfg.num_clients
            eps = client_level_epsilon(noise_multiplier=self.cfg.noise_multiplier, sample_rate=min(q, 1.0),
                                       rounds=server_round, delta=self.cfg.target_delta)
        else:
            return None
        self.per_round_max.append(eps)
        return eps

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"level": self.cfg.dp, "delta": self.cfg.target_delta,
                               "per_round_max": list(self.per_round_max),
                               "final_max": self.per_round_max[-1] if self.per_round_max else 0.0}
        if self.cfg.dp == "sample":
            out["per_client"] = {k: v[-1]["epsilon"] for k, v in sorted(self.per_client.items(), key=lambda kv: int(kv[0]))}
            out["per_client_history"] = self.per_client
            out["budget"] = self.cfg.budget if self.cfg.budget != float("inf") else None
            out["refusals"] = self.refusals
        else:
            out["per_client"] = {}
            out["noise_multiplier"] = self.cfg.noise_multiplier
            out["sample_rate"] = clients_per_round(self.cfg) / self.cfg.num_clients
        return out
