"""The run folder: resolved config, per-round metrics, summary.json and the saved model.

Every file is written atomically (temporary file, then rename), so a crash never leaves a
half-written summary or model behind. Existing results are never overwritten unless asked.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from fer_models.common.atomic import atomic_append_line, atomic_write_bytes, check_writable

logger = logging.getLogger(__name__)

#: Files whose presence means a folder already holds a run's results.
RESULT_FILES = ("summary.json", "metrics.jsonl", "model.pt")
#: Written instead of summary.json when a round fails (why, and the clients' errors).
FAILURE_FILE = "failure.json"


#: What an earlier run left that a fresh run replacing it (--overwrite, not --resume) removes first,
#: so that a replacement that fails does not leave the old results looking like its own.
_OLD_RUN_FILES = (*RESULT_FILES, FAILURE_FILE, "checkpoint.pt", "report.md", "rounds.csv")


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
        stale = (path / f for f in _OLD_RUN_FILES) if not resume else (path / "metrics.jsonl", path / FAILURE_FILE)
        for old in [*stale, *([] if resume or not existing else path.glob("*.png"))]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot use {path} as the run folder: {exc.strerror or exc}"
                             f"{' (a file of that name is in the way)' if path.is_file() else ''}; "
                             f"choose another --out") from None
    return path


def strict_json(obj: Any, **kwargs: Any) -> str:
    """JSON any reader accepts: NaN and infinity (e.g. the loss of a diverged model) become null."""
    return json.dumps(_finite(obj), allow_nan=False, **kwargs)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (strict_json(obj, indent=2) + "\n").encode())


def append_jsonl(path: Path, obj: Any) -> None:
    """One more JSON line; a failed write (a full disk) leaves the file with exactly its previous lines."""
    atomic_append_line(path, strict_json(obj))


def write_jsonl(path: Path, rows: list[Any]) -> None:
    """The whole JSON-lines file at once, atomically."""
    atomic_write_bytes(path, "".join(strict_json(r) + "\n" for r in rows).encode())


def save_model(path: Path, *, state_dict: dict[str, torch.Tensor], model: str, model_options: dict[str, Any],
               config: dict[str, Any], server_round: int, image_size: int) -> None:
    """Save the global model with what is needed to rebuild it (``fedfer evaluate`` reads this)."""
    buf = io.BytesIO()
    torch.save({"format": "fedfer-model-v1", "model": model, "model_options": model_options,
                "image_size": image_size, "config": config, "round": server_round, "state_dict": state_dict}, buf)
    atomic_write_bytes(path, buf.getvalue())


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _finite(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj
