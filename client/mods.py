"""Client mods: client-side clipping for client-level DP, applied only when the run asks for it.

Flower's ``fixedclipping_mod`` / ``adaptiveclipping_mod`` must run on every train message when
the server uses a ``DifferentialPrivacyClientSide*Clipping`` wrapper, and must not otherwise
(they fail without the clipping norm in the message). This mod picks per run config.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable

from fer_models.config import RunConfig


def client_side_clipping(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Clip the model update on the client when ``dp=client`` and ``client-clipping=client``."""
    if msg.metadata.message_type != "train":
        return call_next(msg, context)
    cfg = RunConfig.from_flat(context.run_config)
    if cfg.dp != "client" or cfg.client_clipping != "client":
        return call_next(msg, context)
    mod = adaptiveclipping_mod if cfg.adaptive_clipping else fixedclipping_mod
    return mod(msg, context, call_next)
