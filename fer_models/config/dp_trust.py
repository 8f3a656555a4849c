"""Against whom each DP mode's epsilon holds: one sentence per mode, shared by the ``dp`` help text, the
ServerApp's log and report.md (so the three never disagree).

Under ``dp=client`` (DP-FedAvg) the SERVER adds the noise: it clips (or receives clipped) updates and
noises their mean, so it sees them before the noise. The epsilon then protects a site against the
other sites and whoever receives the model, not against the server; secure aggregation narrows what
the server sees to the sum of the clipped updates, which is still noise-free to it.
"""

from __future__ import annotations

DP_CLIENT_TRUST = ("the server is trusted to add the noise: this epsilon holds against the other sites and whoever "
                   "receives the model, NOT against the server, which sees the clipped updates before their noise; "
                   "secure-aggregation=secaggplus limits what it sees to their sum")
DP_SAMPLE_TRUST = ("each client adds its own noise on its own node: this epsilon holds against the server, the "
                   "other sites and whoever receives the model")


def dp_trust(dp: str) -> str:
    """Whom the epsilon of ``dp`` (``sample`` / ``client``) holds against; empty for ``none``."""
    return {"client": DP_CLIENT_TRUST, "sample": DP_SAMPLE_TRUST}.get(dp, "")
