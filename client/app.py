"""The ClientApp: receive the global model, train on the local share, reply with arrays and metrics.

Everything here is translation between Flower messages and the fer_models core: the data,
the model and the training loop come from :mod:`fer_models.task` and :mod:`fer_models.engine`.
"""

from __future__ import annotations

import logging

from flwr.app import ArrayRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.ledger import LedgerMismatch, LedgerMissing, lineage_of
from client.mods import client_side_clipping
from client.secagg import secure_aggregation
from client.training import BudgetRefusal, evaluate_local, train_local
from fer_models.config import RunConfig
from fer_models.wire import (BUDGET_EXCEEDED, LEDGER_MISSING, PRIVATE_EVALUATION_REFUSED, ROUND_OFFSET,
                             SERVER_ROUND)

logger = logging.getLogger(__name__)

#: Error code of a reply from a client that refuses to train past its privacy budget.
BUDGET_EXCEEDED_CODE = BUDGET_EXCEEDED

app = ClientApp(mods=[secure_aggregation, client_side_clipping])  # masking outermost: it masks the clipped update


def _partition(context: Context, cfg: RunConfig) -> tuple[int, int]:
    """(partition-id, num-partitions) from the node config (simulation or a SuperNode's own)."""
    node = context.node_config
    if "partition-id" not in node:
        raise KeyError("node config has no 'partition-id': start the SuperNode with "
                       "--node-config \"partition-id=<i> num-partitions=<n>\"")
    num = int(node.get("num-partitions", cfg.num_clients))  # type: ignore[arg-type]
    return int(node["partition-id"]), num  # type: ignore[arg-type]


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on this client's partition."""
    cfg = RunConfig.from_flat(context.run_config)
    pid, num = _partition(context, cfg)
    config = msg.content["config"]
    # a resumed run numbers rounds from 1 again; round-offset restores the run's own numbering
    server_round = int(config.get(SERVER_ROUND, 0)) + int(config.get(ROUND_OFFSET, 0))  # type: ignore[union-attr]
    proximal_mu = float(config.get("proximal-mu", 0.0))  # type: ignore[union-attr]
    state = msg.content["arrays"].to_torch_state_dict()  # type: ignore[union-attr]
    try:
        result = train_local(cfg=cfg, context=context, partition_id=pid, num_partitions=num,
                             global_state=state, server_round=server_round, proximal_mu=proximal_mu,
                             lineage=lineage_of(config, context))
    except BudgetRefusal as refusal:
        logger.warning("client %d: %s", pid, refusal)
        return Message(Error(code=BUDGET_EXCEEDED, reason=str(refusal)), reply_to=msg)
    except (LedgerMissing, LedgerMismatch) as refusal:
        logger.error("client %d: %s", pid, refusal)
        return Message(Error(code=LEDGER_MISSING, reason=str(refusal)), reply_to=msg)
    content = RecordDict({"arrays": ArrayRecord(result.state), "metrics": MetricRecord(result.metrics)})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on this client's local share (client-side evaluation)."""
    cfg = RunConfig.from_flat(context.run_config)
    pid, num = _partition(context, cfg)
    if cfg.dp != "none":  # loss and accuracy on private data would leave outside the accounted mechanism
        return Message(Error(code=PRIVATE_EVALUATION_REFUSED, reason=f"dp={cfg.dp}: this client sends no evaluation "
                             f"metrics (they are not noised or accounted)"), reply_to=msg)
    state = msg.content["arrays"].to_torch_state_dict()  # type: ignore[union-attr]
    metrics = evaluate_local(cfg=cfg, partition_id=pid, num_partitions=num, global_state=state)
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
