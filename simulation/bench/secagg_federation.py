"""An in-process federation behind a Flower Grid, for the SecAgg+ tests and the overhead benchmark.

Each node runs fedfer's ClientApp mods in their order (client/secagg.py, then client/mods.py)
around a stand-in trainer that returns the received model plus a known update; every message
crosses a deep copy, as it would cross the wire. ``down`` maps a node to the SecAgg+ stage from
which it no longer answers (killed mid-round). ``received`` keeps every reply as the server got it.
"""

from __future__ import annotations

import copy
import time
from typing import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from client.mods import client_side_clipping
from client.secagg import secure_aggregation
from fer_models.federation.wire import ARRAYS_RECORD, METRICS_RECORD, NUM_EXAMPLES, PARTITION_ID, UNIFORM_WEIGHT

STAGES = Stage.all()


class Federation:
    """Nodes ``100, 101, ...`` with the given updates and example counts; a Grid for the server."""

    def __init__(self, run_config: dict, updates: list[dict[str, np.ndarray]], examples: list[int], *,
                 down: dict[int, str] | None = None) -> None:
        self.down = down or {}
        self.nodes = {100 + i: n for i, n in enumerate(examples)}
        self.updates = {100 + i: u for i, u in enumerate(updates)}
        self.contexts = {nid: Context(run_id=1, node_id=nid, node_config={}, state=RecordDict(),
                                      run_config=dict(run_config)) for nid in self.nodes}
        self.received: list[Message] = []
        self.trained: dict[int, dict[str, np.ndarray]] = {}  # what each node's trainer returned

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        replies = []
        for sent in messages:
            nid = sent.metadata.dst_node_id
            configs = sent.content.config_records
            stage = configs[RECORD_KEY_CONFIGS].get(Key.STAGE) if RECORD_KEY_CONFIGS in configs else None
            if nid in self.down and stage in STAGES[STAGES.index(self.down[nid]):]:
                continue  # killed: no reply from this stage on
            reply = secure_aggregation(copy.deepcopy(sent), self.contexts[nid],
                                       lambda m, c: client_side_clipping(m, c, self._train))
            replies.append(copy.deepcopy(reply))
        self.received.extend(copy.deepcopy(replies))
        return replies

    def _train(self, msg: Message, context: Context) -> Message:
        nid = msg.metadata.dst_node_id
        received = msg.content[ARRAYS_RECORD]
        self.trained[nid] = {k: v + self.updates[nid][k]
                             for k, v in zip(received.keys(), received.to_numpy_ndarrays())}  # type: ignore[union-attr]
        metrics = MetricRecord({NUM_EXAMPLES: self.nodes[nid], UNIFORM_WEIGHT: 1, PARTITION_ID: nid - 100})
        arrays = ArrayRecord({k: Array(v) for k, v in self.trained[nid].items()})
        return Message(RecordDict({ARRAYS_RECORD: arrays, METRICS_RECORD: metrics}), reply_to=msg)


def protocol_round(*, clients: int, model: str, secure: bool) -> dict:
    """One in-process round; returns wall seconds, payload bytes, and the new global model."""
    import logging

    from flwr.app import Array, ArrayRecord, ConfigRecord
    from flwr.supercore.task_identity import TaskIdentity

    from fer_models.config import RunConfig
    from fer_models.models.from_config import build_model
    from server.secagg import SecAggPlusGrid, SecAggSettings, payload_bytes, weight_key_of
    from server.strategy import make_strategy

    logging.disable(logging.INFO)
    TaskIdentity.task_id = TaskIdentity.run_id = TaskIdentity.node_id = 1
    flat = {"num-clients": clients, "min-train-clients": clients, "model": model,
            **({"secure-aggregation": "secaggplus"} if secure else {})}
    cfg = RunConfig.from_flat(flat)
    start = {k: v.numpy() for k, v in build_model(cfg).state_dict().items()}
    rng = np.random.default_rng(0)
    updates = [{k: rng.normal(0, 0.01, v.shape).astype(v.dtype) for k, v in start.items()} for _ in range(clients)]
    examples = [int(n) for n in rng.integers(100, 1000, clients)]
    fed = Federation(cfg.to_flat(), updates, examples)
    strategy = make_strategy(cfg)
    grid = SecAggPlusGrid(fed, settings=SecAggSettings.from_config(cfg, uniform_weight=False, pool_size=1000),  # type: ignore[arg-type]
                          weight_key=weight_key_of(strategy)) if secure else fed
    began = time.perf_counter()
    messages = list(strategy.configure_train(1, ArrayRecord({k: Array(v) for k, v in start.items()}),
                                             ConfigRecord({}), grid))  # type: ignore[arg-type]
    replies = list(grid.send_and_receive(messages, timeout=60))
    arrays, _ = strategy.aggregate_train(1, replies)
    wall = time.perf_counter() - began
    if secure:
        stats = grid.last_round  # type: ignore[union-attr]
        sent, received, bound = stats["secagg_bytes_sent"], stats["secagg_bytes_received"], \
            stats["secagg_quantization_error_max"]
    else:
        sent, received, bound = sum(map(payload_bytes, messages)), sum(map(payload_bytes, fed.received)), 0.0
    return {"wall_s": wall, "bytes_sent": sent, "bytes_received": received, "bound": bound,
            "params": int(sum(v.size for v in start.values())),
            "model": dict(zip(arrays.keys(), arrays.to_numpy_ndarrays()))}  # type: ignore[union-attr]
