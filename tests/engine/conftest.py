"""The one short non-private `fedfer simulate` run that several engine tests read (a Ray start-up costs tens of
seconds on 2 cores): tests/engine/test_simulation_e2e.py checks its run folder and console, and
tests/engine/test_resume.py compares it with the same run cut after round 2 and resumed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from filelock import FileLock

from tests.procs import cli_cmd

#: The shared run's settings (dp=none); test_resume cuts and resumes a run with exactly these.
PLAIN = ["num-clients=2", "num-server-rounds=4", "synthetic-per-class=100", "synthetic-eval-per-class=20",
         "local-epochs=3", "batch-size=32", "fraction-evaluate=1.0", "dp=none",  # enough to learn: loss 1.95 -> 1.68
         "tracking=all"]  # TensorBoard and MLflow (read back in test_simulation_e2e.py; the resumed run continues them)
PLAIN_ROUNDS = 4


def engine_env(tmp: Path) -> dict[str, str]:
    """A run's environment with its own Flower home, cache and node state under ``tmp``."""
    return {**os.environ, "FLWR_HOME": str(tmp / "flwr-home"), "FEDFER_CACHE": str(tmp / "cache"),
            "FEDFER_STATE_DIR": str(tmp / "node-state"), "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}


def sets(settings: list[str]) -> list[str]:
    return [a for s in settings for a in ("--set", s)]


@pytest.fixture(scope="session")
def plain_run(tmp_path_factory) -> Path:
    """The run folder of the shared run; its console output is in ``console.txt`` beside it. Under pytest-xdist
    the first worker that asks makes it, in the session's temporary folder that every worker shares, and the
    others wait for it (a lock file) and read it."""
    base = tmp_path_factory.getbasetemp()
    tmp = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "plain"
    out = tmp / "run"
    with FileLock(str(tmp) + ".lock"):
        if not (out / "summary.json").is_file():
            _make_plain_run(tmp, out)
    return out


def _make_plain_run(tmp: Path, out: Path) -> None:
    tmp.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(cli_cmd("simulate", "--out", str(out), *sets(PLAIN)), capture_output=True, text=True,
                          env=engine_env(tmp), timeout=600)
    assert proc.returncode == 0, f"simulate failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    (tmp / "console.txt").write_text(proc.stdout + proc.stderr)
