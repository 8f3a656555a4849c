"""Writing the run folder: choosing and clearing it, saving the model.

Its file names, the model format and the JSON policy are the core's (fer_models/federation/run_folder.py).

Every file is written atomically (temporary file, then rename), so a crash never leaves a
half-written summary or model behind. Existing results are never overwritten unless asked.
"""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path
from typing import Any

import torch

from fer_models.common.atomic import atomic_write_bytes, check_writable
from fer_models.federation.run_folder import (
    FAILURE_FILE,
    METRICS_FILE,
    OLD_RUN_FILES,
    RESULT_FILES,
    append_jsonl,
    model_record,
    strict_json,
    write_json,
    write_jsonl,
)

logger = logging.getLogger(__name__)

__all__ = ["FAILURE_FILE", "RESULT_FILES", "RunFolderError", "RunFolderExistsError", "append_jsonl", "resolve_run_dir",
           "save_model", "strict_json", "write_json", "write_jsonl"]


class RunFolderExistsError(FileExistsError):
    """The chosen run folder already holds results and overwriting was not allowed."""


class RunFolderError(ValueError):
    """The run folder cannot be created or written (a file in the way, no permission, ...)."""


def resolve_run_dir(*, out_dir: str, run_name: str, overwrite: bool, resume: bool = False) -> Path:
    """The folder to write into: ``out_dir`` or ``runs/<run_name>-<timestamp>``; checked for old results.

    With ``overwrite`` a fresh run removes the old run's results first; a resumed run keeps them.
    """
    path = Path(out_dir) if out_dir else Path("runs") / f"{run_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    existing = [f for f in RESULT_FILES if (path / f).exists()]
    if existing and not overwrite:
        raise RunFolderExistsError(f"{path} already holds results ({', '.join(existing)}); choose another "
                                   f"--out, or pass --overwrite (overwrite=true) to replace them")
    try:
        path.mkdir(parents=True, exist_ok=True)
        check_writable(path)
        stale = (path / f for f in OLD_RUN_FILES) if not resume else (path / METRICS_FILE, path / FAILURE_FILE)
        for old in [*stale, *([] if resume or not existing else path.glob("*.png"))]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot use {path} as the run folder: {exc.strerror or exc}"
                             f"{' (a file of that name is in the way)' if path.is_file() else ''}; "
                             f"choose another --out") from None
    return path


def save_model(path: Path, *, state_dict: dict[str, torch.Tensor], model: str, model_options: dict[str, Any],
               config: dict[str, Any], server_round: int, image_size: int) -> None:
    """Save the global model with what is needed to rebuild it (``fedfer evaluate`` reads this)."""
    buf = io.BytesIO()
    torch.save(model_record(state_dict=state_dict, model=model, model_options=model_options, config=config,
                            server_round=server_round, image_size=image_size), buf)
    atomic_write_bytes(path, buf.getvalue())
