"""secure-aggregation=secaggplus on the server: a Grid whose training round is Flower's SecAgg+ protocol.

Flower ships SecAgg+ as a workflow of the legacy (FitIns/FitRes) API. fedfer's strategies are
message-API strategies, so :class:`SecAggPlusGrid` runs the workflow's four stages
(:class:`flwr.server.workflow.SecAggPlusWorkflow`: setup, share keys, collect masked vectors,
unmask; Flower's protocol and crypto code, unchanged) inside ``send_and_receive`` of the strategy's
training messages, and answers each client that took part with a reply holding the *unmasked
weighted mean* (global model + mean update) and that client's public metrics, as Flower's own
workflow hands the aggregate to a legacy strategy. Any strategy that aggregates by the weighted
mean (FedAvg, FedProx, FedAdam's server step, client-level DP's noise on the mean) thus yields the
secure aggregate; a median cannot (refused by fer_models/config/secagg_checks.py).

What the server sees of one client: its public keys, encrypted key shares, a masked vector, shares
of other clients' keys, and its public metrics. The per-update screening of server/grid.py cannot
see individual updates under SecAgg+ (server/app.py turns it off); the metrics screen still runs,
on the masked vectors' metrics, *before* the sum: a rejected client counts as dropped out.

Two changes to what Flower's workflow would do on its own. Masks: its unmask stage rebuilds masks
with ``pseudo_rand_gen``, which this module replaces at import with fedfer's expansion keyed by the
whole seed (fer_models/privacy/secagg_prg.py; client/secagg.py does the same on the clients). Fewest summed:
a round that collected fewer than 3 masked vectors halts before the unmask stage (no key shares are
asked for): a sum of one update is that update, and a sum of two gives each of the two the other's.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.common import FitIns, Parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.compat.common import recorddict_compat as compat
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp import Grid

from fer_models.config import ConfigError, RunConfig
from fer_models.config.secagg_checks import MIN_CLIENTS, MODULUS_RANGE, resolve_shares
from fer_models.data import FaceStore
from fer_models.federation.task import train_pool
from fer_models.federation.wire import (
    ARRAYS_RECORD,
    CONFIG_RECORD,
    METRICS_RECORD,
    NUM_EXAMPLES,
    SECAGG_HALTED,
    SECAGG_WEIGHT_KEY,
    SERVER_ROUND,
    UNIFORM_WEIGHT,
)
from fer_models.privacy import secagg_prg

logger = logging.getLogger(__name__)

# Flower's workflow imported pseudo_rand_gen by name: the masks it removes would come from a 32-bit seed,
# not the clients' (fer_models/privacy/secagg_prg.py), and the sum would not unmask. Replace that name in the
# workflow's module before any round runs.
secagg_prg.install(target=importlib.import_module("flwr.server.workflow.secure_aggregation.secaggplus_workflow"))

#: Looks at a reply's public metrics; returns (error code, reason) to leave that client out of the sum.
Screen = Callable[[dict[str, Any]], "tuple[int, str] | None"]


@dataclass(frozen=True)
class SecAggSettings:
    num_shares: int  # 0 = every sampled client
    threshold: int  # 0 = more than half the shares
    clipping_range: float
    quantization_range: int
    max_weight: float

    @classmethod
    def from_config(cls, cfg: RunConfig, *, uniform_weight: bool, pool_size: int) -> "SecAggSettings":
        """The run's settings; the max weight is 1 for uniform weights, else secagg-max-weight or ``pool_size``."""
        max_weight = 1.0 if uniform_weight else (cfg.secagg_max_weight or float(pool_size))
        return cls(num_shares=cfg.secagg_num_shares, threshold=cfg.secagg_reconstruction_threshold,
                   clipping_range=cfg.secagg_clipping_range, quantization_range=cfg.secagg_quantization_range,
                   max_weight=max_weight)


def quantization_error_bound(*, weights: list[float], settings: SecAggSettings) -> float:
    """Largest possible |secure mean - exact weighted mean| per entry, for updates within the clipping range.

    Each client rounds ``update * q_i / q`` stochastically to a grid of step ``2c/q`` (error < one step)
    and its weight to ``q_i = round(w_i / max_weight * q)``; the server divides the sum by ``sum(q_i)/q``:
    ``k * 2c / sum(q_i)`` from the rounding, plus ``c * sum_i |q_i/sum(q) - w_i/sum(w)|`` from the weights.
    """
    q, c = settings.quantization_range, settings.clipping_range
    q_weights = np.array([round(w / settings.max_weight * q) for w in weights], dtype=float)
    exact = np.asarray(weights, dtype=float)
    rounding = len(weights) * 2 * c / q_weights.sum()
    return float(rounding + c * np.abs(q_weights / q_weights.sum() - exact / exact.sum()).sum())


