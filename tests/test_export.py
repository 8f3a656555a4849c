"""`fedfer export`: ONNX / TorchScript files equal to the PyTorch model, sidecar, refusals.

Small untrained models (narrow conv channels) keep the exports fast; parity is checked against
the PyTorch model on random clips here, independently of the check the exporter itself does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_models.common.labels import EMOTIONS
from fer_models.models import create_model, list_models
from fer_models.models.scatter import ScatterFrontend
from fer_models.serving.export import ExportParityError, example_clips, export_model, exportable
from fer_models.serving.runtime import ExportedModelError, load_exported, softmax
from server.run_folder import save_model
from simulation.commands.cli import main

SMALL = {"pixels": (8, 8, 8, 8), "scatter": (8, 8)}


def _small(name: str, frontend: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, frontend=frontend, channels=SMALL[frontend]).eval()


def _eager(model: torch.nn.Module, clips: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(clips).numpy()


@pytest.mark.parametrize("clip_length", [1, 3])
@pytest.mark.parametrize("frontend", ["pixels", "scatter"])
@pytest.mark.parametrize("name", list_models())
def test_exported_onnx_and_torchscript_equal_pytorch(name: str, frontend: str, clip_length: int, tmp_path: Path,
                                                      one_thread) -> None:
    model = _small(name, frontend)
    clips = example_clips(batch=3, clip_length=clip_length, image_size=48, seed=7)  # another batch size than export
    expected = _eager(model, clips)
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".ts")):
        result = export_model(model=model, out=tmp_path / f"m{suffix}", fmt=fmt, clip_length=clip_length)
        assert result.parity["passed"] and result.parity["max_abs_logit_diff"] <= 1e-4
        predictor = load_exported(result.model_path)
        got = predictor.logits(clips.numpy())
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
        assert predictor.clip_length == clip_length


@pytest.mark.parametrize("image_size,J", [(48, 2), (64, 3)])
def test_scatter_graph_equals_kymatio(image_size: int, J: int) -> None:
    frontend = ScatterFrontend(image_size=image_size, J=J).eval()
    wrapped = torch.nn.Sequential(frontend)
    graph = exportable(wrapped)[0]
    assert not isinstance(graph, ScatterFrontend)
    x = torch.randn(2, 1, 2, image_size, image_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        raw_kymatio = frontend.scattering(x.contiguous())  # (B, C, T, K, h, w), kymatio's own order
        raw_graph = graph.scattering(x.reshape(-1, image_size, image_size))
        np.testing.assert_allclose(raw_graph.numpy(), raw_kymatio.reshape(raw_graph.shape).numpy(), atol=1e-5)
        np.testing.assert_allclose(graph(x).numpy(), frontend(x).numpy(), atol=1e-4)


def test_int8_export_reports_agreement_without_the_fp32_tolerance(tmp_path: Path, one_thread) -> None:
    model = _small("cnn_rnn", "pixels")
    result = export_model(model=model, out=tmp_path / "q.onnx", fmt="onnx", clip_length=3, quantize="int8")
    p = result.parity
    assert result.sidecar["quantize"] == "int8" and p["tolerance"] is None and p["passed"] is None
    clips = example_clips(batch=4, clip_length=3, image_size=48, seed=2)  # the exporter's parity clips
    got = load_exported(result.model_path).logits(clips.numpy())
    diff = np.abs(softmax(got) - softmax(_eager(model, clips))).max()
    assert p["max_abs_prob_diff"] == pytest.approx(diff, abs=1e-6)


def test_parity_beyond_the_tolerance_refuses_the_export(tmp_path: Path) -> None:
    with pytest.raises(ExportParityError, match="differ from PyTorch"):
        export_model(model=_small("cnn", "pixels"), out=tmp_path / "m.ts", fmt="torchscript", clip_length=1,
                     tolerance=-1.0)


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    model = _small("cnn_rnn", "pixels")
    run = tmp_path / "run"
    run.mkdir()
    save_model(run / "model.pt", state_dict=model.state_dict(), model="cnn_rnn",
               model_options={"channels": list(SMALL["pixels"])}, config={"clip-length": 3, "run-name": "r"},
               server_round=4, image_size=48)
    return run


def test_cli_export_writes_model_and_sidecar(run_dir: Path, capsys) -> None:
    assert main(["export", str(run_dir), "--format", "torchscript"]) == 0
    out = capsys.readouterr().out
    assert "within 0.0001" in out and "top-1 agreement 1.000" in out
    side = json.loads((run_dir / "model.json").read_text())
    assert side["classes"] == list(EMOTIONS) and side["clip_length"] == 3 and side["image_size"] == 48
    assert side["model"] == "cnn_rnn" and side["source"]["round"] == 4
    assert side["normalization"]["mean"] == 0.5 and side["normalization"]["std"] == 0.25
    assert (run_dir / "model.ts").stat().st_size == side["size_bytes"]


def test_exported_model_from_another_version_is_refused(run_dir: Path, capsys) -> None:
    assert main(["export", str(run_dir), "--format", "torchscript"]) == 0
    side = run_dir / "model.json"
    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, "format": "fedfer-export-v0"}))
    with pytest.raises(ExportedModelError, match="another fedfer version"):
        load_exported(run_dir / "model.ts")
    side.unlink()
    with pytest.raises(ExportedModelError, match="sidecar"):
        load_exported(run_dir / "model.ts")


def test_damaged_exported_file_is_refused(run_dir: Path) -> None:
    assert main(["export", str(run_dir), "--format", "torchscript"]) == 0
    (run_dir / "model.ts").write_bytes(b"not a model")
    with pytest.raises(ExportedModelError, match="damaged"):
        load_exported(run_dir / "model.ts")


def test_cli_export_of_a_missing_model_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["export", str(tmp_path / "nope"), "--format", "onnx"]) == 2
    assert "does not exist" in capsys.readouterr().err
