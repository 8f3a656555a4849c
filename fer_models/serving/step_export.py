"""Exporting the carried-state ("step") form of a ``cnn_rnn`` to ONNX, with its sidecar and a parity check.

The step graph takes one normalised frame per face ``frames (B, 1, S, S)`` and the recurrent state
``state (B, R, H)`` (zeros for a new face) and returns ``logits (B, 7)`` and ``next_state (B, R, H)``;
the rows of the state are named in the sidecar (``state.rows``, :func:`fer_models.models.rnn_step.state_rows`).
Parity: the ONNX and PyTorch step models are each run over several random frames carrying their own
state, and their logits compared (max abs difference within ``tolerance``, else :class:`ExportParityError`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fer_models.common.atomic import atomic_write_bytes
from fer_models.common.labels import EMOTIONS
from fer_models.data.samples import PIXEL_MEAN, PIXEL_STD
from fer_models.models.rnn_step import StepUnsupportedError
from fer_models.serving.export_parts import (
    FP32_TOLERANCE,
    ONNX_OPSET,
    PARITY_BATCH,
    ExportParityError,
    ExportResult,
    example_clips,
    exportable,
    parity,
    written_by,
)
from fer_models.serving.runtime import onnx_session
from fer_models.serving.sidecar import SIDECAR_FORMAT, sidecar_path
from fer_models.serving.step import STEP_INPUTS, STEP_KIND, STEP_OUTPUTS, OnnxStepRunner


def _to_onnx_step(step: nn.Module, path: Path) -> None:
    """The TorchScript-based exporter first (0.1 s here against 14 s for the dynamo one on this small graph; the
    parity check below holds either to the tolerance), the dynamo exporter where a torch no longer has it."""
    frames, state = example_clips(batch=2, clip_length=1, image_size=step.image_size, seed=1)[:, 0], step.zero_state(2)
    names = [*STEP_INPUTS, *STEP_OUTPUTS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(step, (frames, state), str(path), dynamo=False, opset_version=ONNX_OPSET,
                              input_names=list(STEP_INPUTS), output_names=list(STEP_OUTPUTS),
                              dynamic_axes={name: {0: "batch"} for name in names})
            return
        except (TypeError, RuntimeError, AttributeError, NotImplementedError):  # no legacy exporter in this torch
            pass
        batch = torch.export.Dim("batch", min=1, max=1024)
        program = torch.onnx.export(step, (frames, state), dynamo=True, opset_version=ONNX_OPSET,
                                    input_names=list(STEP_INPUTS), output_names=list(STEP_OUTPUTS),
                                    dynamic_shapes=({0: batch}, {0: batch}), verbose=False)
    program.save(str(path))


def step_parity(step: nn.Module, runner: Any, *, frames: int = 4, tolerance: float | None) -> dict[str, Any]:
    """Logits and states of ``runner`` (an exported step model) against PyTorch's ``step`` over ``frames``
    random frames of :data:`PARITY_BATCH` faces, each side carrying its own state."""
    clips = example_clips(batch=PARITY_BATCH, clip_length=frames, image_size=step.image_size, seed=2)
    ref_state, worst_state, ref, got = step.zero_state(PARITY_BATCH), 0.0, [], []
    got_state = ref_state.numpy()
    with torch.no_grad():
        for t in range(frames):
            logits, ref_state = step(clips[:, t], ref_state)
            g_logits, got_state = runner.step(clips[:, t].numpy(), got_state)
            ref.append(logits.numpy())
            got.append(g_logits)
            worst_state = max(worst_state, float(np.abs(ref_state.numpy() - got_state).max()))
    return {**parity(reference=np.concatenate(ref), exported=np.concatenate(got), tolerance=tolerance),
            "frames": frames, "max_abs_state_diff": worst_state}


def export_step_model(*, model: nn.Module, out: Path, meta: dict[str, Any] | None = None,
                      tolerance: float = FP32_TOLERANCE) -> ExportResult:
    """Export the carried-state form of ``model`` (``model.step_model()``) to the ONNX file ``out``, with its
    sidecar (``kind: "step"``, the state's layout) and a parity check over several frames."""
    make = getattr(model, "step_model", None)
    if make is None:
        raise StepUnsupportedError(f"model {type(model).__name__} has no step model (only cnn_rnn carries a state)")
    step = make()
    written_by(lambda p: _to_onnx_step(exportable(step), p), out)
    runner = OnnxStepRunner(onnx_session(out), rows=step.rows, hidden_size=step.hidden_size,
                            image_size=step.image_size, source=str(out))
    check = step_parity(step, runner, tolerance=tolerance)
    rows, side = len(step.rows), sidecar_path(out)
    sidecar = {
        "format": SIDECAR_FORMAT, "kind": STEP_KIND, "model_file": out.name, "export_format": "onnx",
        "quantize": "none", "classes": list(EMOTIONS), "image_size": step.image_size, "clip_length": 1,
        "inputs": [{"name": STEP_INPUTS[0], "shape": ["batch", 1, step.image_size, step.image_size],
                    "dtype": "float32", "layout": "B,C,H,W (one grayscale frame per face)"},
                   {"name": STEP_INPUTS[1], "shape": ["batch", rows, step.hidden_size], "dtype": "float32"}],
        "outputs": [{"name": STEP_OUTPUTS[0], "shape": ["batch", len(EMOTIONS)], "softmax": "not applied"},
                    {"name": STEP_OUTPUTS[1], "shape": ["batch", rows, step.hidden_size]}],
        "state": {"rows": step.rows, "hidden_size": step.hidden_size, "initial": "zeros (a new face)",
                  "meaning": "after frame t: the recurrent layer and readout over frames 0..t, each encoded alone"},
        "normalization": {"pixel_scale": 1 / 255, "mean": PIXEL_MEAN, "std": PIXEL_STD,
                          "formula": "x = (pixel / 255 - mean) / std"},
        "torch": torch.__version__, "size_bytes": out.stat().st_size, "parity": check, **(meta or {}),
    }
    atomic_write_bytes(side, (json.dumps(sidecar, indent=2) + "\n").encode())
    if check["passed"] is False:
        raise ExportParityError(f"{out}: the step model's outputs differ from PyTorch's by "
                                f"{check['max_abs_logit_diff']:.3g} (> {tolerance:g}); do not deploy it")
    return ExportResult(model_path=out, sidecar_path=side, sidecar=sidecar)


