"""`flwr run .` runs the same apps in Flower's own local simulation, with the same keys.

`flwr run` leaves a SuperLink and a SuperExec running in the background, and the next `flwr run` with the same
FLWR_HOME uses them: the tests of this file share one private FLWR_HOME (one local SuperLink start-up for
three runs), start each `flwr` in a new session and, at the end, stop exactly the processes that carry that
FLWR_HOME, and check that none is left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.procs import ROOT, kill_env, launched, pids_with_env, session_pids

pytestmark = pytest.mark.simulation



@pytest.fixture(scope="module")
def flwr_env(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The ``flwr`` binary and the environment of this file's runs (one FLWR_HOME: one local SuperLink);
    afterwards every process carrying that FLWR_HOME is stopped and none may be left."""
    bindir = Path(sys.executable).parent
    if not (bindir / "flwr").exists() or shutil.which("flower-superlink", path=str(bindir)) is None:
        pytest.fail(f"flwr / flower-superlink not found beside {sys.executable}: is flwr installed?")
    home = str(tmp_path_factory.mktemp("flwr") / "flwr-home")
    yield bindir, {**os.environ, "FLWR_HOME": home, "PATH": f"{bindir}:{os.environ['PATH']}",
                   "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    _stop_and_check(home)


def _stop_and_check(home: str) -> None:
    kill_env("FLWR_HOME", home)
    deadline = time.time() + 10
    while pids_with_env("FLWR_HOME", home) and time.time() < deadline:
        time.sleep(0.2)
    assert pids_with_env("FLWR_HOME", home) == [], "processes started by `flwr run` are still alive"


def _run_id(log: str) -> int:
    found = re.search(r"Successfully started run (\d+)", log)
    assert found, log[-3000:]
    return int(found.group(1))


RECIPE_REFUSAL = ("batch-size set while dp=sample uses the tuned DP recipe, which chooses frontend, activation, "
                  "pretrain-epochs, batch-size")


@pytest.mark.parametrize("overrides, message", [  # one refusal: each `flwr run` costs ~55 s on 2 cores; how a
    ("dp='sample' target-epsilon=8.0 batch-size=32", f"run config: {RECIPE_REFUSAL}"),  # malformed value is named
])  # (num-clients='abc': expected an integer) is tests/test_config.py's; this is fedfer simulate's refusal
def test_flwr_run_with_a_refused_setting_names_it_and_the_run_is_recorded_failed(flwr_env, overrides, message):
    """Flower 1.42's `flwr run` exits 0 whatever the run's outcome; the ServerApp says what is wrong
    first thing in the streamed log, with the message `fedfer simulate` gives, and the SuperLink
    records the run as failed with the reason."""
    bindir, env = flwr_env
    with launched([str(bindir / "flwr"), "run", ".", "--run-config", overrides, "--stream"], env=env) as proc:
        log, _ = proc.communicate(timeout=300)
    listing = subprocess.run([str(bindir / "flwr"), "ls", "--format", "json"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert f"invalid run config, nothing was run: {message}" in log, log[-3000:]
    (run,) = [r for r in json.loads(listing.stdout)["runs"] if int(r["run-id"]) == _run_id(log)]
    assert run["status"] == "finished:failed" and message.split(": ", 1)[1][:40] in run["status-details"]
    cli = subprocess.run([sys.executable, "-m", "simulation.commands.cli", "simulate", "--set",
                          *" --set ".join(overrides.replace("'", "").split()).split(" ")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2 and message.split(": ", 1)[1] in cli.stderr, cli.stderr[-2000:]


def test_flwr_run_trains_with_run_config_overrides_and_leaves_no_process(flwr_env, tmp_path):
    bindir, env = flwr_env
    out = tmp_path / "run"
    overrides = (f"num-server-rounds=2 out-dir='{out}' synthetic-per-class=30 synthetic-eval-per-class=10 "
                 "run-name='via-flwr'")
    # the SuperLink/SuperExec detach into their own session: the FLWR_HOME marker finds them (flwr_env stops them)
    with launched([str(bindir / "flwr"), "run", ".", "--run-config", overrides, "--stream"], env=env) as proc:
        log, _ = proc.communicate(timeout=420)
        deadline = time.time() + 60
        while not (out / "summary.json").exists() and time.time() < deadline:
            time.sleep(1)  # --stream may return just before the ServerApp's last write lands
        assert (out / "summary.json").exists(), log[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["run-name"] == "via-flwr" and summary["config"]["num-server-rounds"] == 2
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    time.sleep(1)
    assert session_pids(proc.pid) == [], "processes of the `flwr run` session are still alive"
    _stop_and_check(env["FLWR_HOME"])  # the local SuperLink and SuperExec it left, found by their FLWR_HOME
