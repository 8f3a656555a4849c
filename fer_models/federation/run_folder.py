"""The run folder's contract: its file names, the saved model's format and how its JSON is written.

The server writes the folder (server/run_folder.py, server/recorder.py, server/checkpoint.py), the
simulation reads and extends it (reports, audit, evaluate, predict, bench) and benchmarks read it:
every name they agree on lives here. JSON is written one way: strict (NaN and infinity, e.g. the
loss of a diverged model, become null), ``indent=2`` plus a final newline for whole files, one
compact object a line for JSON lines, always atomically (:mod:`fer_models.common.atomic`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fer_models.common.atomic import atomic_append_line, atomic_write_bytes

# --- file names ---------------------------------------------------------------------------------------------------
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
#: Written instead of summary.json when a round fails (why, and the clients' errors).
FAILURE_FILE = "failure.json"
REPORT_FILE = "report.md"
ROUNDS_CSV = "rounds.csv"
#: ``fedfer partition`` / the simulation: the partition's class histogram and its heat map.
PARTITION_FILE, PARTITION_FIGURE = "partition.json", "partition.png"
#: ``fedfer evaluate``: the evaluation of a saved model on a data set.
EVALUATION_FILE = "evaluation.json"
#: The report's figures.
ACCURACY_LOSS_FIGURE, EPSILON_FIGURE, CONFUSION_FIGURE, PER_CLASS_FIGURE, ATTENTION_FIGURE = (
    "accuracy_loss.png", "epsilon.png", "confusion_matrix.png", "per_class.png", "attention.png")

#: Files whose presence means a folder already holds a run's results.
RESULT_FILES = (SUMMARY_FILE, METRICS_FILE, MODEL_FILE)
#: What an earlier run left that a fresh run replacing it (--overwrite, not --resume) removes first.
OLD_RUN_FILES = (*RESULT_FILES, FAILURE_FILE, CHECKPOINT_FILE, REPORT_FILE, ROUNDS_CSV)

# --- the saved model (model.pt): a torch.save dict, read with weights_only=True (simulation/predict/model_io.py) ----
MODEL_FORMAT = "fedfer-model-v1"
#: The keys every model file holds; it also holds ``format``, ``image_size``, ``config`` and ``round``.
MODEL_REQUIRED = ("model", "model_options", "state_dict")


def model_record(*, state_dict: dict[str, Any], model: str, model_options: dict[str, Any], config: dict[str, Any],
                 server_round: int, image_size: int) -> dict[str, Any]:
    """The dict a model file holds: what is needed to rebuild the model, its weights and where they come from."""
    return {"format": MODEL_FORMAT, "model": model, "model_options": model_options, "image_size": image_size,
            "config": config, "round": server_round, "state_dict": state_dict}


# --- JSON policy ------------------------------------------------------------------------------------------------
def strict_json(obj: Any, **kwargs: Any) -> str:
    """JSON any reader accepts: NaN and infinity (e.g. the loss of a diverged model) become null."""
    return json.dumps(_finite(obj), allow_nan=False, **kwargs)


def write_json(path: Path, obj: Any) -> None:
    """A whole JSON file of the run folder: strict, ``indent=2``, a final newline, atomic."""
    atomic_write_bytes(path, (strict_json(obj, indent=2) + "\n").encode())


def append_jsonl(path: Path, obj: Any) -> None:
    """One more JSON line; a failed write (a full disk) leaves the file with exactly its previous lines."""
    atomic_append_line(path, strict_json(obj))


def write_jsonl(path: Path, rows: list[Any]) -> None:
    """The whole JSON-lines file at once, atomically."""
    atomic_write_bytes(path, "".join(strict_json(r) + "\n" for r in rows).encode())


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
