"""Launching the CLI from tests and stopping exactly what a test started (Flower and Ray spawn helpers).

:func:`fedfer` starts ``python -m simulation.commands.cli ...`` in a session of its own (built on
simulation/launch/processes.py, as the benchmarks and deploy-local are) and, on leaving the block,
SIGKILLs that session and every process carrying the given environment marker, by pid.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from simulation.launch.processes import (  # noqa: F401  (re-exported for the tests)
    kill_started,
    pids_with_env,
    session_pids,
    signal_pids,
    start_in_session,
)

ROOT = Path(__file__).resolve().parents[1]


def cli_cmd(*args: str) -> list[str]:
    """The command line of ``fedfer <args>`` run from this checkout."""
    return [sys.executable, "-m", "simulation.commands.cli", *args]


@contextlib.contextmanager
def launched(cmd: list[str], *, marker: tuple[str, str] | None = None, capture: bool = True,
             **popen_kw: object) -> Iterator[subprocess.Popen]:
    """``with launched([...], marker=("FLWR_HOME", home)) as proc:`` starts ``cmd`` in a session of its own
    (stdout+stderr piped as text unless ``capture=False`` or given in ``popen_kw``; cwd the checkout) and, on
    leaving the block, SIGKILLs that session and every process carrying ``marker``, by pid."""
    if capture:
        popen_kw.setdefault("stdout", subprocess.PIPE)
        popen_kw.setdefault("stderr", subprocess.STDOUT)
        popen_kw.setdefault("text", True)
    popen_kw.setdefault("cwd", ROOT)
    proc = start_in_session(cmd, **popen_kw)
    try:
        yield proc
    finally:
        kill_started(proc.pid, marker=marker)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)


def fedfer(*args: str, **kw: object) -> contextlib.AbstractContextManager[subprocess.Popen]:
    """:func:`launched` for ``fedfer <args>`` (``python -m simulation.commands.cli``)."""
    return launched(cli_cmd(*args), **kw)  # type: ignore[arg-type]


def kill_session(sid: int) -> None:
    """SIGKILL every process of that session."""
    kill_started(sid)


def kill_env(key: str, value: str) -> None:
    """SIGKILL every process carrying ``key=value`` in its environment."""
    signal_pids(pids_with_env(key, value), signal.SIGKILL)
