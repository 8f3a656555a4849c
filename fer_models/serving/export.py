"""Exporting a fedfer model to ONNX or TorchScript, with a JSON sidecar and a parity check.

The exported graph takes float clips ``(B, T, 1, S, S)`` (already normalised, see
:func:`fer_models.data.samples.normalize`) and returns ``(B, 7)`` logits; ``T`` is fixed at export
time (the recurrent model is unrolled over it), ``B`` stays free. The sidecar
``<model>.json`` (format :data:`SIDECAR_FORMAT`) says everything a runtime needs: class names,
input size, clip length, normalisation, the model's name and options and the run it came from,
plus the parity measured at export: the exported model and the PyTorch model are run on the same
random clips and their logits compared (fp32: max abs difference within ``tolerance``, 1e-4
by default, else :class:`ExportParityError`; int8: reported, top-1 agreement and probability
difference, never a failure since quantisation changes the numbers by design). An fp32 ONNX export of a
model with a step form (``cnn_rnn``) also writes the carried-state step model ``<model>.step.onnx`` and its
sidecar (:mod:`fer_models.serving.step_export`), named in this sidecar under ``step_model``.

``--quantize int8`` is dynamic quantisation (int8 weights, activations quantised on the fly) of
the ``Linear`` layers: ONNX Runtime's ``quantize_dynamic`` of the exported graph's Gemm nodes, or
``torch.ao`` dynamic quantisation for TorchScript. Convolutions stay fp32. The ScatterNet
front-end is exported as :class:`fer_models.models.scatter_graph.ScatterGraph` (kymatio's
complex FFTs as constant real matrix products), checked by the same parity test.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fer_models.common.atomic import atomic_write_bytes
from fer_models.common.labels import EMOTIONS, IMAGE_SIDE
from fer_models.data.samples import PIXEL_MEAN, PIXEL_STD
from fer_models.serving.export_parts import (  # noqa: F401  (re-exported: the export API)
    FP32_TOLERANCE,
    ONNX_OPSET,
    PARITY_BATCH,
    ExportError,
    ExportParityError,
    ExportResult,
    example_clips,
    exportable,
    parity,
    written_by,
)
from fer_models.serving.sidecar import FORMATS, QUANTIZE, SIDECAR_FORMAT, SUFFIX, sidecar_path  # noqa: F401

logger = logging.getLogger(__name__)



def _to_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=ONNX_OPSET,
                                    input_names=["clips"], output_names=["logits"],
                                    dynamic_shapes=({0: batch},), verbose=False)
    program.save(str(path))  # weights embedded: one self-contained file


def _fixed_matmuls(path: Path) -> list[str]:
    """MatMul nodes with no trained weight: the ScatterNet's DFT matrices, attention products."""
    import onnx

    graph = onnx.load(str(path)).graph
    return [n.name for n in graph.node if n.op_type == "MatMul" and not any(i.endswith("weight") for i in n.input)]


def _to_quantized_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = path.with_name(f"fp32{path.suffix}")
    _to_onnx(model, example, fp32)
    # the trained Linear layers only: int8 rounding of the fixed DFT matrices moved the scatter
    # model's logits about 10x more than the layers' own rounding
    quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                     nodes_to_exclude=_fixed_matmuls(fp32))


def _to_torchscript(model: nn.Module, example: torch.Tensor, path: Path, *, quantize: str) -> None:
    if quantize == "int8":
        from torch.ao.quantization import quantize_dynamic

        model = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape checks turned into constants
        traced = torch.jit.trace(model, (example,), check_trace=False)
        traced = torch.jit.freeze(traced.eval())
    torch.jit.save(traced, str(path))


def run_exported(path: Path, clips: np.ndarray, *, threads: int = 0) -> np.ndarray:
    """Logits of an exported model file (``.onnx`` or ``.ts``) on float32 clips."""
    from fer_models.serving.runtime import onnx_session

    path = Path(path)
    if path.suffix == SUFFIX["onnx"]:
        session = onnx_session(path, threads=threads)
        return session.run(None, {session.get_inputs()[0].name: clips.astype(np.float32)})[0]
    from fer_models.serving.runtime import load_torchscript

    module = load_torchscript(path)
    with torch.no_grad():
        return module(torch.from_numpy(clips.astype(np.float32))).numpy()


