"""The run folder: resolved config, per-round metrics, summary.json and the saved model.

Every file is written atomically (temporary file, then rename), so a crash never leaves a
half-written summary or model behind. Existing results are never overwritten unless asked.
"""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from fer_models.atomic import atomic_write_bytes

logger = logging.getLogger(__name__)

#: Files whose presence means a folder already holds a run's results.
RESULT_FILES = ("summary.json", "metrics.jsonl", "model.pt")


class RunFolderExistsError(FileExistsError):
    """The chosen run folder already holds results and overwriting was not allowed."""


def resolve_run_dir(*, out_dir: str, run_name: str, overwrite: bool) -> Path:
    """The folder to write into: ``out_dir`` or ``runs/<run_name>-<timestamp>``; checked for old results."""
    path = Path(out_dir) if out_dir else Path("runs") / f"{run_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    existing = [f for f in RESULT_FILES if (path / f).exists()]
    if existing and not overwrite:
        raise RunFolderExistsError(f"{path} already holds results ({', '.join(existing)}); choose another "
                                   f"--out, or pass --overwrite (overwrite=true) to replace them")
    path.mkdir(parents=True, exist_ok=True)
    if existing:
        (path / "metrics.jsonl").unlink(missing_ok=True)
    return path


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_jsonable) + "\n").encode())


def append_jsonl(path: Path, obj: Any) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(obj, default=_jsonable) + "\n")


def save_model(path: Path, *, state_dict: dict[str, torch.Tensor], model: str,
               model_options: dict[str, Any], config: dict[str, Any], server_round: int) -> None:
    """Save the global model with what is needed to rebuild it (``fedfer evaluate`` reads this)."""
    buf = io.BytesIO()
    torch.save({"format": "fedfer-model-v1", "model": model, "model_options": model_options,
                "config": config, "round": server_round, "state_dict": state_dict}, buf)
    atomic_write_bytes(path, buf.getvalue())


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
