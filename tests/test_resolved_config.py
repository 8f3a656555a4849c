"""What ran is what is reported: under the default DP recipe, summary.json and report.md show the
optimizer, learning rate, clipping norm and batch size the clients actually trained with."""

from __future__ import annotations

import json

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from client.app import train
from fer_models.config import RunConfig
from fer_models.config.recipe import training_hyperparams
from fer_models.federation.task import client_data
from fer_models.models.from_config import build_model
from server.evaluation import make_evaluator
from server.grid import RoundReplies
from server.recorder import RunRecorder
from simulation.reports.report import write_report

pytestmark = pytest.mark.usefixtures("one_thread")


def test_summary_and_report_show_what_the_dp_clients_used(flower_identity, tmp_path):
    cfg = RunConfig.from_flat({"dp": "sample", "target-epsilon": 8.0, "num-clients": 2, "num-server-rounds": 1,
                               "synthetic-per-class": 30, "synthetic-eval-per-class": 5, "local-epochs": 1,
                               "min-client-samples": 4, "out-dir": str(tmp_path / "run")})
    state = build_model(cfg).state_dict()
    replies = RoundReplies(sent=cfg.num_clients)
    for pid in range(cfg.num_clients):
        ctx = Context(run_id=1, node_id=pid + 1, state=RecordDict(), run_config=cfg.to_flat(),
                      node_config={"partition-id": pid, "num-partitions": cfg.num_clients})
        msg = Message(RecordDict({"arrays": ArrayRecord(state), "config": ConfigRecord({"server-round": 1})}),
                      dst_node_id=pid + 1, message_type="train")
        reply = train(msg, ctx)
        assert not reply.has_error(), reply.error
        replies.metrics.append(dict(reply.content["metrics"]))
    recorder = RunRecorder(cfg=cfg, evaluator=make_evaluator(cfg=cfg))
    recorder.on_round(server_round=1, state_dict=state, replies=replies)
    recorder.finish()
    summary = json.loads((recorder.dir / "summary.json").read_text())
    write_report(run_dir=recorder.dir)
    report = (recorder.dir / "report.md").read_text()

    used = [training_hyperparams(cfg, num_samples=len(client_data(cfg, partition_id=p, num_partitions=2)))
            for p in range(2)]
    for pid, (metrics, hp) in enumerate(zip(replies.metrics, used)):
        reported = summary["client_settings"][str(pid)]
        assert reported["batch-size"] == metrics["batch-size"] == hp.batch_size
        assert reported["learning-rate"] == pytest.approx(metrics["learning-rate"])
        assert reported["max-grad-norm"] == metrics["max-grad-norm"] == summary["config"]["max-grad-norm"]
        assert f"| {pid} | {hp.batch_size} |" in report
    config = summary["config"]
    assert config["optimizer"] == used[0].optimizer == "sgd"  # not the adamw default the recipe replaced
    assert config["max-grad-norm"] == 0.1 and config["frontend"] == "scatter"
    for key in ("optimizer", "max-grad-norm", "frontend"):
        assert f"| {key} | {config[key]} |" in report
    assert "| optimizer | adamw |" not in report and "| max-grad-norm | 1.0 |" not in report
    assert torch.isfinite(torch.tensor(summary["epsilon"]["final_max"]))
