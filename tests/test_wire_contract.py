"""The three contracts two sides must agree on: the wire (client <-> server), the run folder (server <->
simulation, benchmarks) and the run config's choices (RunConfig <-> the tables that implement them)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from fer_models.config import RunConfig
from fer_models.federation import run_folder, wire
from fer_models.federation.sites import NODE_KEYS, NODE_PRIVACY_KEYS
from fer_models.federation.wire import EvalReply, MalformedReplyError, TrainReply

ROOT = Path(__file__).resolve().parents[1]


# --- (a) each RunConfig choice list equals the table that implements it ------------------------------------------
def _choices(name: str) -> tuple[str, ...]:
    return next(f.metadata["choices"] for f in dataclasses.fields(RunConfig) if f.name == name)


def _tables() -> dict[str, tuple[str, ...]]:
    """RunConfig field -> the keys of the table that implements it (config may not import these modules)."""
    from fer_models.data.clips import CLIP_SAMPLINGS, CLIP_SOURCES, SHORT_RULES
    from fer_models.data.face_crop import FACE_CROPS
    from fer_models.data.loading import DATA_FORMATS
    from fer_models.data.partition import PARTITIONER_NAMES
    from fer_models.models.blocks import ACTIVATIONS
    from fer_models.models.cnn_rnn import RNN_CELLS
    from fer_models.models.frame_encoder import DEFAULT_CHANNELS, FRAME_READOUTS, FRONTEND_DOWNSAMPLE
    from fer_models.models.stages import ENCODERS
    from fer_models.training.augment import POLICIES
    from fer_models.training.optim_state import LR_SCHEDULES

    assert set(DEFAULT_CHANNELS) == set(FRONTEND_DOWNSAMPLE)
    return {"data_format": DATA_FORMATS, "face_crop": FACE_CROPS, "partition": PARTITIONER_NAMES,
            "clip_source": CLIP_SOURCES, "clip_sampling": CLIP_SAMPLINGS, "clip_short": SHORT_RULES, "rnn": tuple(RNN_CELLS), "activation": tuple(ACTIVATIONS),
            "frontend": tuple(DEFAULT_CHANNELS), "encoder": tuple(ENCODERS), "frame_readout": FRAME_READOUTS, "augment": POLICIES, "lr_schedule": LR_SCHEDULES}


@pytest.mark.parametrize("name", ["data_format", "face_crop", "partition", "clip_source", "clip_sampling",
                                  "clip_short", "rnn", "activation",
                                  "frontend", "encoder", "frame_readout", "augment", "lr_schedule"])
def test_each_config_choice_list_equals_the_table_that_implements_it(name):
    assert set(_choices(name)) == set(_tables()[name])
    assert len(_choices(name)) == len(set(_choices(name)))


def test_every_strategy_choice_builds_a_strategy():
    from server.strategy import make_strategy

    for name in _choices("strategy"):
        assert make_strategy(RunConfig.from_flat({"strategy": name})) is not None, name


def test_every_optimizer_choice_builds_an_optimizer():
    from fer_models.training.engine import make_optimizer

    for name in _choices("optimizer"):
        assert isinstance(make_optimizer(nn.Linear(2, 2), name=name, learning_rate=0.1, weight_decay=0.0),
                          torch.optim.Optimizer)


def test_every_accountant_and_grad_sample_choice_is_one_opacus_implements():
    from opacus.accountants import create_accountant
    from opacus.grad_sample.utils import get_gsm_class

    for name in _choices("accountant"):
        assert create_accountant(mechanism=name).mechanism() == name
    for mode in _choices("grad_sample_mode"):
        assert get_gsm_class(mode) is not None


# --- (b) the typed replies ---------------------------------------------------------------------------------------
_DP_TRAIN = {wire.PARTITION_ID: 3, wire.BATCH_SIZE: 64, wire.LEARNING_RATE: 0.5, wire.MAX_GRAD_NORM: 0.1,
             wire.EMA_DECAY: 0.0, wire.ROUND_LEARNING_RATE: 0.5, wire.OPTIMIZER_STATE_CARRIED: 0, wire.EPSILON: 1.25,
             wire.UNIT_IS_PERSON: 0, wire.NOISE_MULTIPLIER: 1.1, wire.SAMPLE_RATE: 0.05, wire.DP_STEPS: 40,
             wire.NUM_EXAMPLES: 120, wire.UNIFORM_WEIGHT: 1}
_PLAIN_TRAIN = {**{k: v for k, v in _DP_TRAIN.items() if k not in wire.PUBLIC_DP_METRICS - {
    wire.PARTITION_ID, wire.NUM_EXAMPLES, wire.UNIFORM_WEIGHT, *wire.CLIENT_SETTINGS, wire.ROUND_LEARNING_RATE,
    wire.OPTIMIZER_STATE_CARRIED}},
    wire.TRAIN_LOSS: 1.5, wire.TRAIN_ACCURACY: 0.25, wire.SAMPLES_SEEN: 120, wire.TRAIN_SECONDS: 2.0,
    wire.GLOBAL_LOSS: 1.9, wire.ROUND_SECONDS: 2.5}


@pytest.mark.parametrize("metrics", [_DP_TRAIN, _PLAIN_TRAIN, {wire.NUM_EXAMPLES: 7}], ids=["dp", "plain", "minimal"])
def test_a_train_reply_round_trips_key_for_key_and_in_order(metrics):
    reply = TrainReply.from_metrics(metrics)
    assert reply.to_metrics() == metrics and list(reply.to_metrics()) == list(metrics)
    assert reply.num_examples == metrics[wire.NUM_EXAMPLES]


def test_a_train_reply_reads_each_key_into_its_field():
    reply = TrainReply.from_metrics({**_PLAIN_TRAIN, "node_id": 9})
    assert (reply.partition_id, reply.train_loss, reply.round_seconds, reply.epsilon) == (3, 1.5, 2.5, None)
    assert reply.settings == {k: _PLAIN_TRAIN[k] for k in wire.CLIENT_SETTINGS}
    assert reply.extra == {"node_id": 9} and reply.to_metrics()["node_id"] == 9  # unknown keys are kept


def test_an_eval_reply_round_trips():
    metrics = {wire.NUM_EXAMPLES: 30, wire.EVAL_LOSS: 1.2, wire.EVAL_ACCURACY: 0.4}
    reply = EvalReply.from_metrics(metrics)
    assert (reply.num_examples, reply.loss, reply.accuracy) == (30, 1.2, 0.4)
    assert reply.to_metrics() == metrics


@pytest.mark.parametrize("kind, metrics, key", [
    (TrainReply, {wire.UNIFORM_WEIGHT: 1}, wire.NUM_EXAMPLES),
    (TrainReply, {wire.NUM_EXAMPLES: 12.0}, wire.NUM_EXAMPLES),
    (TrainReply, {wire.NUM_EXAMPLES: True}, wire.NUM_EXAMPLES),
    (TrainReply, {wire.NUM_EXAMPLES: 12, wire.EPSILON: "1.0"}, wire.EPSILON),
    (TrainReply, {wire.NUM_EXAMPLES: 12, wire.TRAIN_LOSS: [1.0]}, wire.TRAIN_LOSS),
    (EvalReply, {wire.NUM_EXAMPLES: 5, wire.EVAL_LOSS: 1.0}, wire.EVAL_ACCURACY),
    (EvalReply, {wire.NUM_EXAMPLES: 5, wire.EVAL_LOSS: None, wire.EVAL_ACCURACY: 0.5}, wire.EVAL_LOSS),
])
def test_a_malformed_reply_is_refused_naming_its_key(kind, metrics, key):
    with pytest.raises(MalformedReplyError, match=repr(key)) as info:
        kind.from_metrics(metrics)
    assert info.value.key == key


def test_the_server_grid_ignores_a_malformed_train_reply_and_records_why(flower_identity):
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    from server.grid import RecordingGrid

    class Replying:
        def send_and_receive(self, messages, *, timeout=None):
            out = []
            for m, metrics in zip(messages, ({wire.NUM_EXAMPLES: 4}, {wire.UNIFORM_WEIGHT: 1})):
                out.append(Message(RecordDict({wire.METRICS_RECORD: MetricRecord(metrics)}), reply_to=m))
            return out

    state = {"w": torch.zeros(2)}
    sent = [Message(RecordDict({wire.ARRAYS_RECORD: ArrayRecord(state)}), dst_node_id=n, message_type="train")
            for n in (1, 2)]
    grid = RecordingGrid(Replying())  # type: ignore[arg-type]
    kept = list(grid.send_and_receive(sent))
    assert len(kept) == 1 and grid.last_train.metrics == [{"node_id": 1, wire.NUM_EXAMPLES: 4}]
    assert [e["code"] for e in grid.last_train.errors] == [wire.MALFORMED_REPLY]
    assert repr(wire.NUM_EXAMPLES) in grid.last_train.errors[0]["reason"]


# --- (c) no product file spells a wire key or a run-folder name itself -------------------------------------------
def _wire_values() -> set[str]:
    out: set[str] = set()
    for name, value in vars(wire).items():
        if name.isupper() and isinstance(value, str):
            out.add(value)
        elif name.isupper() and isinstance(value, (tuple, frozenset)):
            out.update(v for v in value if isinstance(v, str))
    return out | set(NODE_KEYS) | set(NODE_PRIVACY_KEYS)


def _run_folder_names() -> set[str]:
    return {v for k, v in vars(run_folder).items() if k.isupper() and isinstance(v, str)}


#: Values whose spelling is also something else, so a literal of them is not necessarily a wire key.
SHARED_SPELLINGS = {
    "epsilon": "also summary.json's epsilon section and the ledger files' field",
    "name": "wire.SITE_NAME is also the key of every name in summary.json and the dataset description",
    "site": "wire.SITE_RECORD is also the client-data choice 'site'",
    "config": "wire.CONFIG_RECORD is also summary.json's, the checkpoint's and model.pt's config key",
    "metrics": "wire.METRICS_RECORD is also the field of the server's record of a rejected reply",
}
#: (file, value) pairs not yet moved, in files other engineers are rewriting (issue 31); each is a change to make.
PENDING: set[tuple[str, str]] = set()  # (file, literal) pairs still to move: none left
_OWNERS = {"fer_models/federation/wire.py", "fer_models/federation/run_folder.py", "fer_models/federation/sites.py"}


def _string_constants(tree: ast.AST) -> list[ast.Constant]:
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docstrings]


def test_no_product_file_writes_a_wire_key_or_run_folder_name_as_a_literal():
    flat_keys = set(RunConfig().to_flat())  # a RunConfig key (batch-size, data-path, ...) may share a spelling
    watched = (_wire_values() | _run_folder_names()) - set(SHARED_SPELLINGS) - flat_keys
    assert {"num-examples", "partition-id", "eval-accuracy", "summary.json", "metrics.jsonl", "model.pt"} <= watched
    found = []
    for top in ("client", "server", "simulation"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in _OWNERS:
                continue
            for node in _string_constants(ast.parse(path.read_text(encoding="utf-8"))):
                if node.value in watched and (rel, node.value) not in PENDING:
                    found.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert not found, "use the names of fer_models/federation/wire.py and run_folder.py instead:\n" + "\n".join(found)


def test_the_scan_would_catch_a_literal():
    tree = ast.parse('def f(m):\n    """summary.json"""\n    return m["num-examples"], "summary.json"\n')
    assert sorted(n.value for n in _string_constants(tree)) == ["num-examples", "summary.json"]


def test_the_model_file_and_json_policy_live_in_the_core():
    from server import run_folder as server_run_folder
    from simulation.predict import model_io

    assert model_io.MODEL_FORMAT == run_folder.MODEL_FORMAT and model_io.MODEL_FILE == run_folder.MODEL_FILE
    assert server_run_folder.write_json is run_folder.write_json
    assert run_folder.strict_json({"loss": float("nan"), "n": 1}) == '{"loss": null, "n": 1}'
