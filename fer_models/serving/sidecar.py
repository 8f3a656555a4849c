"""What an exported model file and its JSON sidecar are called, the sidecar's format tag, and the export choices
(torch-free, so that `fedfer export --help` needs no torch)."""

from __future__ import annotations

from pathlib import Path

SUFFIX = {"onnx": ".onnx", "torchscript": ".ts"}
SIDECAR_FORMAT = "fedfer-export-v1"
FORMATS = tuple(SUFFIX)
QUANTIZE = ("none", "int8")
#: The largest |logit difference| an fp32 export may show against the PyTorch model.
FP32_TOLERANCE = 1e-4


def sidecar_path(model_path: Path) -> Path:
    """``model.onnx`` → ``model.json``: where the sidecar of an exported model lives."""
    return Path(model_path).with_suffix(".json")
