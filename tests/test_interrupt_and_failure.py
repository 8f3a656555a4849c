"""`fedfer simulate` under Ray: Ctrl-C stops everything and resumes; a run whose clients all fail exits non-zero."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.procs import kill_env, pids_with_env

pytestmark = pytest.mark.simulation

SMALL = ["num-clients=2", "synthetic-per-class=30", "synthetic-eval-per-class=10", "local-epochs=2"]


def _start(tmp: Path, out: Path, *sets: str, resume: bool = False) -> tuple[subprocess.Popen, str]:
    mark = uuid.uuid4().hex  # every process the command starts inherits it
    env = {**os.environ, "FEDFER_CACHE": str(tmp / "cache"), "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONUNBUFFERED": "1", "FEDFER_TEST_MARK": mark}
    args = ["--resume", str(out)] if resume else ["--out", str(out), *[a for s in sets for a in ("--set", s)]]
    proc = subprocess.Popen([sys.executable, "-m", "simulation.commands.cli", "simulate", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, mark


def _rounds(out: Path) -> int:
    path = out / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_ctrl_c_in_round_two_stops_every_process_within_seconds_and_resume_finishes(tmp_path):
    out = tmp_path / "run"
    proc, mark = _start(tmp_path, out, *SMALL, "num-server-rounds=4")
    try:
        deadline = time.time() + 300
        while _rounds(out) < 1 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert _rounds(out) == 1, "round 1 never finished"
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        sent = time.time()
        log, _ = proc.communicate(timeout=30)
        took = time.time() - sent
        time.sleep(0.5)
        left = pids_with_env("FEDFER_TEST_MARK", mark)
    finally:
        kill_env("FEDFER_TEST_MARK", mark)
    assert proc.returncode == 130, log[-3000:]
    assert took < 10, f"exit took {took:.1f} s"
    assert left == [], f"processes left behind: {left}"
    assert "--resume" in log and "Traceback" not in log, log[-3000:]
    done = _rounds(out)
    assert 1 <= done < 4

    resumed, mark = _start(tmp_path, out, resume=True)
    try:
        log, _ = resumed.communicate(timeout=400)
    finally:
        kill_env("FEDFER_TEST_MARK", mark)
    assert resumed.returncode == 0, log[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2, 3, 4]


def test_a_run_whose_every_update_is_rejected_exits_non_zero_with_the_reason_and_no_accuracy(tmp_path):
    out = tmp_path / "run"
    # AdamW at learning rate 1e6 drives every client's weights to NaN by round 2
    proc, mark = _start(tmp_path, out, *SMALL, "num-server-rounds=3", "learning-rate=1e6")
    try:
        log, _ = proc.communicate(timeout=400)
    finally:
        kill_env("FEDFER_TEST_MARK", mark)
    assert proc.returncode == 1, log[-3000:]
    assert "FAILED" in log and "non-finite values" in log and "final test accuracy" not in log, log[-3000:]
    failure = json.loads((out / "failure.json").read_text(), parse_constant=pytest.fail)
    assert failure["errors"] and all("update rejected" in e["reason"] for e in failure["errors"])
    assert not (out / "summary.json").exists()
