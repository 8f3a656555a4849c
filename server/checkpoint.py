"""Per-round checkpoints and resume: model, round, strategy state and the server's privacy record.

A checkpoint is written atomically after every round (temporary file, then rename). It holds
what a resumed run needs to end exactly where an uninterrupted one would: the global weights,
the round number, the strategy's own state (e.g. FedAdam's moments, adaptive clipping norm),
Python's RNG state (client sampling), the server's epsilon records and the run's lineage id (the
clients' ledgers continue on their own nodes under it; the server never holds them).
"""

from __future__ import annotations

import io
import logging
import pickle
import random
from pathlib import Path
from typing import Any

import torch

from fer_models.common.atomic import atomic_write_bytes
from fer_models.config import RunConfig, default_flat
from fer_models.federation.run_folder import CHECKPOINT_FILE

logger = logging.getLogger(__name__)

FORMAT = "fedfer-checkpoint-v1"
#: Settings that may differ between the interrupted run and its resumption.
RESUMABLE_DIFFERENCES = frozenset({"out-dir", "overwrite", "resume-from"})
#: Strategy attributes that carry state from round to round (FedOpt family, FedAvgM, adaptive clipping).
_STATE_ATTRS = ("current_arrays", "m_t", "v_t", "momentum_vector", "clipping_norm", "releases", "skipped")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, damaged, or belongs to a different run setup."""


def strategy_state(strategy: Any) -> dict[str, Any]:
    """The stateful attributes of a strategy and, for DP wrappers, of the strategy it wraps."""
    state = {k: getattr(strategy, k) for k in _STATE_ATTRS if hasattr(strategy, k)}
    inner = getattr(strategy, "strategy", None)
    if inner is not None:
        state["strategy"] = strategy_state(inner)
    return state


def restore_strategy_state(strategy: Any, state: dict[str, Any]) -> None:
    for key, value in state.items():
        if key == "strategy":
            restore_strategy_state(strategy.strategy, value)
        else:
            setattr(strategy, key, value)


def save_checkpoint(run_dir: Path, *, server_round: int, config: dict[str, Any], state_dict: dict[str, torch.Tensor],
                    strategy: Any, recorder_state: dict[str, Any], lineage: str) -> Path:
    """Write ``run_dir/checkpoint.pt`` atomically."""
    payload = {"format": FORMAT, "round": server_round, "config": config,
               "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
               "strategy": pickle.dumps(strategy_state(strategy)), "python_random": random.getstate(),
               "recorder": recorder_state, "lineage": lineage}
    buf = io.BytesIO()
    torch.save(payload, buf)
    path = run_dir / CHECKPOINT_FILE
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint (a run folder or the file itself); damaged files raise CheckpointError."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: the run did not complete a round, or this is not "
                              f"a fedfer run folder")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated zip, a foreign pickle, ...
        raise CheckpointError(f"{path} is damaged or not a fedfer checkpoint ({type(exc).__name__}: {exc}); "
                              f"it cannot be resumed") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a fedfer checkpoint (expected format {FORMAT})")
    return payload


def check_resumable(saved: dict[str, Any], cfg: RunConfig) -> None:
    """Refuse to resume under settings other than the checkpoint's, naming each difference."""
    now = cfg.to_flat()
    # a setting added after the checkpoint was written is no difference while it keeps its default
    saved = {**{k: v for k, v in default_flat().items() if k not in saved}, **saved}
    diffs = [f"{k}: checkpoint has {saved.get(k)!r}, this run has {now.get(k)!r}"
             for k in sorted(set(saved) | set(now)) if k not in RESUMABLE_DIFFERENCES and saved.get(k) != now.get(k)]
    if diffs:
        raise CheckpointError("cannot resume: the settings differ from the checkpoint's ("
                              + "; ".join(diffs) + "); resume with the run's own settings")
