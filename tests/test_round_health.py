"""The ServerApp end to end with scripted clients (no Ray): bad updates are rejected, failed rounds stop.

A fake Grid answers every training message the way a scripted client would (a known step away
from the global model, NaN, or an error), so the expected global model is computed by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import pytest
import torch
from flwr.app import ArrayRecord, Context, Error, Message, MetricRecord, RecordDict

from fer_models.config import RunConfig
from server.app import main
from server.validation import RoundFailedError

NODES = (1, 2, 3)
#: (server round, node id, global state) -> the reply's state, or a str: the client's error message
Script = Callable[[int, int, dict[str, torch.Tensor]], "dict[str, torch.Tensor] | str"]


def _step(state: dict[str, torch.Tensor], node: int) -> dict[str, torch.Tensor]:
    return {k: v + 0.01 * node if v.is_floating_point() else v.clone() for k, v in state.items()}


def _examples(node: int) -> int:
    return 10 * node


class ScriptedGrid:
    """The Grid methods Flower's Strategy.start calls, answered by ``script``."""

    def __init__(self, script: Script) -> None:
        self.script = script

    def get_node_ids(self) -> list[int]:
        return list(NODES)

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for msg in messages:
            server_round = int(msg.content["config"]["server-round"])
            out = self.script(server_round, msg.metadata.dst_node_id, msg.content["arrays"].to_torch_state_dict())
            if isinstance(out, str):
                replies.append(Message(Error(code=0, reason=out), reply_to=msg))
                continue
            node = msg.metadata.dst_node_id
            metrics = MetricRecord({"num-examples": _examples(node), "train-loss": 1.0, "train-accuracy": 0.5,
                                    "partition-id": node - 1})
            replies.append(Message(RecordDict({"arrays": ArrayRecord(out), "metrics": metrics}), reply_to=msg))
        return replies


def _run(tmp_path: Path, script: Script, **overrides) -> Path:
    values = {"num-clients": 3, "num-server-rounds": 2, "synthetic-per-class": 6, "synthetic-eval-per-class": 2,
              "min-client-samples": 2, "out-dir": str(tmp_path / "run"), "cache-dir": str(tmp_path / "cache"),
              **overrides}
    cfg = RunConfig.from_flat(values)
    main(ScriptedGrid(script), Context(run_id=0, node_id=0, node_config={}, state=RecordDict(),
                                       run_config=cfg.to_flat()))
    return tmp_path / "run"


def _strict_json(path: Path):
    def refuse(name: str):
        raise ValueError(f"{path} holds {name}: not strict JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def _saved(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_a_nan_update_is_rejected_and_the_global_model_is_fedavg_of_the_others(tmp_path, flower_identity):
    rounds_seen: dict[int, dict[str, torch.Tensor]] = {}

    def script(server_round, node, state):
        rounds_seen.setdefault(server_round, state)
        out = _step(state, node)
        if server_round == 2 and node == 3:
            out = {k: torch.full_like(v, math.nan) if v.is_floating_point() else v for k, v in out.items()}
        return out

    run = _run(tmp_path, script)
    start = rounds_seen[2]
    # FedAvg of nodes 1 and 2 by hand: each moved every weight by 0.01 * node, weighted by its examples
    shift = sum(0.01 * n * _examples(n) for n in (1, 2)) / sum(_examples(n) for n in (1, 2))
    model = _saved(run / "model.pt")
    assert model["round"] == 2
    for key, value in model["state_dict"].items():
        assert torch.isfinite(value).all(), key
        if value.is_floating_point():
            assert torch.allclose(value, start[key] + shift, atol=1e-6), key
    summary = _strict_json(run / "summary.json")
    assert summary["rejected_updates"] == 1
    rejected = summary["rounds"][1]["clients_rejected"]
    assert [r["node_id"] for r in rejected] == [3] and "non-finite" in rejected[0]["reason"]
    assert summary["rounds"][1]["clients_responded"] == 2
    for line in (run / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"metrics.jsonl holds {c}"))


def test_a_round_where_every_client_fails_stops_the_run_and_keeps_the_last_good_model(tmp_path, flower_identity):
    def script(server_round, node, state):
        if server_round == 2:
            return f"ValueError: learning rate exploded on node {node}"
        return _step(state, node)

    with pytest.raises(RoundFailedError) as failed:
        _run(tmp_path, script)
    message = str(failed.value)
    assert "round 2 failed" in message and "0 of 3" in message and "learning rate exploded" in message
    run = tmp_path / "run"
    assert not (run / "summary.json").exists(), "a failed run must not write a final result"
    failure = _strict_json(run / "failure.json")
    assert failure["round"] == 2 and failure["last_good_round"] == 1 and len(failure["errors"]) == 3
    assert _saved(run / "model.pt")["round"] == 1
    assert _saved(run / "checkpoint.pt")["round"] == 1


def test_an_update_far_larger_than_the_others_is_rejected(tmp_path, flower_identity):
    def script(server_round, node, state):
        out = _step(state, node)
        if node == 2:
            out = {k: v * 1e6 if v.is_floating_point() else v for k, v in out.items()}
        return out

    run = _run(tmp_path, script, **{"num-server-rounds": 1})
    summary = _strict_json(run / "summary.json")
    (rejected,) = summary["rounds"][0]["clients_rejected"]
    assert rejected["node_id"] == 2 and "median" in rejected["reason"]
