"""Running a fedfer model behind one interface: PyTorch eager, TorchScript or ONNX Runtime.

A :class:`Predictor` turns ``uint8 (B, T, S, S)`` face crops into ``(B, 7)`` class
probabilities; it knows its clip length ``T``, input size ``S`` and class names. Exported
models are read with their JSON sidecar (:mod:`fer_models.serving.export`), which must have the format
this version writes: a file from another version, a missing sidecar or a damaged model file
raise :class:`ExportedModelError` with what to do.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fer_models.common.labels import EMOTIONS
from fer_models.data.samples import PIXEL_MEAN, PIXEL_STD
from fer_models.serving.sidecar import SIDECAR_FORMAT, SUFFIX, sidecar_path

logger = logging.getLogger(__name__)

_REQUIRED = ("model_file", "export_format", "classes", "image_size", "clip_length", "normalization")


class ExportedModelError(ValueError):
    """An exported model (or its sidecar) that is missing, damaged or from another version."""


def to_clips(crops: np.ndarray) -> np.ndarray:
    """``uint8 (B, T, S, S)`` crops → normalised float32 clips ``(B, T, 1, S, S)``."""
    if crops.ndim != 4 or crops.dtype != np.uint8:
        raise ValueError(f"crops must be uint8 (B, T, S, S), got {crops.dtype} {crops.shape}")
    x = crops.astype(np.float32) / 255.0
    return ((x - PIXEL_MEAN) / PIXEL_STD)[:, :, None]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


class Predictor:
    """Base: ``probabilities(crops)``; subclasses implement ``logits(clips)``."""

    backend = "?"

    def __init__(self, *, clip_length: int, image_size: int, classes: tuple[str, ...] = EMOTIONS,
                 source: str = "", training_config: dict[str, Any] | None = None,
                 training_round: int | None = None) -> None:
        self.clip_length, self.image_size, self.classes, self.source = clip_length, image_size, classes, source
        self.training_config = dict(training_config or {})  # the run config it was trained with ({}: unknown)
        self.training_round = training_round  # the round of the run whose global model it is (None: unknown)

    def logits(self, clips: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        """``uint8 (B, T, S, S)`` crops → ``(B, classes)`` probabilities."""
        if crops.shape[1:] != (self.clip_length, self.image_size, self.image_size):
            raise ValueError(f"crops must be (B, {self.clip_length}, {self.image_size}, {self.image_size}), "
                             f"got {crops.shape}")
        return softmax(self.logits(to_clips(crops)))


class TorchPredictor(Predictor):
    backend = "pytorch"

    def __init__(self, module: nn.Module, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.module = module.eval()

    @torch.no_grad()
    def logits(self, clips: np.ndarray) -> np.ndarray:
        return self.module(torch.from_numpy(clips)).numpy()


class TorchScriptPredictor(TorchPredictor):
    backend = "torchscript"


class OnnxPredictor(Predictor):
    backend = "onnxruntime"

    def __init__(self, session: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def logits(self, clips: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: clips})[0]


def onnx_session(path: Path, *, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (0: all cores)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def load_torchscript(path: Path) -> Any:
    """``torch.jit.load`` without its deprecation warning (TorchScript is still what it reads)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu")


