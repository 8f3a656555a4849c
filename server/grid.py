"""A Grid wrapper that records every reply, so the server sees per-client metrics and errors.

Flower's strategies aggregate replies and keep only the weighted averages; the privacy ledger
needs each client's own epsilon, and the run record needs who was asked and who answered.
Wrapping the Grid keeps this independent of the strategy (FedAvg, FedAdam, DP wrappers, ...).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from flwr.app import Message, MessageType
from flwr.serverapp import Grid

#: How long one answer of get_node_ids is reused (the sample size and the sampling see the same nodes).
NODE_SNAPSHOT_S = 2.0
#: Looks at a successful reply's metrics; returns (error code, reason) to reject it before aggregation.
Screen = Callable[[dict[str, Any]], "tuple[int, str] | None"]

logger = logging.getLogger(__name__)


@dataclass
class RoundReplies:
    """What one send-and-receive of training messages brought back."""

    sent: int = 0
    metrics: list[dict[str, Any]] = field(default_factory=list)  # one dict per successful reply
    errors: list[dict[str, Any]] = field(default_factory=list)  # {"node_id", "code", "reason"}


class RecordingGrid:
    """Delegates to a Flower Grid; keeps the last training round's replies in ``last_train``."""

    def __init__(self, grid: Grid, *, screen: Screen | None = None) -> None:
        self._grid = grid
        self._screen = screen
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
        kept = []
        for reply in replies:
            if reply.has_error():
                err = {"node_id": reply.metadata.src_node_id, "code": reply.error.code,
                       "reason": reply.error.reason}
                logger.warning("client node %s replied with an error: %s", err["node_id"], err["reason"])
                record.errors.append(err)
                kept.append(reply)
                continue
            metrics = [{"node_id": reply.metadata.src_node_id, **dict(rec)}
                       for rec in reply.content.metric_records.values()]
            rejected = next((r for r in map(self._screen, metrics) if r is not None), None) if self._screen else None
            if rejected is not None:  # never reaches the strategy: recorded as that client's error
                code, reason = rejected
                logger.warning("client node %s: reply rejected: %s", reply.metadata.src_node_id, reason)
                record.errors.append({"node_id": reply.metadata.src_node_id, "code": code, "reason": reason})
                continue
            record.metrics.extend(metrics)
            kept.append(reply)
        record.errors.extend({"node_id": None, "code": -1, "reason": "no reply (timeout or dropout)"}
                             for _ in range(len(messages) - len(replies)))
        if messages[0].metadata.message_type == MessageType.TRAIN:
            self.last_train = record
        else:
            self.last_evaluate = record
        return kept
