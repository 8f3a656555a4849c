"""Client mods: client-side clipping for client-level DP, applied only when the run asks for it.

Flower's ``fixedclipping_mod`` must run on every train message when
the server uses a client-clipping DP-FedAvg strategy (server/client_dp.py), and must not otherwise
(they fail without the clipping norm in the message). This mod picks per run config.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable

from fer_models.config import RunConfig


def client_side_clipping(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Clip the model update on the client when ``dp=client`` and ``client-clipping=client``."""
    if msg.metadata.message_type != "train":
        return call_next(msg, context)
    cfg = RunConfig.from_flat(context.run_config)
    if cfg.dp != "client" or cfg.client_clipping != "client":
        return call_next(msg, context)
    return fixedclipping_mod(msg, context, call_next)  # adaptive clipping is refused under dp=client
