"""`fedfer deploy-local`: Flower's Deployment Engine on loopback (SuperLink + SuperNode processes).

Each test gives its deployment a private work folder (FLWR_HOME, the server's logs and certificates;
keys, node configs and SuperNode logs in the private folder beside it: tests/test_deploy_keys.py),
stops exactly the processes it started (their sessions and every process carrying the deployment's
environment marker) and asserts that none of them is left.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import pytest

from fer_models.config import RunConfig
from simulation.launch.deploy import DeployError, LocalDeployment, find_binaries
from simulation.launch.node_keys import generate_node_keys
from tests.procs import fedfer, pids_with_env, session_pids

pytestmark = pytest.mark.simulation

SMALL = ["synthetic-per-class=30", "synthetic-eval-per-class=10", "num-server-rounds=2"]


def _assert_no_process_left(deployment: LocalDeployment) -> None:
    deadline = time.time() + 10
    while (deployment.remaining_pids() or pids_with_env("FLWR_HOME", str(deployment.flwr_home))) \
            and time.time() < deadline:
        time.sleep(0.2)
    assert deployment.remaining_pids() == [], "processes of the deployment are still alive"
    assert pids_with_env("FLWR_HOME", str(deployment.flwr_home)) == []


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_supernode_killed_mid_round_is_recorded_as_dropout_and_a_restarted_one_rejoins(tmp_path):
    out = tmp_path / "run"
    cfg = RunConfig.from_flat({"synthetic-per-class": 30, "synthetic-eval-per-class": 10, "num-clients": 3,
                               "num-server-rounds": 3, "min-train-clients": 2, "min-available-clients": 3,
                               "round-timeout": 90.0, "local-epochs": 1, "out-dir": str(out),
                               "overwrite": True})
    deployment = LocalDeployment(work_dir=tmp_path / "deploy", num_nodes=3, echo=lambda line: None)
    events: dict[str, float] = {}

    def kill_then_restart_during_round_2() -> None:
        if "killed" in events or not _rows(out / "metrics.jsonl"):
            return
        # round 1 is recorded: round 2's messages are out; node 2 dies with its work unfinished
        deployment.nodes[2].kill()
        events["killed"] = time.time()
        deployment.start_supernode(2)  # the node comes back (a new node id) and joins a later round

    try:
        deployment.start()
        summary = deployment.run(cfg.to_flat(), summary=out / "summary.json", timeout=300,
                                 on_poll=kill_then_restart_during_round_2)
    finally:
        deployment.shutdown()
    assert "killed" in events
    rows = _rows(out / "metrics.jsonl")
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert rows[0]["clients_responded"] == 3 and rows[0]["clients_failed"] == 0
    dropped = rows[1]
    assert dropped["clients_sampled"] == 3
    assert dropped["clients_responded"] == 2 and dropped["clients_failed"] >= 1, rows
    assert dropped["errors"], rows
    assert rows[2]["clients_responded"] == 3, f"the restarted node did not rejoin round 3: {rows}"
    assert summary["final"]["accuracy"] >= 0.0 and len(summary["rounds"]) == 3
    _assert_no_process_left(deployment)


def _check_unregistered_supernodes_are_refused(deployment: LocalDeployment, tmp_path: Path) -> None:
    """With auth on, a SuperNode with an unregistered key and one with no key fail to connect; the registered
    nodes stay online and are the only ones the SuperLink lists."""
    assert deployment.tls and "--enable-supernode-auth" in deployment.superlink.log.read_text()
    rogue_key = generate_node_keys(tmp_path / "rogue-keys", "rogue").private_key
    extra = deployment.num_nodes  # an index no real node uses (its own port)
    rogue = deployment.start_supernode(extra, private_key=rogue_key, name="rogue")
    keyless = deployment.start_supernode(extra, name="keyless")
    for proc in (rogue, keyless):
        proc.popen.wait(timeout=60)
        assert proc.popen.returncode != 0, proc.log.read_text()[-2000:]
        assert "Failed to initialize the connection to the SuperLink" in proc.log.read_text()
    assert "registered via the CLI" in keyless.log.read_text()
    assert all(node.alive() for node in deployment.nodes.values())
    listing = deployment.flwr("supernode", "list", "--format", "json")
    assert listing.returncode == 0, listing.stderr
    nodes = json.loads(listing.stdout[listing.stdout.index("{"):])["nodes"]
    assert len(nodes) == deployment.num_nodes and {n["status"] for n in nodes} == {"online"}, nodes


def test_ctrl_c_or_sigterm_stops_every_process_of_the_deployment(tmp_path):
    out = tmp_path / "run"
    home = out / "deploy" / "flwr-home"
    seen = []
    with fedfer("deploy-local", "--nodes", "1", "--no-report", "--out", str(out),
                *[a for kv in SMALL for a in ("--set", kv)], marker=("FLWR_HOME", str(home))) as proc:
        for line in proc.stdout:  # type: ignore[union-attr]
            seen.append(line)
            if "SuperNode(s) connected" in line:
                break
        time.sleep(2)  # `flwr run` is being submitted / the ServerApp is starting
        assert pids_with_env("FLWR_HOME", str(home)), "".join(seen)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C delivers to the foreground `fedfer`
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(seen) + rest
    time.sleep(1)
    assert session_pids(proc.pid) == [] and pids_with_env("FLWR_HOME", str(home)) == [], \
        "processes of the interrupted deployment are still alive"


def test_clear_errors_for_a_taken_port_a_missing_binary_and_a_process_that_dies(tmp_path, monkeypatch):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        deployment = LocalDeployment(work_dir=tmp_path / "a", num_nodes=1, superlink_port=port)
        with pytest.raises(DeployError, match=f"127.0.0.1:{port} is already taken"):
            deployment.prepare()

    fake = tmp_path / "bin" / "flower-superlink"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'cannot load certificates: boom' >&2\nexit 3\n")
    fake.chmod(0o755)
    deployment = LocalDeployment(work_dir=tmp_path / "b", num_nodes=1)
    deployment.bins["flower-superlink"] = fake
    try:
        with pytest.raises(DeployError, match=r"(?s)superlink exited with code 3.*cannot load certificates: boom"):
            deployment.start()
    finally:
        deployment.shutdown()
    assert (tmp_path / "b" / "logs" / "superlink.log").is_file()

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DeployError, match="`flower-supernode` not found"):
        find_binaries(tmp_path / "bin")


def test_with_auth_unregistered_nodes_are_refused_and_a_restarted_dp_supernode_continues_its_epsilon(tmp_path):
    """With SuperNode authentication on, unregistered SuperNodes are refused (before the run). Then
    sample-level DP on the Deployment Engine: SuperNode 1 is stopped after round 2 and restarted
    (its Flower state is gone, its node-local ledger is not): its epsilon continues. Once it has
    replied again it is stopped, its ledger file deleted, and restarted: it refuses to train (fail
    closed), and the run records the refusal."""
    import os

    out = tmp_path / "run"
    cfg = RunConfig.from_flat({"synthetic-per-class": 20, "synthetic-eval-per-class": 5, "num-clients": 2,
                               "num-server-rounds": 6, "min-train-clients": 1, "min-available-clients": 2,
                               "round-timeout": 60.0, "local-epochs": 1, "batch-size": 16, "dp": "sample",
                               "dp-recipe": "none", "noise-multiplier": 1.0, "out-dir": str(out), "overwrite": True})
    ledgers = Path(os.environ["FEDFER_STATE_DIR"]) / "ledgers"  # every SuperNode of this test keeps it here
    deployment = LocalDeployment(work_dir=tmp_path / "deploy", num_nodes=2, auth=True, echo=lambda line: None)
    events: dict[str, int] = {}

    def restart_node1(*, delete_ledger: bool) -> None:
        deployment.nodes[1].stop()  # SIGTERM: the SuperNode leaves; its Context.state is lost with it
        if delete_ledger:
            for ledger in ledgers.glob("*--p1-of-2.json"):
                ledger.unlink()
        deployment.start_supernode(1)
        deployment.wait_nodes_connected([deployment.nodes[1]])

    def script() -> None:
        rows = _rows(out / "metrics.jsonl")
        if "restarted" not in events and len(rows) >= 2:
            restart_node1(delete_ledger=False)
            events["restarted"] = len(rows)
        elif "restarted" in events and "deleted" not in events and any(
                r["round"] > events["restarted"] and r["clients_responded"] == 2 for r in rows):
            restart_node1(delete_ledger=True)  # node 1 has replied since its restart
            events["deleted"] = len(rows)

    try:
        deployment.start()  # both nodes' keys are registered: they connect
        _check_unregistered_supernodes_are_refused(deployment, tmp_path)
        summary = deployment.run(cfg.to_flat(), summary=out / "summary.json", timeout=900, on_poll=script)
    finally:
        deployment.shutdown()
    assert "restarted" in events and "deleted" in events, (events, _rows(out / "metrics.jsonl"))
    history = summary["epsilon"]["per_client_history"]["1"]
    before = [h for h in history if h["round"] <= events["restarted"]]
    after = [h for h in history if h["round"] > events["restarted"]]
    assert len(before) >= 2 and after, history
    assert after[0]["epsilon"] > before[-1]["epsilon"] > before[0]["epsilon"], history  # continued, not reset
    refusals = [r for r in summary["epsilon"]["refusals"] if r["code"] == 4702]
    assert refusals and refusals[0]["round"] > after[0]["round"], summary["epsilon"]["refusals"]
    assert "missing" in refusals[0]["reason"]
    assert all(h["round"] < refusals[0]["round"] for h in history)  # it never trained again
    _assert_no_process_left(deployment)
