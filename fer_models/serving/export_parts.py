"""The pieces every export shares: errors, the result, the parity inputs and measure, the atomic file write,
the exportable copy of a model (ScatterNet as real matrices)."""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fer_models.common.atomic import atomic_write_bytes
from fer_models.data.samples import PIXEL_MEAN, PIXEL_STD
from fer_models.serving.sidecar import FP32_TOLERANCE  # noqa: F401  (re-exported: the export API)

PARITY_BATCH = 4
ONNX_OPSET = 18


class ExportError(ValueError):
    """A model that cannot be exported with the requested settings."""


class ExportParityError(ExportError):
    """The exported model's outputs differ from PyTorch's beyond the tolerance."""


@dataclass
class ExportResult:
    model_path: Path
    sidecar_path: Path
    sidecar: dict[str, Any] = field(default_factory=dict)
    step: ExportResult | None = None  # the carried-state step model written beside an fp32 ONNX cnn_rnn

    @property
    def parity(self) -> dict[str, Any]:
        return self.sidecar["parity"]


def example_clips(*, batch: int, clip_length: int, image_size: int, seed: int = 0) -> torch.Tensor:
    """Normalised random clips ``(batch, T, 1, S, S)`` from uniform pixels (the parity inputs)."""
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.rand(batch, clip_length, 1, image_size, image_size, generator=gen)
    return (pixels - PIXEL_MEAN) / PIXEL_STD


def exportable(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode whose ScatterNet front-ends (kymatio FFTs, complex
    tensors) are replaced by the equivalent real-valued :class:`ScatterGraph`."""
    from fer_models.models.scatter import ScatterFrontend
    from fer_models.models.scatter_graph import ScatterGraph

    out = copy.deepcopy(model).eval()
    for name, module in list(out.named_modules()):
        if isinstance(module, ScatterFrontend):
            parent_name, _, attr = name.rpartition(".")
            setattr(out.get_submodule(parent_name) if parent_name else out, attr, ScatterGraph.from_frontend(module))
    return out


def written_by(save: Any, out: Path) -> None:
    """``save(path)`` (a library that writes to a path) into a temporary folder, then ``out`` through the
    one atomic writer: a full disk or a crash never leaves a half-written model at ``out``."""
    with tempfile.TemporaryDirectory(prefix="fedfer-export-") as tmp:
        staged = Path(tmp) / f"model{out.suffix}"
        save(staged)
        atomic_write_bytes(out, staged.read_bytes())


def parity(*, reference: np.ndarray, exported: np.ndarray, tolerance: float | None) -> dict[str, Any]:
    """Max abs logit difference, max probability difference and top-1 agreement of two outputs."""
    from fer_models.serving.runtime import softmax

    diff = float(np.abs(reference - exported).max())
    prob_diff = float(np.abs(softmax(reference) - softmax(exported)).max())
    agree = float((reference.argmax(1) == exported.argmax(1)).mean())
    return {"max_abs_logit_diff": diff, "max_abs_prob_diff": prob_diff, "top1_agreement": agree,
            "tolerance": tolerance, "passed": None if tolerance is None else diff <= tolerance,
            "samples": int(reference.shape[0])}


