"""The ClientApp: receive the global model, train on the local share, reply with arrays and metrics.

Everything here is translation between Flower messages and the fer_models core: the data,
the model and the training loop come from :mod:`fer_models.federation.task` and :mod:`fer_models.training.engine`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.ledger import LedgerMismatch, LedgerMissing, lineage_of
from client.mods import client_side_clipping
from client.node_privacy import NodePrivacyError
from client.secagg import secure_aggregation
from client.training import BudgetRefusal, train_local
from fer_models.config import RunConfig
from fer_models.federation.federated_eval import NoHeldOutSplit, evaluate_local, held_out_counts
from fer_models.federation.sites import SiteDataError, local_data
from fer_models.federation.wire import (
    ARRAYS_RECORD,
    BUDGET_EXCEEDED,
    CLIENT_REASONS,
    CONFIG_RECORD,
    EVALUATE_COUNTS,
    EVALUATION_NOT_SHARED,
    LEDGER_MISSING,
    METRICS_RECORD,
    NODE_CONFIG_ERROR,
    NODE_PARTITION_ID,
    NUM_PARTITIONS,
    PRIVATE_EVALUATION_REFUSED,
    PROXIMAL_MU,
    ROUND_OFFSET,
    SERVER_ROUND,
    SITE_DATA_ERROR,
    SITE_NAME,
    SITE_RECORD,
    EvalReply,
    TrainReply,
)

logger = logging.getLogger(__name__)

#: Error code of a reply from a client that refuses to train past its privacy budget.
BUDGET_EXCEEDED_CODE = BUDGET_EXCEEDED

app = ClientApp(mods=[secure_aggregation, client_side_clipping])  # masking outermost: it masks the clipped update


def refusal(msg: Message, code: int, detail: object, *, level: int = logging.ERROR) -> Message:
    """The error reply of ``code``: its fixed, generic reason only (fer_models/federation/wire.py CLIENT_REASONS).
    The detail (paths, labels, counts, settings) goes to this node's own log, never to the server."""
    logger.log(level, "refused (code %d): %s", code, detail)
    return Message(Error(code=code, reason=CLIENT_REASONS[code]), reply_to=msg)


def _site_error(msg: Message, exc: Exception) -> Message:
    return refusal(msg, SITE_DATA_ERROR, exc)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on this client's partition."""
    started = time.perf_counter()
    cfg = RunConfig.from_flat(context.run_config)
    try:
        local = local_data(cfg, context.node_config)
    except SiteDataError as exc:  # this site stops; the run goes on with the others if min-train-clients allows
        return _site_error(msg, exc)
    config = msg.content[CONFIG_RECORD]
    # a resumed run numbers rounds from 1 again; round-offset restores the run's own numbering
    server_round = int(config.get(SERVER_ROUND, 0)) + int(config.get(ROUND_OFFSET, 0))  # type: ignore[union-attr]
    proximal_mu = float(config.get(PROXIMAL_MU, 0.0))  # type: ignore[union-attr]
    state = msg.content[ARRAYS_RECORD].to_torch_state_dict()  # type: ignore[union-attr]
    try:
        result = train_local(cfg=cfg, context=context, local=local, global_state=state, server_round=server_round,
                             proximal_mu=proximal_mu, lineage=lineage_of(config, context))
    except BudgetRefusal as exc:
        return refusal(msg, BUDGET_EXCEEDED, f"{local.name}: {exc}", level=logging.WARNING)
    except (LedgerMissing, LedgerMismatch) as exc:
        return refusal(msg, LEDGER_MISSING, f"{local.name}: {exc}")
    except NodePrivacyError as exc:
        return refusal(msg, NODE_CONFIG_ERROR, f"{local.name}: {exc}")
    arrays = ArrayRecord(result.state)
    reply = TrainReply.from_metrics(result.metrics)  # the wire contract, checked before anything leaves
    if reply.train_seconds is not None:  # timing goes with the train statistics: never under DP
        reply = replace(reply, round_seconds=time.perf_counter() - started)
    content = RecordDict({ARRAYS_RECORD: arrays, METRICS_RECORD: MetricRecord(reply.to_metrics())})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global model: a site's held-out counts (federated evaluation, when the server asks
    for them) or the loss and accuracy on this client's share (client-side evaluation)."""
    cfg = RunConfig.from_flat(context.run_config)
    if cfg.dp != "none":  # loss and accuracy on private data would leave outside the accounted mechanism
        return refusal(msg, PRIVATE_EVALUATION_REFUSED, f"dp={cfg.dp}: this client sends no evaluation metrics "
                       f"(they are not noised or accounted)", level=logging.INFO)
    try:
        local = local_data(cfg, context.node_config)
    except SiteDataError as exc:
        return _site_error(msg, exc)
    state = msg.content[ARRAYS_RECORD].to_torch_state_dict()  # type: ignore[union-attr]
    config = msg.content.config_records.get(CONFIG_RECORD, {})
    if local.site is not None and not local.site.share_evaluation:  # a site decides what leaves it
        return refusal(msg, EVALUATION_NOT_SHARED, f"{local.name} does not share evaluation results of its held-out "
                       f"split: its node config would need share-evaluation=true", level=logging.INFO)
    if config.get(EVALUATE_COUNTS):
        if local.site is None:
            return refusal(msg, EVALUATION_NOT_SHARED, f"{local.name} is a partition, not a site: federated "
                           f"evaluation needs client-data=site", level=logging.INFO)
        try:
            counts = held_out_counts(cfg=cfg, local=local, global_state=state)
        except NoHeldOutSplit as exc:
            return _site_error(msg, exc)
        return Message(content=RecordDict({METRICS_RECORD: MetricRecord(counts),
                                           SITE_RECORD: ConfigRecord({SITE_NAME: local.site.name})}), reply_to=msg)
    pid = int(context.node_config.get(NODE_PARTITION_ID, 0))  # type: ignore[arg-type]
    num = int(context.node_config.get(NUM_PARTITIONS, cfg.num_clients))  # type: ignore[arg-type]
    reply = EvalReply.from_metrics(evaluate_local(cfg=cfg, local=local, partition_id=pid, num_partitions=num,
                                                  global_state=state))
    return Message(content=RecordDict({METRICS_RECORD: MetricRecord(reply.to_metrics())}), reply_to=msg)
