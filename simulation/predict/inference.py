"""Loading any fedfer model for inference: ``model.pt`` / a run folder (PyTorch eager) or an
exported ``.onnx`` / ``.ts`` file with its sidecar (ONNX Runtime / TorchScript)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
                          image_size=int(getattr(model, "image_size", IMAGE_SIDE)), source=str(info["path"]),
                          training_config=info["config"], training_round=info["round"])


def synthetic_training_warning(config: dict[str, Any], *, source: str) -> str | None:
    """The warning for a model trained on fedfer's embedded synthetic faces (no data-path, not a federation of
    sites), whose labels of real faces mean nothing; None for any other (or an unknown) training run."""
    if not config or config.get("client-data") == "site":
        return None
    if config.get("data-format") != "synthetic" and config.get("data-path"):
        return None
    return (f"{source} was trained on fedfer's SYNTHETIC faces (its run had no data-path): its labels of real "
            f"faces mean nothing; train on real ones first (--data PATH, docs/quickstart.md)")
