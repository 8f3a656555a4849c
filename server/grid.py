"""A Grid wrapper that records every reply, so the server sees per-client metrics and errors.

Flower's strategies aggregate replies and keep only the weighted averages; the privacy ledger
needs each client's own epsilon, and the run record needs who was asked and who answered.
Wrapping the Grid keeps this independent of the strategy (FedAvg, FedAdam, DP wrappers, ...).
It is also where the server screens training replies (:mod:`server.validation`): a rejected
update is recorded as that client's error and never reaches the strategy's aggregation.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from flwr.app import Message, MessageType
from flwr.serverapp import Grid

from fer_models.federation.wire import (
    ARRAYS_RECORD,
    MALFORMED_REPLY,
    PARTITION_ID,
    MalformedReplyError,
    TrainReply,
)
from fer_models.federation.wire import NO_REPLY as NO_REPLY_CODE
from fer_models.federation.wire import UPDATE_REJECTED as REJECTED_CODE
from server.validation import screen_updates

logger = logging.getLogger(__name__)

#: How long one answer of get_node_ids is reused (the sample size and the sampling see the same nodes).
NODE_SNAPSHOT_S = 2.0
#: Looks at a successful reply's metrics; returns (error code, reason) to reject it before aggregation.
Screen = Callable[[dict[str, Any]], "tuple[int, str] | None"]


@dataclass
class RoundReplies:
    """What one send-and-receive of training messages brought back."""

    sent: int = 0
    metrics: list[dict[str, Any]] = field(default_factory=list)  # one dict per successful reply
    errors: list[dict[str, Any]] = field(default_factory=list)  # {"node_id", "code", "reason"}
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"node_id", "reason", "metrics"}
    aggregation: dict[str, float] = field(default_factory=dict)  # the secure aggregation's figures (server/secagg.py)


class RecordingGrid:
    """Delegates to a Flower Grid; keeps the last training round's replies in ``last_train``."""

    def __init__(self, grid: Grid, *, max_norm_ratio: float = 0.0, screen: Screen | None = None) -> None:
        self._grid = grid
        self.max_norm_ratio = max_norm_ratio
        self._metrics_screen = screen
        self._nodes: list[int] | None = None
        self._nodes_at = 0.0
        self.last_train = RoundReplies()
        self.last_evaluate = RoundReplies()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def get_node_ids(self) -> list[int]:
        """The connected nodes, as one snapshot for :data:`NODE_SNAPSHOT_S` seconds.

        Flower's FedAvg counts the nodes once to size the sample, then waits until *that many* are
        connected: when a dead node's id expires between the two calls, the round waits forever.
        Answering both calls from one snapshot keeps them consistent (a dead node sampled in the
        snapshot is a dropout of that round, recorded as such).
        """
        now = time.monotonic()
        if self._nodes is None or now - self._nodes_at > NODE_SNAPSHOT_S:
            self._nodes, self._nodes_at = list(self._grid.get_node_ids()), now
        return list(self._nodes)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        if not messages:
            return replies
        record = RoundReplies(sent=len(messages))
        received = len(replies)
        train = messages[0].metadata.message_type == MessageType.TRAIN
        if train:
            replies = self._screen(messages[0], replies, record)
        kept = []
        for reply in replies:
            if reply.has_error():
                err = {"node_id": reply.metadata.src_node_id, "code": reply.error.code,
                       "reason": reply.error.reason}
                logger.warning("client node %s replied with an error: %s", err["node_id"], err["reason"])
                record.errors.append(err)
                kept.append(reply)
                continue
            metrics = _reply_metrics(reply)
            if train and (malformed := _malformed(metrics)) is not None:  # never aggregated, never recorded as spent
                logger.warning("client node %s: reply ignored: %s", reply.metadata.src_node_id, malformed)
                record.errors.append({"node_id": reply.metadata.src_node_id, "code": MALFORMED_REPLY,
                                      "reason": malformed})
                continue
            verdicts = [v for v in map(self._metrics_screen, metrics) if v is not None] if self._metrics_screen else []
            if verdicts:  # e.g. an epsilon below the recorded one: never aggregated, recorded as that client's error
                code, reason = verdicts[0]
                logger.warning("client node %s: reply rejected: %s", reply.metadata.src_node_id, reason)
                record.errors.append({"node_id": reply.metadata.src_node_id, "code": code, "reason": reason})
                continue
            record.metrics.extend(metrics)
            kept.append(reply)
        record.errors.extend({"node_id": None, "code": NO_REPLY_CODE, "reason": "no reply (timeout or dropout)"}
                             for _ in range(len(messages) - received))
        if messages[0].metadata.message_type == MessageType.TRAIN:
            record.aggregation = dict(getattr(self._grid, "last_round", None) or {})
            self.last_train = record
        else:
            self.last_evaluate = record
        return kept

    def _screen(self, sent: Message, replies: list[Message], record: RoundReplies) -> list[Message]:
        """The replies whose updates pass :func:`screen_updates`; the others are recorded as errors."""
        ok = [r for r in replies if not r.has_error() and ARRAYS_RECORD in r.content.array_records]
        if not ok or ARRAYS_RECORD not in sent.content.array_records:
            return replies
        global_state = sent.content.array_records[ARRAYS_RECORD].to_torch_state_dict()
        verdict = screen_updates(sent=global_state, max_norm_ratio=self.max_norm_ratio,
                                 received=[r.content.array_records[ARRAYS_RECORD].to_torch_state_dict() for r in ok])
        bad = {id(ok[i]): why for i, why in verdict.items()}
        for reply in replies:
            if id(reply) in bad:
                node = reply.metadata.src_node_id
                metrics = _reply_metrics(reply)  # its privacy spending still counts
                pid = metrics[0].get(PARTITION_ID) if metrics else None
                reason = f"update rejected by the server: {bad[id(reply)]}"
                logger.warning("client node %s%s: %s", node, "" if pid is None else f" (partition {int(pid)})",
                               reason)
                record.rejected.append({"node_id": node, PARTITION_ID: pid, "reason": reason, "metrics": metrics})
                record.errors.append({"node_id": node, "code": REJECTED_CODE, "reason": reason})
        return [r for r in replies if id(r) not in bad]


def _malformed(metrics: list[dict[str, Any]]) -> str | None:
    """Why a train reply's metrics break the wire contract (:class:`TrainReply`), or None."""
    try:
        for m in metrics:
            TrainReply.from_metrics(m)
    except MalformedReplyError as exc:
        return str(exc)
    return None


def _reply_metrics(reply: Message) -> list[dict[str, Any]]:
    """The reply's metric records, one dict each, with the sender's node id."""
    return [{"node_id": reply.metadata.src_node_id, **dict(rec)} for rec in reply.content.metric_records.values()]
