"""A console people can follow: fedfer's own lines on the terminal, the engines' logs in the run folder.

Flower prints its INFO blocks (strategy trees, aggregated metric dicts, sampling lines) through
its own handler on the ``flwr`` logger, and Ray forwards every worker's output to the driver.
For a run this moves Flower's log to ``<run>/logs/flower.log`` and keeps Ray's worker output off the
terminal (it stays in Ray's session folder), unless ``--verbose``. What matters still reaches the
console through fedfer's loggers: the progress line per round (round k/N, accuracy, loss, epsilon
with its unit, clients ok/failed, elapsed, ETA), refusals, dropped or rejected clients, failures.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

FLOWER_LOG = "flower.log"
LOG_DIR = "logs"


def engine_logs_to_file(run_dir: Path, *, verbose: bool) -> Path | None:
    """Send the ``flwr`` logger to ``run_dir/logs/flower.log`` instead of the terminal; returns the file
    (None with ``verbose``: everything stays on the terminal)."""
    if verbose:
        return None
    folder = Path(run_dir) / LOG_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FLOWER_LOG
    flwr = logging.getLogger("flwr")
    for handler in list(flwr.handlers):
        if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (sys.stderr, sys.stdout):
            flwr.removeHandler(handler)
    if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.resolve() for h in flwr.handlers):
        file_handler = logging.FileHandler(path, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        flwr.addHandler(file_handler)
    flwr.propagate = False
    return path
