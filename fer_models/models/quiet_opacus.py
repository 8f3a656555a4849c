"""Opacus without the root log handler it installs.

``opacus.utils.module_utils`` calls ``logging.basicConfig`` when it is imported. In a process whose root logger
has no handler yet (a Flower ClientApp or ServerApp under ``flwr run`` or a SuperNode), that adds a second
handler beside Flower's own, and every log line is printed twice. Importing this module imports that Opacus
module and takes the handler off again (it is recognised by the format Opacus gives it); any other handler
stays. Every fedfer module that imports Opacus imports this one.
"""

from __future__ import annotations

import logging

import opacus.utils.module_utils  # noqa: F401  (the import that calls logging.basicConfig)

#: The format of the handler Opacus' basicConfig installs.
OPACUS_FORMAT = "%(asctime)s:%(levelname)s:%(message)s"


def remove_opacus_root_handler() -> int:
    """Remove the root handlers Opacus installed; returns how many were removed."""
    root = logging.getLogger()
    theirs = [h for h in root.handlers if isinstance(h, logging.StreamHandler) and h.formatter is not None
              and h.formatter._fmt == OPACUS_FORMAT]
    for handler in theirs:
        root.removeHandler(handler)
    return len(theirs)


remove_opacus_root_handler()