class _Protocol(SimpleNamespace):
    """The parts of a LegacyContext that Flower's SecAgg+ stages use, for one round of given nodes."""

    def __init__(self, *, node_ids: list[int], server_round: int) -> None:
        state = RecordDict({MAIN_CONFIGS_RECORD: ConfigRecord({WorkflowKey.CURRENT_ROUND: server_round}),
                            MAIN_PARAMS_RECORD: ArrayRecord()})
        super().__init__(state=state, node_ids=node_ids, aggregate=None)
        self.strategy = self.client_manager = self

    def num_available(self) -> int:
        return len(self.node_ids)

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: Any) -> list[tuple[Any, FitIns]]:
        """The nodes the strategy already sampled (their train content is set after the setup stage)."""
        return [(SimpleNamespace(node_id=nid), FitIns(parameters, {})) for nid in self.node_ids]

    def aggregate_fit(self, server_round: int, results: list, failures: list) -> tuple[None, dict]:
        """Receives the unmasked mean (every result carries it); keeps it for :class:`SecAggPlusGrid`."""
        if results:
            self.aggregate = parameters_to_ndarrays(results[0][1].parameters)
        return None, {}


class _StageGrid:
    """The Grid the stages talk through: records every stage's replies, screens the masked vectors' metrics."""

    def __init__(self, grid: Grid, screen: Screen | None) -> None:
        self._grid, self._screen = grid, screen
        self.errors: dict[int, Message] = {}  # node -> its first error reply (its own, or the screen's)
        self.masked: dict[int, Message] = {}  # node -> its reply with the masked vector
        self.bytes_sent = self.bytes_received = 0

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        self.bytes_sent += sum(payload_bytes(m) for m in messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self.bytes_received += sum(payload_bytes(r) for r in replies if not r.has_error())
        sent = {m.metadata.dst_node_id: m for m in messages}
        out = []
        for reply in replies:
            node = reply.metadata.src_node_id
            if not reply.has_error() and Key.MASKED_PARAMETERS in reply.content.config_records[RECORD_KEY_CONFIGS]:
                metrics = {"node_id": node, **compat.recorddict_to_fitres(reply.content, keep_input=True).metrics}
                verdict = self._screen(metrics) if self._screen else None
                if verdict:  # left out of the sum before it is formed: the protocol treats it as a dropout
                    reply = Message(Error(code=verdict[0], reason=verdict[1]), reply_to=sent[node])
                else:
                    self.masked[node] = reply
            if reply.has_error():
                self.errors.setdefault(node, reply)
            out.append(reply)
        return out


class SecAggPlusGrid:
    """Delegates to a Flower Grid; a send of training messages runs one SecAgg+ round (see module doc)."""

    def __init__(self, grid: Grid, *, settings: SecAggSettings, weight_key: str = NUM_EXAMPLES,
                 screen: Screen | None = None) -> None:
        self._grid = grid
        self.settings = settings
        self.weight_key = weight_key
        self.screen = screen
        self.last_round: dict[str, float] = {}  # the last round's quantization error bound and costs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        if not messages or messages[0].metadata.message_type != MessageType.TRAIN:
            return self._grid.send_and_receive(messages, timeout=timeout)
        return self._secure_round(messages, timeout)

    def _secure_round(self, messages: list[Message], timeout: float | None) -> list[Message]:
        started, self.last_round = time.perf_counter(), {}
        by_node = {m.metadata.dst_node_id: m for m in messages}
        server_round = int(messages[0].content[CONFIG_RECORD].get(SERVER_ROUND, 0))  # type: ignore[union-attr]
        shares, threshold = resolve_shares(num_shares=min(self.settings.num_shares, len(messages)),
                                           threshold=self.settings.threshold, sampled=len(messages))
        workflow = SecAggPlusWorkflow(
            num_shares=1.0 if shares >= len(messages) else shares,  # 1.0 = all (an int must be > 2)
            reconstruction_threshold=threshold, max_weight=self.settings.max_weight,
            clipping_range=self.settings.clipping_range, quantization_range=self.settings.quantization_range,
            modulus_range=MODULUS_RANGE, timeout=timeout)
        protocol = _Protocol(node_ids=list(by_node), server_round=server_round)
        stages = _StageGrid(self._grid, self.screen)
        state = WorkflowState()
        completed = workflow.setup_stage(stages, protocol, state)  # type: ignore[arg-type]
        state.nid_to_fitins = {nid: self._train_content(by_node[nid]) for nid in by_node}
        completed = completed and workflow.share_keys_stage(stages, protocol, state)  # type: ignore[arg-type]
        # Flower's unmask stage asks for key shares of every node sampled at setup, but one that left before
        # sharing its keys has none (every client fails with a KeyError) and masked nothing: count from here
        # only the nodes whose key shares went out
        state.sampled_node_ids = set(state.active_node_ids)
        completed = completed and workflow.collect_masked_vectors_stage(stages, protocol, state)  # type: ignore[arg-type]
        too_few = completed and len(state.active_node_ids) < MIN_CLIENTS  # halt before any key share is asked for
        completed = completed and not too_few and workflow.unmask_stage(stages, protocol, state)  # type: ignore[arg-type]
        if not completed or protocol.aggregate is None:
            reason = f"secure aggregation halted: fewer than the reconstruction threshold ({threshold} of " \
                     f"{shares} shares) of the {len(messages)} sampled clients took part; nothing was aggregated"
            if too_few:
                reason = (f"secure aggregation halted: fewer than {MIN_CLIENTS} masked updates: unmasking would "
                          f"reveal the sum of {len(state.active_node_ids)}, which gives away an individual update "
                          f"(one update is itself; of two, each client reads the other's from its own); nothing was "
                          f"unmasked or aggregated")
            logger.error("round %d: %s", server_round, reason)
            return [stages.errors.get(nid) or Message(Error(code=SECAGG_HALTED, reason=reason), reply_to=m)
                    for nid, m in by_node.items()]
        replies = self._mean_replies(by_node, stages, protocol.aggregate)
        weights = [float(dict(r.content[METRICS_RECORD])[self.weight_key]) for r in replies]  # type: ignore[arg-type]
        self.last_round = {"secagg_clients_summed": len(replies), "secagg_shares": shares,
                           "secagg_threshold": threshold,
                           "secagg_quantization_error_max": quantization_error_bound(weights=weights,
                                                                                     settings=self.settings),
                           "secagg_seconds": round(time.perf_counter() - started, 3),
                           "secagg_bytes_sent": stages.bytes_sent, "secagg_bytes_received": stages.bytes_received}
        logger.info("round %d: secure aggregation of %d clients (%d shares, threshold %d); quantization error "
                    "<= %.3g per entry", server_round, len(replies), shares, threshold,
                    self.last_round["secagg_quantization_error_max"])
        return replies + list(stages.errors.values())

    def _train_content(self, message: Message) -> RecordDict:
        """The strategy's train content for one node, with the weight key (a RecordDict per node: the stage
        adds that node's key shares to it)."""
        config = ConfigRecord({**dict(message.content[CONFIG_RECORD]), SECAGG_WEIGHT_KEY: self.weight_key})  # type: ignore[arg-type]
        return RecordDict({ARRAYS_RECORD: message.content[ARRAYS_RECORD], CONFIG_RECORD: config})

    @staticmethod
    def _mean_replies(by_node: dict[int, Message], stages: _StageGrid, mean_update: list[np.ndarray]) -> list[Message]:
        """Every summed client's reply: the global model plus the unmasked mean update, and its public metrics."""
        received = next(iter(by_node.values())).content[ARRAYS_RECORD]
        arrays = ArrayRecord({name: Array(np.asarray(old + delta, dtype=old.dtype))  # type: ignore[arg-type]
                              for name, old, delta in zip(received.keys(), received.to_numpy_ndarrays(),  # type: ignore[union-attr]
                                                          mean_update)})
        out = []
        for node, reply in stages.masked.items():
            if node in stages.errors:  # masked vector sent, unmask shares not: still in the sum
                del stages.errors[node]
            metrics = MetricRecord(dict(compat.recorddict_to_fitres(reply.content, keep_input=True).metrics))  # type: ignore[arg-type]
            out.append(Message(RecordDict({ARRAYS_RECORD: arrays, METRICS_RECORD: metrics}), reply_to=by_node[node]))
        return out


def payload_bytes(message: Message) -> int:
    """Bytes of a message's records (arrays, and the configs' byte strings): the protocol's traffic."""
    if message.has_error():
        return 0
    total = sum(len(a.data) for rec in message.content.array_records.values() for a in rec.values())
    for rec in message.content.config_records.values():
        for value in rec.values():
            items = value if isinstance(value, list) else [value]
            total += sum(len(v) if isinstance(v, (bytes, str)) else 8 for v in items)
    return total


def secure_grid(grid: Grid, *, cfg: RunConfig, store: FaceStore | None, strategy: object,
                screen: Screen | None = None) -> Grid | SecAggPlusGrid:
    """``grid`` itself, or under secure-aggregation=secaggplus the SecAgg+ grid around it. ``store`` is the
    run's dataset (partitions: the pool bounds every weight), None for sites (secagg-max-weight is required)."""
    if cfg.secure_aggregation == "none":
        return grid
    weight_key = weight_key_of(strategy)
    if store is None and weight_key != UNIFORM_WEIGHT and not cfg.secagg_max_weight:
        raise ConfigError("secure-aggregation=secaggplus with client-data=site: the server holds no data to bound "
                          "the sites' weights; set secagg-max-weight to at least the largest site's training-image "
                          "count")
    settings = SecAggSettings.from_config(cfg, uniform_weight=weight_key == UNIFORM_WEIGHT,
                                          pool_size=len(train_pool(cfg, store)) if store is not None else 0)
    logger.info("secure aggregation: SecAgg+ (%s); the server sees masked updates only, so its per-update norm "
                "screening (max-update-norm-ratio) is off", settings)
    return SecAggPlusGrid(grid, settings=settings, weight_key=weight_key, screen=screen)


def weight_key_of(strategy: object) -> str:
    """The reply metric the (innermost) strategy weights its mean by."""
    while strategy is not None:
        if hasattr(strategy, "weighted_by_key"):
            return str(strategy.weighted_by_key)  # type: ignore[attr-defined]
        strategy = getattr(strategy, "strategy", None)
    return NUM_EXAMPLES
