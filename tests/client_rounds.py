"""One train round through the ClientApp's handler, without Flower's engine (tests of ledgers and budgets)."""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from client.app import train
from fer_models.config import RunConfig
from fer_models.federation.wire import EPSILON, LINEAGE
from fer_models.models.from_config import build_model


def train_round(ctx: Context, server_round: int, *, lineage: str = "L1") -> Message:
    """The reply of the client in ``ctx`` to the server's train message of ``server_round`` (fresh global model)."""
    cfg = RunConfig.from_flat(ctx.run_config)
    config = ConfigRecord({"server-round": server_round, LINEAGE: lineage})
    msg = Message(RecordDict({"arrays": ArrayRecord(build_model(cfg).state_dict()), "config": config}),
                  dst_node_id=1, message_type="train")
    return train(msg, ctx)


def reply_epsilon(reply: Message) -> float:
    """The epsilon a successful train reply reports."""
    assert not reply.has_error(), reply.error
    return float(reply.content["metrics"][EPSILON])
