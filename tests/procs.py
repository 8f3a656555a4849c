"""Finding and stopping exactly the processes a test started (Flower and Ray spawn helpers)."""

from __future__ import annotations

import os
import signal

from simulation.launch.processes import pids_with_env, session_pids  # noqa: F401  (re-exported for the tests)


def kill_session(sid: int) -> None:
    """SIGKILL every process of that session."""
    for pid in session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_env(key: str, value: str) -> None:
    for pid in pids_with_env(key, value):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
