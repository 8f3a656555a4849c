"""SecAgg+ in `fedfer deploy-local`: five SuperNodes, one stopped mid-round, and the round still completes.

The node is stopped (SIGTERM to its whole process session: SuperNode, SuperExec and the running
ClientApp) after it shared its mask keys and before it sends its masked vector: its pairwise masks
are rebuilt from its neighbours' key shares (threshold 3 of 5) and the server unmasks the sum of the
four that remain. A stopped SuperNode deactivates itself, so the SuperLink answers its pending
message with NODE_UNAVAILABLE at once and the stage goes on without waiting for the round timeout
(a crash, SIGKILL, is detected only when its heartbeats lapse: tests/engine/test_deploy_local.py's dropout
test covers that path; here it cost ~90 s of waiting and made this the suite's slowest test).
Still slow (66-89 s on 2 cores): the deployment engine starts a ClientApp process for each of
the four SecAgg+ messages a node gets per round. The round timeout (per SecAgg+ stage) is 90 s: at
45 s a CI run on a busy 2-core machine once saw every stage-1 reply arrive too late (all five nodes
had finished stage 1 within 23 s of its start).
The deployment's processes are stopped as in tests/engine/test_deploy_local.py.
"""

from __future__ import annotations

import time

import pytest

from fer_models.config import RunConfig
from simulation.launch.deploy import LocalDeployment
from tests.engine.test_deploy_local import _assert_no_process_left, _rows

pytestmark = pytest.mark.simulation
#: The SuperNode's INFO line after each reply it sends. (Flower's "stage 1 completes" is a DEBUG line: it reached the
#: node's log only through the root handler Opacus installs on import, which fedfer now takes off.)
SENT = "Sent successfully"


def test_secaggplus_round_completes_when_a_supernode_is_stopped_mid_round(tmp_path):
    row, summary, deployment = _deploy_and_stop_one(tmp_path / "first")
    if row["clients_failed"] > 1 and any(HEARTBEAT_LAPSE in e for e in row.get("errors", [])):
        # another node missed its heartbeats on a loaded 2-core machine (seen once in a full CI run): the
        # scenario did not happen as planned, so it runs once more and must then hold as asserted below
        row, summary, deployment = _deploy_and_stop_one(tmp_path / "again")
    assert row["clients_sampled"] == 5 and row["clients_failed"] == 1, row
    assert row["secagg_clients_summed"] == row["clients_responded"] == 4, row
    assert 0 < row["secagg_quantization_error_max"] < 1e-3
    assert len(summary["rounds"]) == 1
    _assert_no_process_left(deployment)


#: Flower's reason for a node whose heartbeats lapsed
HEARTBEAT_LAPSE = "failed to report a heartbeat"


def _deploy_and_stop_one(tmp_path):
    out = tmp_path / "run"
    cfg = RunConfig.from_flat({"synthetic-per-class": 10, "synthetic-eval-per-class": 10, "num-clients": 5,
                               "num-server-rounds": 1, "min-train-clients": 3, "min-available-clients": 5,
                               "round-timeout": 90.0, "local-epochs": 1, "out-dir": str(out), "overwrite": True,
                               "secure-aggregation": "secaggplus", "secagg-num-shares": 5,
                               "secagg-reconstruction-threshold": 3})
    deployment = LocalDeployment(work_dir=tmp_path / "deploy", num_nodes=5, echo=lambda line: None)
    events: dict[str, float] = {}

    def stop_once_its_keys_are_shared() -> None:  # its 2nd reply (stage 0: public keys, stage 1: key shares) is out
        if "stopped" not in events and deployment.nodes[4].log.read_text(errors="replace").count(SENT) >= 2:
            deployment.nodes[4].stop(grace=5.0)
            events["stopped"] = time.time()

    try:
        deployment.start()
        summary = deployment.run(cfg.to_flat(), summary=out / "summary.json", timeout=480,
                                 on_poll=stop_once_its_keys_are_shared)
    finally:
        deployment.shutdown()
    assert "stopped" in events
    (row,) = _rows(out / "metrics.jsonl")
    return row, summary, deployment
