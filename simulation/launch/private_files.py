"""Files only their owner may read: folders 0700, files 0600, whatever the umask or an older file's mode."""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def make_private_dir(path: Path | str) -> Path:
    """Create ``path`` (and its parents) and make it 0700, also when it already existed."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    os.chmod(path, PRIVATE_DIR_MODE)
    return path


def write_private(path: Path | str, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` with mode 0600 (set before a byte is written, also over an older file)."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), PRIVATE_FILE_MODE)
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
    return path
