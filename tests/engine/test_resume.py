"""Checkpoints and resume: a run killed after round 2 and resumed ends like an uninterrupted one.

The DP run is cut by SIGKILL (a crash); the non-private one (tests/engine/conftest.py's shared ``plain_run``, whose
settings the cut run repeats) by Ctrl-C (SIGINT to its process group),
which must also stop every process it started within seconds and say how to resume (this shares the
run that tests/engine/test_interrupt_and_failure.py's Ctrl-C test used to start on its own).

With sample-level DP every client's ledger, kept on its node, must continue under the run's lineage after
the resume: its epsilon after each of the 4 rounds is recomputed here with Opacus' RDP accountant from the ledger
file (4 equal rounds of DP-SGD steps, none lost, none counted twice), not from a second, uninterrupted DP run
(which would cost one more Ray start-up and proves no more). The DP noise is secret by design, so a DP run's
weights cannot be replayed (tests/test_server_replay_attack.py attacks that): the weights must agree exactly for
the non-private pair.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid

import pytest
import torch
from opacus.accountants import RDPAccountant

from server.checkpoint import CheckpointError, load_checkpoint
from tests.engine.conftest import PLAIN, engine_env, sets
from tests.procs import cli_cmd, fedfer, pids_with_env

pytestmark = pytest.mark.simulation

SETTINGS = ["num-clients=2", "num-server-rounds=4", "synthetic-per-class=30", "synthetic-eval-per-class=10",
            "local-epochs=1", "batch-size=16", "dp-recipe=none", "noise-multiplier=1.0", "min-client-samples=4"]


_env = engine_env


def _cmd(*extra: str) -> list[str]:
    return cli_cmd("simulate", *extra)


def _sets(dp: str) -> list[str]:
    return sets(PLAIN) if dp == "none" else sets([*SETTINGS, f"dp={dp}"])


@pytest.fixture(scope="module", params=["sample", "none"])
def runs(request, tmp_path_factory):
    dp = request.param
    tmp = tmp_path_factory.mktemp(f"resume-{dp}")
    cut = tmp / "cut"
    # the uninterrupted run (non-private only) is the one tests/engine/test_simulation_e2e.py reads
    full = request.getfixturevalue("plain_run") if dp == "none" else None
    # the same run, killed (dp=sample: SIGKILL; dp=none: Ctrl-C) once round 2 is checkpointed
    mark = uuid.uuid4().hex  # every process the command starts inherits it
    ctrl_c: dict[str, object] = {}
    deadline = time.time() + 400
    quiet = {} if dp == "none" else {"capture": False, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    with fedfer("simulate", "--out", str(cut), *_sets(dp), env={**_env(tmp), "FEDFER_TEST_MARK": mark},
                marker=("FEDFER_TEST_MARK", mark), **quiet) as child:
        while time.time() < deadline and child.poll() is None:
            if (cut / "checkpoint.pt").exists():
                try:
                    if load_checkpoint(cut)["round"] >= 2:
                        break
                except CheckpointError:
                    pass
            time.sleep(0.2)
        if dp == "none" and child.poll() is None:
            os.killpg(child.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
            sent = time.time()
            log, _ = child.communicate(timeout=30)
            ctrl_c["took"] = time.time() - sent
            time.sleep(0.5)
            ctrl_c.update(returncode=child.returncode, log=log, left=pids_with_env("FEDFER_TEST_MARK", mark),
                          done=len((cut / "metrics.jsonl").read_text().splitlines()))
    interrupted_at = load_checkpoint(cut)["round"]
    assert 2 <= interrupted_at < 4, "the run was not interrupted mid-way"
    proc = subprocess.run(_cmd("--resume", str(cut)), capture_output=True, text=True, env=_env(tmp), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return full, cut, interrupted_at, dp, ctrl_c


def test_ctrl_c_mid_run_stops_every_process_within_seconds_and_the_resume_finishes(runs):
    _, cut, interrupted_at, dp, ctrl_c = runs
    if dp != "none":
        return  # the DP run is cut by SIGKILL (a crash), not Ctrl-C
    assert ctrl_c, "the run ended before Ctrl-C was sent"
    assert ctrl_c["returncode"] == 130, ctrl_c["log"][-3000:]
    assert ctrl_c["took"] < 10, f"exit took {ctrl_c['took']:.1f} s"
    assert ctrl_c["left"] == [], f"processes left behind: {ctrl_c['left']}"
    assert "--resume" in ctrl_c["log"] and "Traceback" not in ctrl_c["log"], ctrl_c["log"][-3000:]
    assert 1 <= ctrl_c["done"] < 4 and 1 <= interrupted_at < 4
    summary = json.loads((cut / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2, 3, 4]


def test_resumed_run_composes_every_round_once_in_each_clients_ledger(runs):
    _, cut, _, dp, _ = runs
    summary = json.loads((cut / "summary.json").read_text())
    if dp == "none":
        assert "epsilon" not in summary
        return
    eps = summary["epsilon"]
    ledgers = sorted((cut.parent / "node-state" / "ledgers").glob("*.json"))
    assert len(ledgers) == 2, ledgers  # one per client, on its node (here: the test's state folder)
    by_client = {}
    for path in ledgers:
        data = json.loads(path.read_text())
        [(noise, q, total)] = data["history"]  # one (noise, sample rate) throughout: merged into one entry
        assert total % 4 == 0 and total > 0, data["history"]
        curve = []
        for r in range(1, 5):  # after round r: r rounds' worth of steps, composed by Opacus' own accountant
            acc = RDPAccountant()
            acc.history = [(noise, q, total // 4 * r)]
            curve.append(acc.get_epsilon(delta=eps["delta"]))
        by_client[data["client"].removeprefix("p").split("-of-")[0]] = curve  # "p0-of-2": partition 0
    assert sorted(by_client) == sorted(eps["per_client"])
    for client, curve in by_client.items():
        assert [h["epsilon"] for h in eps["per_client_history"][client]] == pytest.approx(curve, rel=1e-9)
        assert eps["per_client"][client] == pytest.approx(curve[-1], rel=1e-9)
    assert eps["per_round_max"] == pytest.approx([max(c[r] for c in by_client.values()) for r in range(4)],
                                                 rel=1e-9)


def test_resumed_non_private_run_ends_with_the_same_weights(runs):
    full, cut, _, dp, _ = runs
    if dp != "none":
        return  # DP noise is secret and fresh: no run replays another (tests/test_server_replay_attack.py)
    wa = torch.load(full / "model.pt", weights_only=False)["state_dict"]
    wb = torch.load(cut / "model.pt", weights_only=False)["state_dict"]
    same = [torch.allclose(wa[key], wb[key], atol=1e-5) for key in wa]
    assert all(same), [k for k, ok in zip(wa, same) if not ok]


def test_resumed_run_records_every_round_once(runs):
    _, cut, _, _, _ = runs
    rounds = [json.loads(line)["round"] for line in (cut / "metrics.jsonl").read_text().splitlines()]
    assert rounds == [1, 2, 3, 4]


def test_resume_with_a_different_setting_is_refused_naming_it(runs):
    _, cut, _, _, _ = runs
    proc = subprocess.run(_cmd("--resume", str(cut), "--set", "learning-rate=0.5"), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "learning-rate" in proc.stderr and "differ" in proc.stderr


def test_truncated_checkpoint_is_detected_not_loaded(runs, tmp_path):
    _, cut, _, _, _ = runs
    data = (cut / "checkpoint.pt").read_bytes()
    broken = tmp_path / "checkpoint.pt"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(tmp_path)
