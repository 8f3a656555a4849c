"""Loading any fedfer model for inference: ``model.pt`` / a run folder (PyTorch eager) or an
exported ``.onnx`` / ``.ts`` file with its sidecar (ONNX Runtime / TorchScript)."""

from __future__ import annotations

from pathlib import Path

import torch

from fer_models.common.labels import IMAGE_SIDE
from fer_models.serving.runtime import Predictor, TorchPredictor, load_exported
from fer_models.serving.sidecar import SUFFIX

EXPORTED_SUFFIXES = (*SUFFIX.values(), ".json")


def load_predictor(*, path: Path, threads: int = 0) -> Predictor:
    """A :class:`Predictor` for ``path``; ``threads`` > 0 caps the intra-op threads."""
    path = Path(path)
    if path.suffix in EXPORTED_SUFFIXES:
        return load_exported(path, threads=threads)
    from simulation.predict.model_io import load_model_file

    if threads:
        torch.set_num_threads(threads)
    model, info = load_model_file(path=path)
    return TorchPredictor(model, clip_length=int(info["config"].get("clip-length", 1)),
                          image_size=int(getattr(model, "image_size", IMAGE_SIDE)), source=str(info["path"]))
