"""The one atomic writer: a file is replaced whole or not at all (temporary file, fsync, rename).

Run folders, checkpoints, exported models and a client's privacy ledger all write through it, so
a crash never leaves a half-written file behind. A write that fails (a full disk, a read-only
folder, ...) removes its temporary file, leaves the previous version of the file as it was and
raises :class:`AtomicWriteError`: an ``OSError`` with the same ``errno`` whose message names the
file and the space left beside it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


class AtomicWriteError(OSError):
    """A file that could not be written; the previous version of it (if any) is unchanged."""

    def __init__(self, *, path: Path, cause: OSError) -> None:
        self.path, self.free_bytes = Path(path), free_bytes(Path(path).parent)
        reason = cause.strerror or str(cause) or type(cause).__name__
        free = f"; {format_bytes(self.free_bytes)} free there" if self.free_bytes is not None else ""
        kept = "its previous version is kept" if self.path.exists() else "nothing was written"
        super().__init__(cause.errno, f"cannot write {self.path}: {reason}{free} ({kept})")
        self.filename = str(self.path)

    @property
    def disk_full(self) -> bool:
        return self.errno in (errno.ENOSPC, errno.EDQUOT)

    def __str__(self) -> str:
        return str(self.strerror)


def free_bytes(folder: Path) -> int | None:
    """Bytes free on the file system holding ``folder`` (its nearest existing ancestor); None if unknown."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return int(shutil.disk_usage(folder).free)
    except OSError:
        return None


def format_bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _write_and_sync(fh: Any, data: bytes, *, path: Path) -> None:
    """Write and fsync the temporary file of ``path`` (tests replace this to fill the disk)."""
    fh.write(data)
    fh.flush()
    os.fsync(fh.fileno())


def check_writable(folder: Path) -> None:
    """Raise the ``OSError`` the writer would meet in ``folder`` (no permission, a read-only file system):
    a temporary file is created there and removed. Permission bits alone would not do (root ignores them)."""
    folder = Path(folder)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fedfer-write-check-", suffix=".tmp")
    except OSError as exc:
        exc.filename = str(folder)
        raise
    os.close(fd)
    os.unlink(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (the folder must exist); :class:`AtomicWriteError` if it fails."""
    path = Path(path)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            _write_and_sync(fh, data, path=path)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, (AtomicWriteError, FileNotFoundError)):
            raise AtomicWriteError(path=path, cause=exc) from exc
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """``obj`` as strict JSON (NaN and Infinity refused), written atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def atomic_append_line(path: Path, line: str) -> None:
    """Append one line to a text file (e.g. JSON lines) by rewriting it atomically: on any failure
    the file keeps exactly its previous lines, never a half-written last one."""
    path = Path(path)
    old = path.read_bytes() if path.exists() else b""
    atomic_write_bytes(path, old + line.rstrip("\n").encode() + b"\n")
