"""A client's privacy ledger lives on its own node: it survives a restart, fails closed when lost,
and the server rejects a reply whose epsilon went down."""

from __future__ import annotations

import json

import pytest
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict

from client.ledger import LedgerFile
from fer_models.config import RunConfig
from fer_models.federation.wire import CLIENT_REASONS, EPSILON, LEDGER_MISSING, LEDGER_REGRESSION, PARTITION_ID
from server.grid import RecordingGrid
from server.ledger import ServerLedger
from tests.client_rounds import reply_epsilon, train_round
from tests.test_client_privacy import SMALL

pytestmark = pytest.mark.usefixtures("one_thread")
PID = 0


def _node(cfg: RunConfig, state_dir) -> Context:
    """A SuperNode's client context, as after a (re)start: empty state, the node's own state-dir."""
    return Context(run_id=5, node_id=1, state=RecordDict(), run_config=cfg.to_flat(),
                   node_config={"partition-id": PID, "num-partitions": cfg.num_clients, "state-dir": str(state_dir)})


def test_a_restarted_node_continues_its_epsilon(flower_identity, tmp_path):
    cfg = RunConfig.from_flat(SMALL)
    eps1 = reply_epsilon(train_round(_node(cfg, tmp_path), 1))
    eps2 = reply_epsilon(train_round(_node(cfg, tmp_path), 2))  # the node restarted: Context.state is empty
    fresh = reply_epsilon(train_round(_node(cfg, tmp_path / "elsewhere"), 1))
    assert eps2 > eps1 == pytest.approx(fresh)


def test_the_ledger_on_disk_holds_the_replied_epsilon_before_the_reply_leaves(flower_identity, tmp_path):
    cfg = RunConfig.from_flat(SMALL)
    ctx = _node(cfg, tmp_path)
    reply = train_round(ctx, 1)
    where = LedgerFile.locate(ctx, lineage="L1", client=f"p{PID}-of-{cfg.num_clients}")
    saved = json.loads(where.path.read_text())
    assert saved["epsilon"] == pytest.approx(reply_epsilon(reply)) and saved["unit"] == "image"
    assert saved["delta"] == cfg.target_delta and where.marker.exists()


def test_a_client_whose_ledger_was_deleted_refuses_to_train(flower_identity, tmp_path, caplog):
    cfg = RunConfig.from_flat(SMALL)
    ctx = _node(cfg, tmp_path)
    reply_epsilon(train_round(ctx, 1))
    where = LedgerFile.locate(ctx, lineage="L1", client=f"p{PID}-of-{cfg.num_clients}")
    where.path.unlink()
    for context in (_node(cfg, tmp_path), ctx):  # after a restart (marker on disk), and in the same process
        caplog.clear()
        reply = train_round(context, 2)
        assert reply.has_error() and reply.error.code == LEDGER_MISSING
        # the path and the way to restore it are in the node's own log; the reply's reason is generic
        assert str(where.path) in caplog.text and "Restore" in caplog.text
        assert reply.error.reason == CLIENT_REASONS[LEDGER_MISSING] and str(tmp_path) not in reply.error.reason
    where.marker.unlink()
    reply = train_round(ctx, 2)  # the whole folder gone: the running client still remembers it trained
    assert reply.has_error() and reply.error.code == LEDGER_MISSING


def test_a_lineage_switched_within_a_run_is_refused(flower_identity, tmp_path, caplog):
    cfg = RunConfig.from_flat(SMALL)
    ctx = _node(cfg, tmp_path)
    reply_epsilon(train_round(ctx, 1))
    reply = train_round(ctx, 2, lineage="L2")  # a new lineage would mean a fresh, empty ledger
    assert reply.has_error() and reply.error.code == LEDGER_MISSING and "lineage" in reply.error.reason
    assert "switched the run lineage" in caplog.text  # the detail stays in the node's log


class _Grid:
    def __init__(self, replies):
        self.replies = replies

    def send_and_receive(self, messages, *, timeout=None):
        return self.replies


def _reply(eps: float, node: int) -> Message:
    sent = Message(RecordDict(), dst_node_id=node, message_type="train")
    metrics = MetricRecord({PARTITION_ID: 0, EPSILON: eps, "num-examples": 10})
    return Message(RecordDict({"arrays": ArrayRecord({"w": torch.zeros(2)}), "metrics": metrics}), reply_to=sent)


def test_the_server_rejects_a_reply_whose_epsilon_went_down(flower_identity):
    ledger = ServerLedger(RunConfig.from_flat({"dp": "sample"}))
    ledger.record_round(1, [{PARTITION_ID: 0, EPSILON: 2.0}], [])
    sent = [Message(RecordDict(), dst_node_id=1, message_type="train")]
    grid = RecordingGrid(_Grid([_reply(0.9, 1)]), screen=ledger.screen)
    assert list(grid.send_and_receive(sent)) == []  # never reaches aggregation
    err = grid.last_train.errors[0]
    assert err["code"] == LEDGER_REGRESSION and "2.000" in err["reason"] and "0.900" in err["reason"]
    ledger.record_round(2, grid.last_train.metrics, grid.last_train.errors)
    assert ledger.refusals[-1]["code"] == LEDGER_REGRESSION
    control = RecordingGrid(_Grid([_reply(2.5, 1)]), screen=ledger.screen)
    assert len(list(control.send_and_receive(sent))) == 1 and not control.last_train.errors
