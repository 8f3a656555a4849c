"""Running the carried-state ("step") model: one frame per face and call, the recurrent state kept by the caller.

A :class:`StepRunner` turns ``uint8 (B, S, S)`` face crops (the newest frame of ``B`` faces) and their
states ``float32 (B, R, H)`` into class probabilities and the next states; a new face starts from
:meth:`StepRunner.zero_state`. PyTorch eager runs :meth:`fer_models.models.cnn_rnn.CNNRNN.step_model`;
ONNX Runtime runs the step file ``<model>.step.onnx`` that ``fedfer export`` writes beside an fp32
ONNX export of a ``cnn_rnn`` (named in the export's sidecar under ``step_model``; the step file has a
sidecar of its own, ``<model>.step.json``, with ``kind: "step"`` and the state's layout).
:func:`carried_runner` finds the step form of a loaded :class:`~fer_models.serving.runtime.Predictor`,
or says why there is none (then video inference re-reads a window of crops per frame).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fer_models.common.labels import EMOTIONS
from fer_models.models.rnn_step import StepUnsupportedError
from fer_models.serving.runtime import (
    ExportedModelError,
    OnnxPredictor,
    Predictor,
    TorchPredictor,
    TorchScriptPredictor,
    onnx_session,
    read_sidecar,
    softmax,
    to_clips,
)

logger = logging.getLogger(__name__)

#: ``kind`` of a step model's sidecar; the window export's sidecar names its step file under STEP_KEY.
STEP_KIND = "step"
STEP_KEY = "step_model"
STEP_INPUTS, STEP_OUTPUTS = ("frames", "state"), ("logits", "next_state")

__all__ = ["STEP_KEY", "STEP_KIND", "StepRunner", "StepUnsupportedError", "carried_runner", "load_step",
           "step_file_for"]


def step_file_for(model_path: Path) -> Path:
    """``model.onnx`` → ``model.step.onnx``: where the step form of an export is written."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}.{STEP_KIND}{model_path.suffix}")


class StepRunner:
    """Base: ``probabilities(crops, state)``; subclasses implement ``step(frames, state)``."""

    backend = "?"

    def __init__(self, *, rows: list[str], hidden_size: int, image_size: int, source: str = "",
                 classes: tuple[str, ...] = EMOTIONS) -> None:
        self.rows, self.hidden_size, self.image_size = list(rows), int(hidden_size), int(image_size)
        self.source, self.classes = source, classes

    def zero_state(self, batch: int) -> np.ndarray:
        return np.zeros((batch, len(self.rows), self.hidden_size), np.float32)

    def step(self, frames: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``float32 (B, 1, S, S)`` normalised frames, ``(B, R, H)`` states → logits, next states."""
        raise NotImplementedError

    def probabilities(self, crops: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``uint8 (B, S, S)`` crops and their states → ``(B, classes)`` probabilities, next states."""
        side = self.image_size
        if crops.ndim != 3 or crops.shape[1:] != (side, side):
            raise ValueError(f"crops must be (B, {side}, {side}), got {crops.shape}")
        if state.shape != (crops.shape[0], len(self.rows), self.hidden_size):
            raise ValueError(f"state must be ({crops.shape[0]}, {len(self.rows)}, {self.hidden_size}), "
                             f"got {state.shape}")
        logits, nxt = self.step(to_clips(crops[:, None])[:, 0], state.astype(np.float32, copy=False))
        return softmax(logits), nxt


class TorchStepRunner(StepRunner):
    backend = "pytorch"

    def __init__(self, module: nn.Module, *, source: str = "") -> None:
        super().__init__(rows=module.rows, hidden_size=module.hidden_size, image_size=module.image_size,
                         source=source)
        self.module = module.eval()

    @torch.no_grad()
    def step(self, frames: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, nxt = self.module(torch.from_numpy(frames), torch.from_numpy(state))
        return logits.numpy(), nxt.numpy()


class OnnxStepRunner(StepRunner):
    backend = "onnxruntime"

    def __init__(self, session: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session = session

    def step(self, frames: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, nxt = self.session.run(list(STEP_OUTPUTS), {STEP_INPUTS[0]: frames, STEP_INPUTS[1]: state})
        return logits, nxt


def load_step(path: Path, *, threads: int = 0) -> OnnxStepRunner:
    """The runner of a step file written by ``fedfer export`` (``<model>.step.onnx`` with its sidecar)."""
    path = Path(path)
    if not path.is_file():
        raise ExportedModelError(f"{path} does not exist: export the model again with `fedfer export RUN --format "
                                 f"onnx` (fp32), which writes the step model beside it")
    meta = read_sidecar(path, kind=STEP_KIND)
    state = meta.get("state") or {}
    if not isinstance(state.get("rows"), list) or not isinstance(state.get("hidden_size"), int):
        raise ExportedModelError(f"{path}: its sidecar lacks the state layout (state.rows, state.hidden_size); "
                                 f"export the model again")
    try:
        session = onnx_session(path, threads=threads)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises many types on damaged files
        raise ExportedModelError(f"{path} cannot be loaded ({type(exc).__name__}); export the model again") from None
    return OnnxStepRunner(session, rows=state["rows"], hidden_size=state["hidden_size"],
                          image_size=int(meta["image_size"]), source=str(path))


def carried_runner(predictor: Predictor) -> tuple[StepRunner | None, str]:
    """The step form of ``predictor`` and ``"carried"``, or ``None`` and why the window must be used."""
    if isinstance(predictor, TorchPredictor) and not isinstance(predictor, TorchScriptPredictor):
        make = getattr(predictor.module, "step_model", None)
        if make is None:
            return None, f"model {type(predictor.module).__name__} has no recurrent state to carry"
        try:
            return TorchStepRunner(make(), source=predictor.source), "carried"
        except StepUnsupportedError as exc:
            return None, str(exc)
    if isinstance(predictor, OnnxPredictor) and predictor.source:
        name = read_sidecar(Path(predictor.source)).get(STEP_KEY)
        if not name:
            return None, (f"{predictor.source} has no step model beside it (only fp32 ONNX exports of cnn_rnn "
                          f"have one)")
        threads = predictor.session.get_session_options().intra_op_num_threads
        return load_step(Path(predictor.source).with_name(str(name)), threads=threads), "carried"
    return None, f"the {predictor.backend} runtime has no step model (use model.pt or an fp32 ONNX export)"
