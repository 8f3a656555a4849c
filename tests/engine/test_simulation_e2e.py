"""End to end: `fedfer simulate` runs Flower's simulation engine with the real apps.

One short run (2 clients, 4 rounds, small synthetic data: tests/engine/conftest.py's ``plain_run``) is shared by
every test here and by tests/engine/test_resume.py, since the Ray-backed engine takes tens of seconds to start
on a small machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fer_models.models import create_model
from tests.engine.conftest import PLAIN_ROUNDS

pytestmark = pytest.mark.simulation

ROUNDS = PLAIN_ROUNDS


@pytest.fixture(scope="module")
def run_dir(plain_run: Path) -> Path:
    return plain_run


@pytest.fixture(scope="module")
def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_summary_has_the_documented_keys(summary):
    assert {"dataset", "config", "rounds", "final"} <= set(summary)
    assert summary["dataset"]["synthetic"] is True
    assert summary["config"]["num-clients"] == 2
    assert {"accuracy", "macro_f1", "per_class"} <= set(summary["final"])


def test_every_round_is_recorded_with_both_clients(summary, run_dir):
    assert [r["round"] for r in summary["rounds"]] == list(range(1, ROUNDS + 1))
    for r in summary["rounds"]:
        assert r["clients_sampled"] == 2 and r["clients_responded"] == 2
        assert 0.0 <= r["accuracy"] <= 1.0 and r["loss"] > 0
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == ROUNDS


def test_each_round_has_per_class_metrics_and_client_side_evaluation(summary):
    for r in summary["rounds"]:
        assert set(r["per_class"]) == {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
        assert sum(map(sum, r["confusion_matrix"])) == summary["final"]["n"]
        assert 0.0 <= r["client_eval_accuracy"] <= 1.0
    assert [e["round"] for e in summary["client_evaluation"]] == list(range(1, ROUNDS + 1))


def test_each_round_records_where_its_time_went(summary):
    first, second = summary["rounds"][:2]
    assert first["write_s"] == 0.0 and second["write_s"] > 0  # round 1's model.pt and checkpoint, in round 2's span
    for r in (first, second):
        assert r["eval_s"] > 0 and r["client_round_s"] >= r["client_train_s"] > 0
    # the server's own evaluation and writes happen one after the other inside the round's span
    assert second["elapsed_s"] - first["elapsed_s"] >= second["eval_s"] + second["write_s"] - 0.02


def test_federated_training_improves_on_the_initial_model(summary):
    losses = [summary["initial"]["loss"]] + [r["loss"] for r in summary["rounds"]]
    assert losses[-1] < losses[0] - 0.05, losses
    assert summary["final"]["accuracy"] >= summary["initial"]["accuracy"]


def test_saved_model_reloads_and_matches_the_final_round(run_dir, summary):
    from fer_models.config import RunConfig
    from fer_models.federation.task import eval_splits, load_store
    from fer_models.training import engine

    saved = torch.load(run_dir / "model.pt", weights_only=False)
    assert saved["round"] == ROUNDS
    model = create_model(saved["model"], **saved["model_options"])
    model.load_state_dict(saved["state_dict"])
    cfg = RunConfig.from_flat(summary["config"])
    test = eval_splits(cfg, load_store(cfg))[summary["final"]["split"]]
    res = engine.evaluate(model=model, data=test, batch_size=256, device=torch.device("cpu"))
    assert res.accuracy == pytest.approx(summary["final"]["accuracy"], abs=1e-9)  # the model the summary scored
    assert res.loss == pytest.approx(summary["final"]["loss"], rel=1e-4)


def test_existing_results_are_not_overwritten(run_dir):
    proc = subprocess.run([sys.executable, "-m", "simulation.commands.cli", "simulate", "--out", str(run_dir)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "already holds results" in proc.stderr and "--overwrite" in proc.stderr


def test_the_bench_table_counts_the_sample_gradients_the_clients_recorded(summary):
    from fer_models.config import RunConfig
    from fer_models.federation.task import client_data
    from simulation.bench.bench_table import RECORDED, sample_gradients

    count, how = sample_gradients(summary=summary, partition=None)
    cfg = RunConfig.from_flat(summary["config"])
    train = sum(len(client_data(cfg, partition_id=p, num_partitions=cfg.num_clients)) for p in range(cfg.num_clients))
    assert how == RECORDED
    assert count == ROUNDS * cfg.local_epochs * train  # non-private batches cover every sample once per epoch


def test_the_console_shows_one_progress_line_per_round_and_no_flower_dump(run_dir):
    console = (run_dir.parent / "console.txt").read_text()
    progress = [line for line in console.splitlines() if f"/{ROUNDS} | accuracy" in line]
    assert len(progress) == ROUNDS, console
    for noise in ("configure_train", "aggregate_train", "Strategy", "ClientAppActor", "Aggregated MetricRecord"):
        assert noise not in console, noise
    assert len(console.splitlines()) <= 40, console  # start-up, partition table, a line per round, the result
    flower_log = (run_dir / "logs" / "flower.log").read_text()
    assert "configure_train" in flower_log and "ROUND 1" in flower_log  # Flower's full log is in the run folder


def test_the_run_is_tracked_in_tensorboard_and_mlflow_as_metrics_jsonl_records_it(summary, run_dir):
    from tests.test_tracking import mlflow_run, tensorboard_scalars

    rounds = [(r["round"], r["accuracy"]) for r in summary["rounds"]]
    board = tensorboard_scalars(run_dir / "tracking" / "tensorboard")
    assert [(s, pytest.approx(v)) for s, v in board["accuracy"]] == rounds and "confusion_matrix" in board["_images"]
    client, run = mlflow_run(run_dir / "tracking")
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "accuracy")] == \
        [(s, pytest.approx(v)) for s, v in rounds]
    assert run.data.params["tracking"] == "all" and run.info.status == "FINISHED"