def _warn_if_shared(side: Path, *, model_file: str) -> None:
    """An earlier export whose sidecar this one replaces (``model.onnx`` and ``model.ts`` share ``model.json``)."""
    try:
        earlier = json.loads(side.read_text()).get("model_file") if side.is_file() else None
    except (OSError, ValueError, AttributeError):
        return
    if earlier and earlier != model_file and side.with_name(str(earlier)).is_file():
        logger.warning("%s described %s, which now has no sidecar of its own and will be refused: export it "
                       "again with --out naming another file", side, side.with_name(str(earlier)))


def export_model(*, model: nn.Module, out: Path, fmt: str, clip_length: int, quantize: str = "none",
                 meta: dict[str, Any] | None = None, tolerance: float = FP32_TOLERANCE) -> ExportResult:
    """Export ``model`` to ``out`` (a file; its sidecar goes beside it) and check parity.

    ``meta`` (model name, options, source run...) is copied into the sidecar. Raises
    :class:`ExportError` for bad settings and :class:`ExportParityError` when fp32 outputs differ
    by more than ``tolerance``.
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    if quantize not in QUANTIZE:
        raise ExportError(f"--quantize must be one of {', '.join(QUANTIZE)} (got {quantize!r})")
    if clip_length < 1:
        raise ExportError(f"clip length must be >= 1 (got {clip_length})")
    image_size = int(getattr(model, "image_size", IMAGE_SIDE))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = example_clips(batch=2, clip_length=clip_length, image_size=image_size, seed=1)
    graph = exportable(model)
    if fmt == "onnx":
        written_by(lambda p: (_to_quantized_onnx if quantize == "int8" else _to_onnx)(graph, example, p), out)
    else:
        written_by(lambda p: _to_torchscript(graph, example, p, quantize=quantize), out)
    clips = example_clips(batch=PARITY_BATCH, clip_length=clip_length, image_size=image_size, seed=2)
    with torch.no_grad():
        reference = model.eval()(clips).numpy()
    check = parity(reference=reference, exported=run_exported(out, clips.numpy()),
                   tolerance=tolerance if quantize == "none" else None)
    step = None
    if fmt == "onnx" and quantize == "none" and check["passed"] and hasattr(model, "step_model"):
        from fer_models.serving.step import step_file_for
        from fer_models.serving.step_export import export_step_model

        step = export_step_model(model=model, out=step_file_for(out), tolerance=tolerance,
                                 meta={**(meta or {}), "window_model_file": out.name})
    sidecar = {
        "format": SIDECAR_FORMAT, "model_file": out.name, "export_format": fmt, "quantize": quantize,
        "classes": list(EMOTIONS), "image_size": image_size, "clip_length": int(clip_length),
        "input": {"name": "clips", "shape": ["batch", clip_length, 1, image_size, image_size],
                  "dtype": "float32", "layout": "B,T,C,H,W (grayscale)"},
        "output": {"name": "logits", "shape": ["batch", len(EMOTIONS)], "softmax": "not applied"},
        "normalization": {"pixel_scale": 1 / 255, "mean": PIXEL_MEAN, "std": PIXEL_STD,
                          "formula": "x = (pixel / 255 - mean) / std"},
        "torch": torch.__version__, "size_bytes": out.stat().st_size, "parity": check, **(meta or {}),
        **({"step_model": step.model_path.name} if step else {}),
    }
    side = sidecar_path(out)
    _warn_if_shared(side, model_file=out.name)
    atomic_write_bytes(side, (json.dumps(sidecar, indent=2) + "\n").encode())
    if check["passed"] is False:
        raise ExportParityError(f"{out}: exported outputs differ from PyTorch's by {check['max_abs_logit_diff']:.3g} "
                                f"(> {tolerance:g}); the files are kept for inspection, do not deploy them")
    logger.info("exported %s (%s, %s): max |logit diff| %.2e, top-1 agreement %.3f", out, fmt, quantize,
                check["max_abs_logit_diff"], check["top1_agreement"])
    return ExportResult(model_path=out, sidecar_path=side, sidecar=sidecar, step=step)
