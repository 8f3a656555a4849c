"""The ServerApp: run the strategy, evaluate the global model each round, keep the run record."""

from __future__ import annotations

import logging
import pickle
import random
import secrets
import time

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fer_models.common.atomic import AtomicWriteError
from fer_models.config import ConfigError, RunConfig
from fer_models.federation.pretrain import initial_model
from fer_models.federation.wire import LINEAGE, ROUND_OFFSET
from server.checkpoint import check_resumable, load_checkpoint, restore_strategy_state, save_checkpoint
from server.evaluation import make_evaluator, model_image_side
from server.federated_evaluation import FederatedEvaluationError
from server.grid import RecordingGrid, RoundReplies
from server.recorder import RunRecorder
from server.secagg import secure_grid
from server.strategy import make_strategy
from server.validation import RoundFailedError, round_failure

logger = logging.getLogger(__name__)

app = ServerApp()


def _relax_min_available(strategy: object, minimum: int) -> None:
    while strategy is not None:
        if hasattr(strategy, "min_available_nodes"):
            strategy.min_available_nodes = minimum  # type: ignore[attr-defined]
        strategy = getattr(strategy, "strategy", None)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Federate ``num-server-rounds`` rounds; every round is evaluated, recorded and checkpointed."""
    try:
        cfg = RunConfig.from_flat(context.run_config, source="run config")
    except ConfigError as exc:  # `flwr run` shows the ServerApp's log: say it before Flower's traceback
        logger.error("invalid run config, nothing was run: %s", exc)
        raise
    nodes = len(list(grid.get_node_ids()))
    if cfg.client_data == "partition" and nodes and nodes != cfg.num_clients:  # e.g. `flwr run` without --federation-config "num-supernodes=N"
        logger.warning("%d SuperNodes are connected but num-clients=%d: each client splits the data by the "
                       "num-partitions of its own node config; run as many SuperNodes as num-clients",
                       nodes, cfg.num_clients)
    evaluator = make_evaluator(cfg=cfg, grid=grid)  # client-data=site: no site's data is opened here
    if cfg.client_data == "partition":
        logger.info("dataset %s", evaluator.store.describe())
    recorder = RunRecorder(cfg=cfg, evaluator=evaluator)
    strategy = make_strategy(cfg)
    if cfg.dp == "client":
        recorder.ledger.client_dp = strategy  # type: ignore[assignment]
    lineage = secrets.token_hex(8)  # the clients' ledgers belong to this federation (kept across resumes)
    done = 0
    random.seed(cfg.seed)  # client sampling (fraction-train < 1) is reproducible for a seed
    if cfg.resume_from:
        ckpt = load_checkpoint(cfg.resume_from)
        check_resumable(ckpt["config"], cfg)
        done = int(ckpt["round"])
        initial = ckpt["state_dict"]
        restore_strategy_state(strategy, pickle.loads(ckpt["strategy"]))
        random.setstate(ckpt["python_random"])
        recorder.restore(ckpt["recorder"], completed_rounds=done)
        lineage = str(ckpt.get("lineage") or lineage)
        logger.info("resuming after round %d of %d from %s", done, cfg.num_server_rounds, cfg.resume_from)
        if cfg.optimizer_state == "client":
            logger.warning("optimizer-state=client: the clients' momentum stays on the clients and is not in the "
                           "checkpoint, so each client restarts it once after this resume (epsilon is unaffected)")
    else:
        initial = initial_model(cfg, image_size=model_image_side(evaluator)).state_dict()
    remaining = cfg.num_server_rounds - done
    train_config = ConfigRecord({LINEAGE: lineage, ROUND_OFFSET: done})
    # under dp=client the clipping bounds every update; a norm test relative to the others would not be private;
    # under secure aggregation the server never sees one update (server/secagg.py)
    secure = secure_grid(grid, cfg=cfg, store=getattr(evaluator, "store", None) if cfg.client_data == "partition"
                         else None, strategy=strategy, screen=recorder.ledger.screen)
    recording_grid = RecordingGrid(secure, screen=recorder.ledger.screen,
                                   max_norm_ratio=0.0 if secure is not grid or cfg.dp == "client"
                                   else cfg.max_update_norm_ratio)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        state = arrays.to_torch_state_dict()
        replies, recording_grid.last_train = recording_grid.last_train, RoundReplies()  # a round without sends is empty
        failure = server_round > 0 and round_failure(
            server_round=server_round + done, sent=replies.sent, trained=len(replies.metrics),
            minimum=cfg.min_train_clients, errors=replies.errors, state=state,
            dp_skipped=any(s["round"] == server_round for s in getattr(strategy, "skipped", ())))
        if failure:  # stop before anything of this round is saved: model.pt and checkpoint.pt keep the last good one
            recorder.fail(server_round=server_round, reason=failure, replies=replies)
            raise RoundFailedError(failure)
        try:
            metrics = recorder.on_round(server_round=server_round, state_dict=state, replies=replies,
                                        client_eval=recording_grid.last_evaluate if cfg.fraction_evaluate > 0 else None)
            if server_round > 0:
                # wait for min-available-clients only before the first round: a node that drops out for good
                # must not stall every later round (min-train-clients still has to respond)
                _relax_min_available(strategy, cfg.min_train_clients)
                written = time.perf_counter()
                save_checkpoint(recorder.dir, server_round=server_round + done, config=cfg.to_flat(),
                                state_dict=state, strategy=strategy, recorder_state=recorder.state(), lineage=lineage)
                recorder.add_write_time(time.perf_counter() - written)
        except FederatedEvaluationError as exc:  # no site could evaluate: the round has no result to record
            recorder.fail(server_round=server_round, reason=str(exc), replies=replies)
            raise RoundFailedError(str(exc)) from None
        except AtomicWriteError as exc:  # e.g. a full disk: every file keeps its last complete version
            logger.error("round %d could not be saved, the run stops: %s", server_round + done, exc)
            raise
        return MetricRecord(metrics)

    if remaining > 0:
        result = strategy.start(grid=recording_grid, initial_arrays=ArrayRecord(initial),  # type: ignore[arg-type]
                                num_rounds=remaining, timeout=cfg.round_timeout, train_config=train_config,
                                evaluate_fn=evaluate_fn)
        client_eval = result.evaluate_metrics_clientapp
    else:
        logger.info("all %d rounds were already completed; writing the summary", cfg.num_server_rounds)
        client_eval = {}
    recorder.finish(client_eval=client_eval)
