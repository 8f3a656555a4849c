"""A Grid wrapper that records every reply, so the server sees per-client metrics and errors.

Flower's strategies aggregate replies and keep only the weighted averages; the privacy ledger
needs each client's own epsilon, and the run record needs who was asked and who answered.
Wrapping the Grid keeps this independent of the strategy (FedAvg, FedAdam, DP wrappers, ...).
It is also where the server screens training replies (:mod:`server.validation`): a rejected
update is recorded as that client's error and never reaches the strategy's aggregation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable

from flwr.app import Message, MessageType
from flwr.serverapp import Grid

from fer_models.privacy import LEDGER_PREFIX
from server.validation import NO_REPLY_CODE, REJECTED_CODE, screen_updates

logger = logging.getLogger(__name__)


@dataclass
class RoundReplies:
    """What one send-and-receive of training messages brought back."""

    sent: int = 0
    metrics: list[dict[str, Any]] = field(default_factory=list)  # one dict per successful reply
    errors: list[dict[str, Any]] = field(default_factory=list)  # {"node_id", "code", "reason"}
    ledgers: dict[str, dict[str, Any]] = field(default_factory=dict)  # partition-id -> accountant history
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"node_id", "reason", "metrics"}


class RecordingGrid:
    """Delegates to a Flower Grid; keeps the last training round's replies in ``last_train``."""

    def __init__(self, grid: Grid, *, max_norm_ratio: float = 0.0) -> None:
        self._grid = grid
        self.max_norm_ratio = max_norm_ratio
        self.last_train = RoundReplies()
        self.last_evaluate = RoundReplies()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        if not messages:
            return replies
        record = RoundReplies(sent=len(messages))
        if messages[0].metadata.message_type == MessageType.TRAIN:
            replies = self._screen(messages[0], replies, record)
        for reply in replies:
            if reply.has_error():
                err = {"node_id": reply.metadata.src_node_id, "code": reply.error.code,
                       "reason": reply.error.reason}
                logger.warning("client node %s replied with an error: %s", err["node_id"], err["reason"])
                record.errors.append(err)
            else:
                record.metrics.extend(_reply_metrics(reply, record))
        record.errors.extend({"node_id": None, "code": NO_REPLY_CODE, "reason": "no reply (timeout or dropout)"}
                             for _ in range(len(messages) - len(replies) - len(record.rejected)))
        if messages[0].metadata.message_type == MessageType.TRAIN:
            self.last_train = record
        else:
            self.last_evaluate = record
        return replies

    def _screen(self, sent: Message, replies: list[Message], record: RoundReplies) -> list[Message]:
        """The replies whose updates pass :func:`screen_updates`; the others are recorded as errors."""
        ok = [r for r in replies if not r.has_error() and "arrays" in r.content.array_records]
        if not ok or "arrays" not in sent.content.array_records:
            return replies
        global_state = sent.content.array_records["arrays"].to_torch_state_dict()
        verdict = screen_updates(sent=global_state, max_norm_ratio=self.max_norm_ratio,
                                 received=[r.content.array_records["arrays"].to_torch_state_dict() for r in ok])
        bad = {id(ok[i]): why for i, why in verdict.items()}
        for reply in replies:
            if id(reply) in bad:
                node = reply.metadata.src_node_id
                metrics = _reply_metrics(reply, record)  # its privacy spending still counts
                pid = metrics[0].get("partition-id") if metrics else None
                reason = f"update rejected by the server: {bad[id(reply)]}"
                logger.warning("client node %s%s: %s", node, "" if pid is None else f" (partition {int(pid)})",
                               reason)
                record.rejected.append({"node_id": node, "partition-id": pid, "reason": reason, "metrics": metrics})
                record.errors.append({"node_id": node, "code": REJECTED_CODE, "reason": reason})
        return [r for r in replies if id(r) not in bad]


def _reply_metrics(reply: Message, record: RoundReplies) -> list[dict[str, Any]]:
    """The reply's metric records (one dict each); clients' ledgers go to ``record.ledgers``."""
    out = []
    for rec in reply.content.metric_records.values():
        # clients' ledgers (lists) are for the checkpoint, not for metric averaging
        ledger = {k[len(LEDGER_PREFIX):]: rec.pop(k) for k in list(rec) if k.startswith(LEDGER_PREFIX)}
        if ledger and "partition-id" in rec:
            record.ledgers[str(int(rec["partition-id"]))] = ledger
        out.append({"node_id": reply.metadata.src_node_id, **dict(rec)})
    return out
