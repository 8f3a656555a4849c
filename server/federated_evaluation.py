"""Global evaluation without server-held data: the sites evaluate the global model on their held-out splits.

The server sends the global model to every connected SuperNode in an evaluate message that asks
for counts (:data:`fer_models.federation.wire.EVALUATE_COUNTS`); each site that opted in answers with its
confusion counts, loss sum and example count (:mod:`fer_models.federation.federated_eval`), and the server sums
them into the same report (accuracy, per-class P/R/F1, confusion matrix, per-site accuracy and gap)
a centralized evaluation on the union of the held-out splits gives. No file of any site is read here.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fer_models.config import RunConfig
from fer_models.federation.federated_eval import FEDERATED_SPLIT, federated_report
from fer_models.federation.wire import (
    ARRAYS_RECORD,
    CONFIG_RECORD,
    EVAL_N,
    EVALUATE_COUNTS,
    METRICS_RECORD,
    NO_REPLY,
    SITE_NAME,
    SITE_RECORD,
)

logger = logging.getLogger(__name__)

#: How often the evaluator looks for connected nodes while it waits for the first ones.
_POLL_S = 1.0


class FederatedEvaluationError(RuntimeError):
    """No site sent evaluation counts (the message says who answered what)."""


class FederatedEvaluator:
    """Evaluates a state dict through the sites (``client-data=site`` without ``eval-data-path``)."""

    report_split = FEDERATED_SPLIT

    def __init__(self, *, cfg: RunConfig, grid: Grid) -> None:
        self.cfg = cfg
        self.grid = grid
        self.sizes: dict[str, int] = {}  # site -> held-out examples, from the last evaluation
        self.errors: list[dict[str, Any]] = []

    def _nodes(self) -> list[int]:
        """The connected nodes; waits (up to round-timeout) until the run's minimum is connected."""
        need = self.cfg.min_available_clients or self.cfg.min_train_clients
        deadline = time.monotonic() + self.cfg.round_timeout
        while len(nodes := list(self.grid.get_node_ids())) < need and time.monotonic() < deadline:
            logger.info("federated evaluation waits for nodes: %d connected (minimum %d)", len(nodes), need)
            time.sleep(_POLL_S)
        return nodes

    def __call__(self, state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
        content = RecordDict({ARRAYS_RECORD: ArrayRecord(state_dict),
                              CONFIG_RECORD: ConfigRecord({EVALUATE_COUNTS: True})})
        nodes = self._nodes()
        messages = [Message(content=content, message_type=MessageType.EVALUATE, dst_node_id=n) for n in nodes]
        replies = list(self.grid.send_and_receive(messages, timeout=self.cfg.round_timeout))
        per_site: dict[str, dict[str, Any]] = {}
        self.errors = []
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                self.errors.append({"node_id": node, "code": reply.error.code, "reason": reply.error.reason})
                logger.warning("node %s sent no evaluation counts: %s", node, reply.error.reason)
                continue
            name = str(reply.content.config_records[SITE_RECORD][SITE_NAME])
            if name in per_site:
                name = f"{name}@{node}"  # two SuperNodes calling themselves the same site stay apart
            per_site[name] = dict(reply.content.metric_records[METRICS_RECORD])
        missing = len(messages) - len(replies)
        if missing:
            self.errors.append({"node_id": None, "code": NO_REPLY,
                                "reason": f"{missing} node(s) did not answer in time"})
        if not per_site:
            raise FederatedEvaluationError(
                f"federated evaluation: none of {len(nodes)} node(s) sent held-out counts ("
                + "; ".join(e["reason"] for e in self.errors) + "); sites share them with share-evaluation=true "
                "in their node config, or give the server its own eval-data-path")
        self.sizes = {name: int(m[EVAL_N]) for name, m in per_site.items()}
        return federated_report(per_site)

    def describe(self) -> dict[str, Any]:
        """The summary's dataset section: the server holds no data; the sites' held-out sizes."""
        return {"name": "+".join(sorted(self.sizes)) or "sites", "source": "the sites' own data (federated evaluation)",
                "synthetic": False, "report_split": self.report_split, "sizes": dict(self.sizes),
                "evaluation": "federated", "evaluation_errors": list(self.errors)}
