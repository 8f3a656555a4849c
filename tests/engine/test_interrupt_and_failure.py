"""`fedfer simulate` under Ray: Ctrl-C stops everything and resumes; a run whose clients all fail exits non-zero."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from tests.procs import fedfer

pytestmark = pytest.mark.simulation

SMALL = ["num-clients=2", "synthetic-per-class=30", "synthetic-eval-per-class=10", "local-epochs=2"]


def _env(tmp: Path, mark: str) -> dict[str, str]:
    return {**os.environ, "FEDFER_CACHE": str(tmp / "cache"), "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONUNBUFFERED": "1", "FEDFER_TEST_MARK": mark}


# Ctrl-C mid-run (every process stopped within seconds, then --resume finishes) shares the run of
# tests/engine/test_resume.py (dp=none): test_ctrl_c_mid_run_stops_every_process_within_seconds_and_the_resume_finishes.


def test_a_run_whose_every_update_is_rejected_exits_non_zero_with_the_reason_and_no_accuracy(tmp_path):
    out = tmp_path / "run"
    # AdamW at learning rate 1e6 drives every client's weights to NaN by round 2
    mark = uuid.uuid4().hex  # every process the command starts inherits it
    with fedfer("simulate", "--out", str(out), *[a for s in (*SMALL, "num-server-rounds=3", "learning-rate=1e6")
                                                 for a in ("--set", s)],
                env=_env(tmp_path, mark), marker=("FEDFER_TEST_MARK", mark)) as proc:
        log, _ = proc.communicate(timeout=400)
    assert proc.returncode == 1, log[-3000:]
    assert "FAILED" in log and "non-finite values" in log and "final test accuracy" not in log, log[-3000:]
    failure = json.loads((out / "failure.json").read_text(), parse_constant=pytest.fail)
    assert failure["errors"] and all("update rejected" in e["reason"] for e in failure["errors"])
    assert not (out / "summary.json").exists()
