"""Checkpoints and resume: a run killed after round 2 and resumed ends like an uninterrupted one.

With sample-level DP the final epsilon must agree (every client's ledger, kept on its node,
continues under the run's lineage after the resume). The DP noise is secret by design, so a DP
run's weights cannot be replayed: the weights must agree exactly for the non-private pair.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from server.checkpoint import CheckpointError, load_checkpoint
from tests.procs import kill_session

pytestmark = pytest.mark.simulation

SETTINGS = ["num-clients=2", "num-server-rounds=4", "synthetic-per-class=30", "synthetic-eval-per-class=10",
            "local-epochs=1", "batch-size=16", "dp-recipe=none", "noise-multiplier=1.0", "min-client-samples=4"]


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "FLWR_HOME": str(tmp / "flwr-home"), "FEDFER_CACHE": str(tmp / "cache"),
            "FEDFER_STATE_DIR": str(tmp / "node-state"), "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}


def _cmd(*extra: str) -> list[str]:
    return [sys.executable, "-m", "simulation.commands.cli", "simulate", *extra]


def _sets(dp: str) -> list[str]:
    return [a for s in [*SETTINGS, f"dp={dp}"] for a in ("--set", s)]


@pytest.fixture(scope="module", params=["sample", "none"])
def runs(request, tmp_path_factory):
    dp = request.param
    tmp = tmp_path_factory.mktemp(f"resume-{dp}")
    full, cut = tmp / "full", tmp / "cut"
    proc = subprocess.run(_cmd("--out", str(full), *_sets(dp)), capture_output=True, text=True, env=_env(tmp),
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # the same run, killed once round 2 is checkpointed
    child = subprocess.Popen(_cmd("--out", str(cut), *_sets(dp)), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=_env(tmp), start_new_session=True)
    deadline = time.time() + 400
    try:
        while time.time() < deadline and child.poll() is None:
            if (cut / "checkpoint.pt").exists():
                try:
                    if load_checkpoint(cut)["round"] >= 2:
                        break
                except CheckpointError:
                    pass
            time.sleep(0.2)
    finally:
        kill_session(child.pid)
        child.wait(timeout=60)
    interrupted_at = load_checkpoint(cut)["round"]
    assert 2 <= interrupted_at < 4, "the run was not interrupted mid-way"
    proc = subprocess.run(_cmd("--resume", str(cut)), capture_output=True, text=True, env=_env(tmp), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return full, cut, interrupted_at, dp


def test_resumed_run_ends_with_the_same_epsilon_as_the_uninterrupted_one(runs):
    full, cut, _, dp = runs
    if dp == "none":
        assert "epsilon" not in json.loads((cut / "summary.json").read_text())
        return
    a = json.loads((full / "summary.json").read_text())["epsilon"]
    b = json.loads((cut / "summary.json").read_text())["epsilon"]
    assert b["per_client"] == pytest.approx(a["per_client"], rel=1e-12)
    assert b["per_round_max"] == pytest.approx(a["per_round_max"], rel=1e-12)


def test_resumed_run_ends_with_the_same_weights_unless_dp_noise_makes_it_unreplayable(runs):
    full, cut, _, dp = runs
    wa = torch.load(full / "model.pt", weights_only=False)["state_dict"]
    wb = torch.load(cut / "model.pt", weights_only=False)["state_dict"]
    same = [torch.allclose(wa[key], wb[key], atol=1e-5) for key in wa]
    if dp == "none":
        assert all(same), [k for k, ok in zip(wa, same) if not ok]
    else:  # the seeds are the same, the DP noise is secret and fresh: no run replays another
        assert not any(same for same, t in zip(same, wa.values()) if t.is_floating_point() and t.numel() > 100)


def test_resumed_run_records_every_round_once(runs):
    _, cut, _, _ = runs
    rounds = [json.loads(line)["round"] for line in (cut / "metrics.jsonl").read_text().splitlines()]
    assert rounds == [1, 2, 3, 4]


def test_resume_with_a_different_setting_is_refused_naming_it(runs):
    _, cut, _, _ = runs
    proc = subprocess.run(_cmd("--resume", str(cut), "--set", "learning-rate=0.5"), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "learning-rate" in proc.stderr and "differ" in proc.stderr


def test_truncated_checkpoint_is_detected_not_loaded(runs, tmp_path):
    _, cut, _, _ = runs
    data = (cut / "checkpoint.pt").read_bytes()
    broken = tmp_path / "checkpoint.pt"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(tmp_path)
