"""Streaming inference: the cnn_rnn's recurrent state carried from frame to frame (PyTorch and ONNX).

The reference for "the window model over frames 0..t" is computed here independently of the step
code: every frame through the model's encoder on its own, Opacus's DPGRU/DPLSTM ``forward`` over the
whole prefix, the readout (last / mean / softmax attention over time) and the classifier.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from opacus.layers import DPGRU

from fer_models.models import create_model
from fer_models.models.rnn_step import RecurrentStep, StepUnsupportedError
from fer_models.serving.export import export_model
from fer_models.serving.runtime import ExportedModelError, TorchPredictor, load_exported, softmax, to_clips
from fer_models.serving.step import TorchStepRunner, carried_runner
from fer_models.serving.video.stream import EmotionStream

SMALL = (8, 8, 8, 8)
#: (rnn, num_layers, readout, temporal_attention)
VARIANTS = [("gru", 1, "last", False), ("gru", 2, "mean", False), ("gru", 2, "last", True),
            ("lstm", 1, "last", False), ("lstm", 2, "last", False), ("lstm", 1, "mean", False),
            ("lstm", 2, "last", True)]


def _model(rnn: str = "gru", layers: int = 1, readout: str = "last", attention: bool = False,
           seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("cnn_rnn", rnn=rnn, num_layers=layers, readout=readout, temporal_attention=attention,
                        channels=SMALL).eval()


@torch.no_grad()
def window_over_prefix(model: torch.nn.Module, clip: torch.Tensor) -> torch.Tensor:
    """``(B, T, 1, S, S)`` → ``(B, K)``: the recurrent model over every frame of ``clip``, frames encoded alone."""
    frames = torch.cat([model.encoder(clip[:, i:i + 1]) for i in range(clip.shape[1])], dim=1)
    out, _ = model.rnn(frames)
    if model.attention is not None:
        weights = torch.softmax(model.attention.score(out).squeeze(-1), dim=1)
        pooled = (weights[..., None] * out).sum(dim=1)
    else:
        pooled = out.mean(dim=1) if model.readout == "mean" else out[:, -1]
    return model.classifier(pooled)


@torch.no_grad()
def carried_logits(step: torch.nn.Module, clip: torch.Tensor) -> list[torch.Tensor]:
    state, out = step.zero_state(clip.shape[0]), []
    for t in range(clip.shape[1]):
        logits, state = step(clip[:, t], state)
        out.append(logits)
    return out


def _worst_prefix_gap(model: torch.nn.Module, clip: torch.Tensor) -> float:
    carried = carried_logits(model.step_model(), clip)
    return max(float((c - window_over_prefix(model, clip[:, :t + 1])).abs().max()) for t, c in enumerate(carried))


@pytest.mark.parametrize("rnn,layers,readout,attention", VARIANTS)
def test_carried_state_equals_the_window_over_every_prefix_on_random_weights(rnn, layers, readout, attention,
                                                                             one_thread) -> None:
    model = _model(rnn, layers, readout, attention)
    clip = torch.randn(3, 7, 1, 48, 48, generator=torch.Generator().manual_seed(1))
    assert _worst_prefix_gap(model, clip) <= 1e-4
    with torch.no_grad():  # the window model's own forward over frames 0..t agrees too (per-frame GroupNorm)
        carried = carried_logits(model.step_model(), clip)
        assert max(float((c - model(clip[:, :t + 1])).abs().max()) for t, c in enumerate(carried)) <= 1e-4


def test_the_step_model_shares_the_trained_weights_and_leaves_forward_alone() -> None:
    model = _model("lstm", 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    step = model.step_model()
    assert {id(p) for p in step.parameters()} <= {id(p) for p in model.parameters()}
    assert step.rows == ["h0", "h1", "c0", "c1", "count"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_carried_state_equals_forward_over_every_prefix() -> None:
    """The window model's own ``forward`` over frames 0..t (not the frame-by-frame reference) equals the carried
    state: the encoder normalises each frame alone (per-frame GroupNorm), so encoding a clip's frames together
    or one at a time gives the same embeddings."""
    model = _model()
    clip = torch.randn(2, 4, 1, 48, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        carried = carried_logits(model.step_model(), clip)
        assert max(float((c - model(clip[:, :t + 1])).abs().max()) for t, c in enumerate(carried)) <= 1e-4


def _real_sequence(shared_data: Path, sequence: str) -> tuple[np.ndarray, str]:
    """The 48x48 face crops (onset → apex) of one ckplus_sequences sequence, cut by the product's face crop."""
    import csv

    import cv2

    from fer_models.data.face_crop import sequence_face_squares

    root = shared_data / "ckplus_sequences"
    with open(root / "manifest.csv") as fh:
        rows = sorted((r for r in csv.DictReader(fh) if r["sequence"] == sequence), key=lambda r: int(r["frame"]))
    frames = np.stack([cv2.imread(str(root / r["path"]), cv2.IMREAD_GRAYSCALE) for r in rows])
    crops, found = sequence_face_squares(frames, mode="detect")
    assert found == 1, f"no face found in {sequence}"
    return crops, rows[0]["label"]


