"""Finding and stopping exactly the processes a test started (Flower and Ray spawn helpers)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from simulation.deploy import session_pids  # noqa: F401  (re-exported for the tests)


def kill_session(sid: int) -> None:
    """SIGKILL every process of that session."""
    for pid in session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def pids_with_env(key: str, value: str) -> list[int]:
    """PIDs of live processes whose environment holds ``key=value`` (e.g. a test's private FLWR_HOME):
    this also finds daemons that detached into a session of their own."""
    needle = f"{key}={value}".encode()
    found = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in env.read_bytes().split(b"\0") and int(env.parent.name) != os.getpid():
                found.append(int(env.parent.name))
        except OSError:
            continue
    return found


def kill_env(key: str, value: str) -> None:
    for pid in pids_with_env(key, value):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
