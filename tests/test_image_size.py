"""A dataset of 64x64 faces trains and is scored on every path: clients, server, model.pt, evaluate, predict.

The ServerApp runs with a Grid that hands each message to the ClientApp's own handlers in this
process (no Ray), so client training and client evaluation are the real ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict
from PIL import Image

from client.app import evaluate as client_evaluate
from client.app import train as client_train
from fer_models.common.labels import EMOTIONS
from fer_models.config import RunConfig
from server.app import main as server_main
from simulation.commands.cli import main as cli

SIDE = 64
CLIENTS = 2


def _face_folder(root: Path) -> Path:
    """FER2013 folder layout (train/ and test/ with Kaggle prefixes), 64x64 grey faces."""
    rng = np.random.default_rng(0)
    for label, emotion in enumerate(EMOTIONS):
        for split, prefix, count in (("train", "Training", 6), ("test", "PublicTest", 1), ("test", "PrivateTest", 2)):
            for i in range(count):
                pixels = (rng.integers(0, 60, (SIDE, SIDE)) + 25 * label).astype(np.uint8)
                path = root / split / emotion / f"{prefix}_{label}{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels, "L").save(path)
    return root


class InProcessGrid:
    """Delivers each message to the ClientApp handlers of the node it is addressed to."""

    def __init__(self, cfg: RunConfig) -> None:
        self.contexts = {pid + 1: Context(run_id=1, node_id=pid + 1, state=RecordDict(), run_config=cfg.to_flat(),
                                          node_config={"partition-id": pid, "num-partitions": CLIENTS})
                         for pid in range(CLIENTS)}

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages, *, timeout=None):
        handlers = {"train": client_train, "evaluate": client_evaluate}
        return [handlers[m.metadata.message_type](m, self.contexts[m.metadata.dst_node_id]) for m in messages]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("size64")
    data = _face_folder(tmp / "faces")
    cfg = RunConfig.from_flat({"data-path": str(data), "num-clients": CLIENTS, "num-server-rounds": 1,
                               "local-epochs": 1, "batch-size": 16, "min-client-samples": 4,
                               "fraction-evaluate": 1.0, "out-dir": str(tmp / "run"),
                               "cache-dir": str(tmp / "cache")})
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    server_main(InProcessGrid(cfg), Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                                            run_config=cfg.to_flat()))
    return tmp / "run", data


def test_clients_and_server_train_and_evaluate_at_the_data_s_size(run):
    run_dir, _ = run
    summary = json.loads((run_dir / "summary.json").read_text())
    (row,) = summary["rounds"]
    assert row["clients_responded"] == CLIENTS and row["clients_failed"] == 0, row.get("errors")
    assert "client_eval_accuracy" in row  # the clients evaluated the 64x64 global model too
    assert torch.load(run_dir / "model.pt", weights_only=False)["image_size"] == SIDE


def test_evaluate_and_predict_rebuild_the_model_at_its_saved_size(run, capsys):
    run_dir, data = run
    assert cli(["evaluate", str(run_dir), "--data", str(data), "--out", str(run_dir / "eval")]) == 0
    image = next((data / "test" / "happy").glob("*.png"))
    assert Image.open(image).size == (SIDE, SIDE)
    capsys.readouterr()
    assert cli(["predict", str(image), "--model", str(run_dir), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["images"]
    assert len(result["top"]) == 3
    folder = image.parent  # a folder stands for its image files
    assert cli(["predict", str(folder), "--model", str(run_dir), "--json"]) == 0
    listed = [r["image"] for r in json.loads(capsys.readouterr().out)["images"]]
    assert listed == sorted(str(p) for p in folder.glob("*.png"))
