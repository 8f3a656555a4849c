"""Output paths of the ``fedfer`` commands, checked before any work starts.

A command that writes a file (``export --out``) accepts a folder and writes its default file name
inside it; a command that writes a folder (``predict --video --out``, ``evaluate --out``, ``certs``,
``report``, ...) creates it when it writes. Either way the folder must accept the atomic writer's temporary files
(:func:`fer_models.common.atomic.check_writable`): a file in the way, a read-only folder or a folder
without permission is refused here, naming the path and the flag to change, instead of failing
with a traceback after minutes of work.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fer_models.common.atomic import check_writable

logger = logging.getLogger(__name__)


class OutputPathError(ValueError):
    """An output path that cannot be written: a file in the way, no permission, a read-only file system."""


def output_folder(path: Path, *, flag: str, advice: str = "") -> Path:
    """``path`` as a folder to write into; :class:`OutputPathError` if it cannot be.

    A folder that does not exist yet is not created (a command that then fails leaves nothing behind):
    its nearest existing ancestor must be a folder that can be written. ``advice`` ends the message
    (default: choose another ``flag``)."""
    path = Path(path).expanduser()
    advice = advice or f"choose another {flag}"
    existing = next(p for p in (path, *path.absolute().parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        what = f"{flag} {path} is a file" if existing == path else f"{existing} is a file"
        raise OutputPathError(f"{what}, not a folder: {advice}")
    try:
        check_writable(existing)
    except OSError as exc:
        where = "" if existing == path else f", the nearest existing folder of {path}"
        raise OutputPathError(f"cannot write into {existing} ({flag}{where}): {exc.strerror or exc}; {advice}") from None
    return path


def output_file(path: Path, *, default_name: str, flag: str) -> Path:
    """``path`` as a file to write; a folder means ``path/default_name``. The folder is created and
    checked (:func:`output_folder`); :class:`OutputPathError` names what is wrong."""
    path = Path(path).expanduser()
    if path.is_dir():
        logger.info("%s %s is a folder: writing %s inside it", flag, path, default_name)
        path = path / default_name
        if path.is_dir():
            raise OutputPathError(f"{path} is a folder: give {flag} a file name")
    elif path.exists() and not path.is_file():
        raise OutputPathError(f"{flag} {path} is not a regular file: give {flag} a file name")
    output_folder(path.parent, flag=flag)
    return path
