"""A short federated run on real FER2013: the run folder is complete and `fedfer evaluate`
reproduces the final PrivateTest accuracy from the saved model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from simulation.commands.cli import main

pytestmark = pytest.mark.simulation


@pytest.fixture(scope="module")
def fer_run(shared_data, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("fer")
    out = tmp / "run"
    env = {**os.environ, "FLWR_HOME": str(tmp / "flwr-home"), "RAY_USAGE_STATS_ENABLED": "0"}
    sets = ["num-clients=2", "num-server-rounds=1", "max-train-samples=1500", "local-epochs=1"]
    cmd = [sys.executable, "-m", "simulation.commands.cli", "simulate", "--data", str(shared_data / "fer2013"),
           "--out", str(out), *[a for s in sets for a in ("--set", s)]]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return out


def test_run_folder_holds_every_result_file(fer_run):
    for name in ("summary.json", "metrics.jsonl", "rounds.csv", "report.md", "config.json", "model.pt",
                 "checkpoint.pt", "partition.json"):
        assert (fer_run / name).is_file(), name
    for png in ("accuracy_loss.png", "confusion_matrix.png", "per_class.png", "partition.png"):
        with Image.open(fer_run / png) as img:
            img.verify()
        assert (fer_run / png).stat().st_size > 5_000, png


def test_summary_reports_privatetest_of_real_fer2013(fer_run):
    summary = json.loads((fer_run / "summary.json").read_text())
    assert summary["dataset"]["name"] == "fer2013" and summary["dataset"]["synthetic"] is False
    assert summary["final"]["split"] == "test" and summary["final"]["n"] == 3589
    assert sum(v["support"] for v in summary["final"]["per_class"].values()) == 3589


def test_evaluate_reproduces_the_final_accuracy(fer_run, shared_data):
    out = fer_run / "re-eval"
    assert main(["evaluate", str(fer_run), "--data", str(shared_data / "fer2013"), "--out", str(out)]) == 0
    summary = json.loads((fer_run / "summary.json").read_text())
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["accuracy"] == pytest.approx(summary["final"]["accuracy"], abs=1e-12)
    assert evaluation["confusion_matrix"] == summary["final"]["confusion_matrix"]
