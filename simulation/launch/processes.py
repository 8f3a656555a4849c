"""Processes of a local deployment: each in a session of its own, found again by session or environment marker.

:func:`signals_raise` turns SIGINT/SIGTERM into exceptions so ``finally`` blocks stop what was started;
:class:`Proc` is one started process with its log; :func:`session_pids` / :func:`pids_with_env` find a
process's whole session and every process carrying a marker (daemons that detached included).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, TextIO

#: Environment marker carried by every process a deployment starts (and their children).
MARK_ENV = "FEDFER_DEPLOYMENT"


class Terminated(BaseException):
    """SIGTERM arrived (raised by the handler :func:`signals_raise` installs)."""


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """While inside: SIGINT raises KeyboardInterrupt and SIGTERM raises :class:`Terminated`, so
    ``finally`` blocks (and :meth:`LocalDeployment.shutdown`) run. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _term(signum: int, _frame: object) -> None:
        raise Terminated(f"signal {signum}")

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _term)
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:])


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``sid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def pids_with_env(key: str, value: str) -> list[int]:
    """Live (non-zombie) processes other than this one whose environment holds ``key=value``.

    This also finds daemons that detached into a session of their own (a zombie's environment
    cannot be read, so zombies are never found).
    """
    needle = f"{key}={value}".encode()
    found = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in env.read_bytes().split(b"\0") and int(env.parent.name) != os.getpid():
                stat = (env.parent / "stat").read_text().rsplit(")", 1)[1].split()
                if stat[0] != "Z":
                    found.append(int(env.parent.name))
        except (OSError, IndexError):
            continue
    return found


def marked_pids(mark: str) -> list[int]:
    """Live processes whose environment holds ``FEDFER_DEPLOYMENT=<mark>``."""
    return pids_with_env(MARK_ENV, mark)


def signal_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


@dataclass
class Proc:
    """One started process (leader of its own session) and its log file."""

    name: str
    popen: subprocess.Popen
    log: Path
    _fh: TextIO | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the whole session, wait up to ``grace`` s, then SIGKILL what is left."""
        signal_pids(session_pids(self.pid) or ([self.pid] if self.alive() else []), signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (self.alive() or session_pids(self.pid)):
            time.sleep(0.1)
        signal_pids(session_pids(self.pid), signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=2)
        self.close()

    def kill(self) -> None:
        """SIGKILL the whole session at once (as when a node crashes or loses power)."""
        signal_pids(session_pids(self.pid), signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        self.close()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def start_in_session(cmd: list[str], **popen_kw: object) -> subprocess.Popen:
    """Start ``cmd`` as the leader of a new session, so :func:`session_pids` finds all it spawns."""
    return subprocess.Popen(cmd, start_new_session=True, **popen_kw)  # type: ignore[call-overload]


def kill_started(pid: int, *, marker: tuple[str, str] | None = None) -> None:
    """SIGKILL the session led by ``pid`` and, if given, every process carrying the ``marker`` env pair."""
    signal_pids(session_pids(pid), signal.SIGKILL)
    if marker is not None:
        signal_pids(pids_with_env(*marker), signal.SIGKILL)
