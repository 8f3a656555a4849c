"""`flwr run .` runs the same apps in Flower's own local simulation, with the same keys.

`flwr run` leaves a SuperLink and a SuperExec running in the background: the test gives them a
private FLWR_HOME, starts everything in a new session and stops exactly that session's processes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.procs import kill_env, kill_session, pids_with_env, session_pids

pytestmark = pytest.mark.simulation

ROOT = Path(__file__).resolve().parents[1]


def test_flwr_run_trains_with_run_config_overrides_and_leaves_no_process(tmp_path):
    bindir = Path(sys.executable).parent
    if not (bindir / "flwr").exists() or shutil.which("flower-superlink", path=str(bindir)) is None:
        pytest.fail(f"flwr / flower-superlink not found beside {sys.executable}: is flwr installed?")
    out = tmp_path / "run"
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home"), "PATH": f"{bindir}:{os.environ['PATH']}",
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    overrides = (f"num-server-rounds=2 out-dir='{out}' synthetic-per-class=30 synthetic-eval-per-class=10 "
                 "run-name='via-flwr'")
    proc = subprocess.Popen([str(bindir / "flwr"), "run", ".", "--run-config", overrides, "--stream"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=420)
        deadline = time.time() + 60
        while not (out / "summary.json").exists() and time.time() < deadline:
            time.sleep(1)  # --stream may return just before the ServerApp's last write lands
        assert (out / "summary.json").exists(), log[-4000:]
    finally:
        kill_session(proc.pid)
        kill_env("FLWR_HOME", env["FLWR_HOME"])  # the SuperLink/SuperExec detach into their own session
        if proc.poll() is None:
            proc.kill()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["run-name"] == "via-flwr" and summary["config"]["num-server-rounds"] == 2
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    time.sleep(1)
    assert session_pids(proc.pid) == [] and pids_with_env("FLWR_HOME", env["FLWR_HOME"]) == [], \
        "processes started by `flwr run` are still alive"