def read_sidecar(model_path: Path, *, kind: str = "window") -> dict[str, Any]:
    """The validated sidecar of an exported model file: a window model (clips in), or with ``kind="step"``
    the carried-state model of :mod:`fer_models.serving.step` (a sidecar without ``kind`` is a window model's)."""
    side = sidecar_path(model_path)
    if not side.is_file():
        raise ExportedModelError(f"{side} is missing: an exported model needs the JSON sidecar written beside "
                                 f"it by `fedfer export`; copy both files, or export again")
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise ExportedModelError(f"{side} is not valid JSON ({exc}); export the model again") from None
    if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ExportedModelError(f"{side} has format {found!r}, this version reads {SIDECAR_FORMAT!r}: the model "
                                 f"was exported by another fedfer version; export it again with this one")
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise ExportedModelError(f"{side} lacks {', '.join(missing)}; export the model again")
    if tuple(meta["classes"]) != EMOTIONS:
        raise ExportedModelError(f"{side}: classes {meta['classes']} differ from this version's {list(EMOTIONS)}")
    found_kind = meta.get("kind", "window")
    if found_kind != kind:
        window = meta.get("window_model_file", "the window model")
        raise ExportedModelError(f"{side} describes a {found_kind} model, not a {kind} model: give {window} "
                                 f"(its carried-state step model is found beside it)" if found_kind == "step" else
                                 f"{side} describes a {found_kind} model, not a {kind} model; export it again")
    described = Path(model_path).with_name(str(meta["model_file"]))
    fmt = next((f for f, suffix in SUFFIX.items() if suffix == Path(model_path).suffix), None)
    if meta["export_format"] != fmt or (described.name != Path(model_path).name and described.is_file()):
        raise ExportedModelError(
            f"{side} describes {described.name} ({meta['export_format']}, clip length {meta['clip_length']}), not "
            f"{Path(model_path).name}: two exports with one name share a sidecar; export {Path(model_path).name} "
            f"again, with --out naming a file of its own")
    return meta


def check_clip_length(predictor: Predictor, *, what: str, max_probe: int = 16) -> None:
    """Run one blank clip of the predictor's clip length through it, before any real input.

    A model whose graph was fixed at another clip length (a TorchScript or ONNX export whose sidecar
    is not its own) fails here with :class:`ExportedModelError` naming the length it takes instead
    of the runtime's own error in the middle of a video."""
    def runs(length: int) -> bool:
        try:
            predictor.logits(np.zeros((1, length, 1, predictor.image_size, predictor.image_size), np.float32))
        except Exception:  # noqa: BLE001 - TorchScript, ONNX Runtime and PyTorch raise many types here
            return False
        return True

    if runs(predictor.clip_length):
        return
    takes = next((t for t in range(1, max_probe + 1) if t != predictor.clip_length and runs(t)), None)
    found = f"takes clips of {takes} frame(s)" if takes else f"does not run on clips of 1..{max_probe} frames"
    raise ExportedModelError(f"{predictor.source} {found}, but {what} says {predictor.clip_length}: "
                             + (f"export it again with `fedfer export RUN --clip-length {takes}` so that the two "
                                f"agree" if takes else "export the model again"))


def load_exported(path: Path, *, threads: int = 0) -> Predictor:
    """A predictor for an exported ``.onnx`` / ``.ts`` file (or its ``.json`` sidecar)."""
    path = Path(path)
    if path.suffix == ".json":
        path = path.with_suffix(SUFFIX["onnx"]) if path.with_suffix(SUFFIX["onnx"]).exists() else \
            path.with_suffix(SUFFIX["torchscript"])
    if not path.is_file():
        raise ExportedModelError(f"{path} does not exist: give a model exported by `fedfer export`")
    meta = read_sidecar(path)
    kwargs = {"clip_length": int(meta["clip_length"]), "image_size": int(meta["image_size"]), "source": str(path),
              "training_config": (meta.get("source") or {}).get("config"),
              "training_round": (meta.get("source") or {}).get("round")}
    try:
        if path.suffix == SUFFIX["onnx"]:
            predictor: Predictor = OnnxPredictor(onnx_session(path, threads=threads), **kwargs)
        else:
            if threads:
                torch.set_num_threads(threads)
            predictor = TorchScriptPredictor(load_torchscript(path), **kwargs)
    except Exception as exc:  # ONNX Runtime / TorchScript raise many types on damaged files
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise ExportedModelError(f"{path} cannot be loaded ({type(exc).__name__}: {first}); the file is damaged "
                                 f"or was written by another version: export it again") from None
    check_clip_length(predictor, what=f"its sidecar {sidecar_path(path)}")
    return predictor
