"""What an exported model file and its JSON sidecar are called, and the sidecar's format tag."""

from __future__ import annotations

from pathlib import Path

SUFFIX = {"onnx": ".onnx", "torchscript": ".ts"}
SIDECAR_FORMAT = "fedfer-export-v1"


def sidecar_path(model_path: Path) -> Path:
    """``model.onnx`` → ``model.json``: where the sidecar of an exported model lives."""
    return Path(model_path).with_suffix(".json")
