"""SecAgg+ settings: refused before anything runs when the protocol cannot serve them.

Under ``secure-aggregation=secaggplus`` the server receives only masked vectors and unmasks their
(weighted) sum: anything that needs one client's own update on the server cannot work, and is
refused here with the reason (the CLI, the ServerApp and every ClientApp call this through
:meth:`fer_models.config.RunConfig.check`). The share counts of a round are resolved by
:func:`resolve_shares`, the one place both the check and the server use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fer_models.config.errors import ConfigError

if TYPE_CHECKING:
    from fer_models.config.run_config import RunConfig

#: Flower's SecAgg+ mask modulus (``SecAggPlusWorkflow(modulus_range=...)``): sums must stay below it.
MODULUS_RANGE = 2**32
#: Strategies that aggregate with the weighted mean only (or a server step on it): served by a secure sum.
SUM_STRATEGIES = ("fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi")
#: Fewest clients per round: with two, each would learn the other's update from the sum and its own. Also the
#: fewest masked vectors the server unmasks: a round left with fewer after dropouts halts (server/secagg.py).
MIN_CLIENTS = 3
_KEYS = ("secagg-num-shares", "secagg-reconstruction-threshold", "secagg-clipping-range",
         "secagg-quantization-range", "secagg-max-weight")


def resolve_shares(*, num_shares: int, threshold: int, sampled: int) -> tuple[int, int]:
    """(shares, threshold) for a round of ``sampled`` clients: 0 shares = all, 0 threshold = more than half."""
    shares = num_shares or sampled
    return shares, threshold or shares // 2 + 1


def check_secure_aggregation(cfg: "RunConfig") -> None:
    """Raise ConfigError for a combination SecAgg+ cannot serve; each message names the key and the way out."""

    if cfg.secure_aggregation == "none":
        default = type(cfg).__dataclass_fields__
        changed = [k for k in _KEYS if getattr(cfg, k.replace("-", "_")) != default[k.replace("-", "_")].default]
        if changed:
            raise ConfigError(f"{', '.join(changed)} set while secure-aggregation=none: they configure SecAgg+ only; "
                              f"add secure-aggregation=secaggplus or remove them")
        return
    where = "secure-aggregation=secaggplus"
    if cfg.strategy not in SUM_STRATEGIES:
        raise ConfigError(f"strategy={cfg.strategy} with {where}: a median, trimmed mean or q-FedAvg needs every "
                          f"client's own update, and the server sees only their sum; use "
                          f"strategy={' | '.join(SUM_STRATEGIES)}")
    if cfg.dp == "client" and cfg.client_clipping == "server":
        raise ConfigError(f"dp=client with client-clipping=server and {where}: the server cannot clip updates it never "
                          f"sees; set client-clipping=client (clipping on the clients, noise on the unmasked sum)")
    sampled = cfg.clients_per_round
    if sampled < MIN_CLIENTS:
        raise ConfigError(f"{where} with {sampled} client(s) per round (num-clients={cfg.num_clients}, "
                          f"fraction-train={cfg.fraction_train}, min-train-clients={cfg.min_train_clients}): with fewer "
                          f"than {MIN_CLIENTS} each client learns the others' update from the sum; sample at least "
                          f"{MIN_CLIENTS} clients per round")
    if cfg.secagg_num_shares and not MIN_CLIENTS <= cfg.secagg_num_shares <= sampled:
        raise ConfigError(f"secagg-num-shares={cfg.secagg_num_shares}: must be between {MIN_CLIENTS} and the "
                          f"{sampled} clients sampled per round, or 0 (every sampled client)")
    shares, threshold = resolve_shares(num_shares=cfg.secagg_num_shares, threshold=cfg.secagg_reconstruction_threshold,
                                       sampled=sampled)
    if cfg.secagg_reconstruction_threshold and not 2 <= threshold < shares:
        raise ConfigError(f"secagg-reconstruction-threshold={threshold}: must be at least 2 and below the {shares} "
                          f"shares (secagg-num-shares), so that a key survives a dropout; or 0 (more than half)")
    if sampled * cfg.secagg_quantization_range >= MODULUS_RANGE:
        raise ConfigError(f"secagg-quantization-range={cfg.secagg_quantization_range} with {sampled} clients per round: "
                          f"the sum of the quantized updates would overflow the 2**32 mask modulus; lower it below "
                          f"{MODULUS_RANGE // sampled}")