@pytest.mark.parametrize("rnn,layers,readout,attention", [("gru", 1, "last", False), ("lstm", 2, "mean", False),
                                                          ("gru", 1, "last", True)])
def test_carried_state_equals_the_window_on_a_real_sequence(shared_data: Path, rnn, layers, readout, attention,
                                                            one_thread) -> None:
    crops, _ = _real_sequence(shared_data, "S130_013")
    clip = torch.from_numpy(to_clips(crops[None]))
    assert clip.shape == (1, len(crops), 1, 48, 48)
    assert _worst_prefix_gap(_model(rnn, layers, readout, attention), clip) <= 1e-4


def test_onnx_step_export_equals_pytorch_and_is_found_beside_the_window_export(tmp_path: Path, one_thread) -> None:
    model = _model("lstm", 2, "last", True)
    result = export_model(model=model, out=tmp_path / "m.onnx", fmt="onnx", clip_length=3)
    assert result.step is not None and result.sidecar["step_model"] == "m.step.onnx"
    side = json.loads((tmp_path / "m.step.json").read_text())
    assert side["kind"] == "step" and side["state"]["rows"][-3:] == ["score_max", "weight_sum", "weighted_sum"]
    assert side["parity"]["passed"] and side["parity"]["max_abs_logit_diff"] <= 1e-4
    runner, why = carried_runner(load_exported(tmp_path / "m.onnx", threads=1))
    assert runner is not None and runner.backend == "onnxruntime" and why == "carried"
    clip = torch.randn(5, 6, 1, 48, 48, generator=torch.Generator().manual_seed(4))  # another batch than export
    state = runner.zero_state(5)
    for t in range(6):
        logits, state = runner.step(clip[:, t].numpy(), state)
        np.testing.assert_allclose(logits, window_over_prefix(model, clip[:, :t + 1]).numpy(), atol=1e-4, rtol=0)
    with pytest.raises(ExportedModelError, match="give m.onnx"):
        load_exported(tmp_path / "m.step.onnx")


def test_models_without_a_carried_form_keep_the_window(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cnn = TorchPredictor(create_model("cnn", channels=SMALL).eval(), clip_length=3, image_size=48)
    assert carried_runner(cnn) == (None, "model CNN has no recurrent state to carry")
    script = export_model(model=_model(), out=tmp_path / "m.ts", fmt="torchscript", clip_length=3)
    assert script.step is None and "step_model" not in script.sidecar  # int8 ONNX exports take this branch too
    runner, why = carried_runner(load_exported(script.model_path))
    assert runner is None and "torchscript runtime has no step model" in why
    model = _model()
    bidirectional = DPGRU(8, 64, batch_first=True, bidirectional=True)
    with pytest.raises(StepUnsupportedError, match="bidirectional"):
        RecurrentStep(encoder=model.encoder, rnn=bidirectional, classifier=model.classifier, readout="last",
                      image_size=48)


def test_each_track_carries_its_own_state_and_a_new_track_starts_from_zero(one_thread) -> None:
    model = _model("gru", 2, "mean")
    runner = TorchStepRunner(model.step_model())
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, size=(120, 260), dtype=np.uint8) for _ in range(5)]
    a, b = (10, 10, 96, 96), (150, 10, 96, 96)
    boxes = [[a], [a, b], [a, b], [a], [a, b]]  # b appears at frame 1 and is missed at frame 3
    script = iter(boxes)
    stream = EmotionStream(predictor=TorchPredictor(model, clip_length=3, image_size=48),
                           detector=lambda gray: next(script), smooth=1.0, stepper=runner, max_missed=2)
    results = [stream.process(f, frame=i, time_s=i / 10) for i, f in enumerate(frames)]
    from fer_models.data.face_crop import crop_square

    for face_box, seen_in in ((a, range(5)), (b, (1, 2, 4))):
        crops = np.stack([crop_square(frames[i], face_box[:3], side_out=48) for i in seen_in])
        expected = softmax(window_over_prefix(model, torch.from_numpy(to_clips(crops[None]))).numpy())[0]
        face = next(f for f in results[-1].faces if f.box == face_box)
        np.testing.assert_allclose(face.probs, expected, atol=1e-5)
    first_b = next(f for f in results[1].faces if f.box == b)  # one frame: the zero state, not a's
    alone = crop_square(frames[1], b[:3], side_out=48)[None, None]
    np.testing.assert_allclose(first_b.probs, softmax(window_over_prefix(model, torch.from_numpy(to_clips(alone)))
                                                      .numpy())[0], atol=1e-5)
