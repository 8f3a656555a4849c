"""Settings that would break a differential-privacy guarantee, refused before anything runs.

:meth:`fer_models.config.RunConfig.check` calls :func:`check_privacy_settings`, so the CLI, the
ServerApp (``flwr run``, deploy-local) and every ClientApp refuse the same combinations with the
same message. Each rule names the keys and the way out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fer_models.config.errors import ConfigError

if TYPE_CHECKING:
    from fer_models.config.run_config import RunConfig

#: Strategies whose client-level DP noise calibration fedfer proves (tests/test_client_level_dp.py).
CLIENT_DP_STRATEGIES = ("fedavg",)


def check_privacy_settings(cfg: "RunConfig") -> None:
    """Raise ConfigError for a combination under which a reported epsilon would not hold."""

    if cfg.dp != "none" and cfg.fraction_evaluate > 0:
        raise ConfigError(f"fraction-evaluate={cfg.fraction_evaluate} with dp={cfg.dp}: client-side evaluation sends "
                          f"loss and accuracy computed on the clients' data outside the accounted mechanism; set "
                          f"fraction-evaluate=0 (the server's global evaluation still runs)")
    if cfg.dp == "sample":
        if cfg.class_balance == "weighted-loss" and not cfg.class_weights.strip():
            raise ConfigError("class-balance=weighted-loss with dp=sample: weights computed from a client's private "
                              "labels change every sample's gradient, so one image's influence is no longer bounded "
                              "by the clipping norm; give public weights with class-weights=w1,...,w7, or set "
                              "class-balance=none")
        if cfg.strategy == "qfedavg":
            raise ConfigError("strategy=qfedavg with dp=sample: q-FedAvg weighs each update by the site's loss on its "
                              "private training data, a release fedfer does not yet noise and account, so the "
                              "reported epsilon would not hold; use strategy=fedavg (or dp=none for q-FedAvg)")
        if cfg.strategy == "fedprox":
            raise ConfigError("strategy=fedprox with dp=sample: Opacus replaces the gradient with the clipped, noised "
                              "per-sample gradients, so the proximal term would be silently dropped; use "
                              "strategy=fedavg (or dp=none for FedProx)")
        if cfg.privacy_unit == "person" and cfg.audit_canaries:
            raise ConfigError("audit-canaries with privacy-unit=person: a canary is one planted image, at a client drawn "
                              "at random, so it would join its subject's person at another client (a person at two "
                              "clients) and the audit would measure an image, not the person the epsilon protects; "
                              "audit a privacy-unit=sample run")
    elif cfg.privacy_unit != "sample":
        raise ConfigError(f"privacy-unit={cfg.privacy_unit} applies to dp=sample (per-sample DP-SGD on the clients); "
                          f"with dp={cfg.dp} set privacy-unit=sample")
    if cfg.dp == "client":
        if cfg.noise_multiplier <= 0 and cfg.target_epsilon <= 0:
            raise ConfigError("dp=client needs noise-multiplier > 0 or target-epsilon > 0: without noise the "
                              "aggregate carries no privacy guarantee")
        if cfg.strategy not in CLIENT_DP_STRATEGIES:
            raise ConfigError(f"strategy={cfg.strategy} with dp=client: fedfer's client-level DP adds noise calibrated "
                              f"to a mean of clipped updates, proven for {', '.join(CLIENT_DP_STRATEGIES)} only; a "
                              f"median, trimmed mean or server optimizer changes the sensitivity. Use strategy=fedavg")
        if cfg.adaptive_clipping:
            raise ConfigError("adaptive-clipping=true with dp=client: the clipping norm's own noisy estimate is not in "
                              "fedfer's accounting, so the reported epsilon would not hold; set adaptive-clipping=false "
                              "and choose max-grad-norm")
