"""``fedfer evaluate`` and ``fedfer predict`` on a model trained briefly on synthetic faces."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fer_models.config import RunConfig
from fer_models.data import load_dataset
from fer_models.data.samples import static_clips
from fer_models.models import create_model
from fer_models.models.from_config import build_model
from fer_models.training import engine
from server.run_folder import save_model
from simulation.commands.cli import main
from simulation.commands.cmd_predict import prepare_face

SETTINGS = {"data-format": "synthetic", "synthetic-per-class": 20, "synthetic-eval-per-class": 10,
            "eval-batch-size": 32, "model": "cnn"}


def _store():
    return load_dataset(data_format="synthetic", synthetic_per_class=20, synthetic_eval_per_class=10)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder holding a model.pt trained for a few steps on the synthetic faces."""
    cfg = RunConfig.from_flat(SETTINGS)
    store = _store()
    data = static_clips(store, store.indices("train"), clip_length=1)
    model = build_model(cfg)
    optimizer = engine.make_optimizer(model, name="adamw", learning_rate=3e-3, weight_decay=0.0)
    engine.train(model=model, data=data, optimizer=optimizer, epochs=1, device=torch.device("cpu"),
                 loader=engine.index_loader(len(data), batch_size=32, seed=0))
    run = tmp_path_factory.mktemp("run")
    save_model(run / "model.pt", state_dict=model.state_dict(), model="cnn", model_options={}, image_size=48,
               config=cfg.to_flat(), server_round=1)
    return run


def _independent_accuracy(run: Path, split: str) -> float:
    saved = torch.load(run / "model.pt", weights_only=True)
    model = create_model("cnn")
    model.load_state_dict(saved["state_dict"])
    store = _store()
    res = engine.evaluate(model=model, data=static_clips(store, store.indices(split), clip_length=1),
                          batch_size=16, device=torch.device("cpu"))
    return res.accuracy


def test_evaluate_matches_an_independent_engine_evaluation(run_dir: Path) -> None:
    assert main(["evaluate", str(run_dir)]) == 0
    out = run_dir / "evaluations" / "synthetic-test"
    result = json.loads((out / "evaluation.json").read_text())
    assert result["split"] == "test" and result["n"] == 70
    assert result["accuracy"] == pytest.approx(_independent_accuracy(run_dir, "test"), abs=1e-12)
    for key in ("macro_f1", "weighted_f1", "per_class", "confusion_matrix", "loss"):
        assert key in result
    assert (out / "confusion_matrix.png").stat().st_size > 5_000


def test_evaluate_scores_the_requested_split(run_dir: Path, tmp_path: Path) -> None:
    assert main(["evaluate", str(run_dir / "model.pt"), "--split", "val", "--out", str(tmp_path / "v"),
                 "--batch-size", "7"]) == 0
    result = json.loads((tmp_path / "v" / "evaluation.json").read_text())
    assert result["split"] == "val"
    assert result["accuracy"] == pytest.approx(_independent_accuracy(run_dir, "val"), abs=1e-12)
    assert main(["evaluate", str(run_dir), "--split", "all", "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "evaluation.json").read_text())["n"] == 280


def test_evaluate_never_overwrites_without_the_flag(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "e")
    assert main(["evaluate", str(run_dir), "--out", out]) == 0
    assert main(["evaluate", str(run_dir), "--out", out]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["evaluate", str(run_dir), "--out", out, "--overwrite"]) == 0


def test_evaluate_on_a_damaged_model_exits_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "model.pt").write_bytes(b"\x80\x04garbage")
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "damaged" in capsys.readouterr().err


def _rgb_png(path: Path) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, size=(80, 100, 3), dtype=np.uint8), "RGB").save(path)
    return path


def test_predict_prints_three_sorted_probabilities(run_dir: Path, tmp_path: Path, capsys) -> None:
    image = _rgb_png(tmp_path / "face.png")
    assert main(["predict", str(image), "--model", str(run_dir), "--json"]) == 0
    top = json.loads(capsys.readouterr().out)["images"][0]["top"]
    probs = [t["probability"] for t in top]
    assert len(top) == 3 and all(0.0 <= p <= 1.0 for p in probs)
    assert probs == sorted(probs, reverse=True)
    assert main(["predict", str(image), "--model", str(run_dir / "model.pt")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == str(image) and len(lines) == 4
    assert [line.split()[0] for line in lines[1:]] == [t["emotion"] for t in top]


def test_predict_missing_image_exits_2_naming_the_file(run_dir: Path, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nobody.jpg"
    assert main(["predict", str(missing), "--model", str(run_dir)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_predict_unreadable_image_exits_2_naming_the_file(run_dir: Path, tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    assert main(["predict", str(broken), "--model", str(run_dir)]) == 2
    assert str(broken) in capsys.readouterr().err


def test_prepare_face_centre_crops_then_resizes_to_48(tmp_path: Path) -> None:
    pixels = np.zeros((80, 100, 3), dtype=np.uint8)
    pixels[:, :10] = 255  # bright margins outside the centred 80x80 square
    pixels[:, 90:] = 255
    face = prepare_face(image=Image.fromarray(pixels, "RGB"))
    assert face.shape == (48, 48) and face.dtype == np.uint8
    assert face.max() == 0


def test_predict_warns_that_a_model_of_the_synthetic_faces_says_nothing_about_real_ones(run_dir: Path, tmp_path: Path,
                                                                                         caplog) -> None:
    image = _rgb_png(tmp_path / "face.png")
    with caplog.at_level(logging.WARNING, logger="fedfer"):
        assert main(["predict", str(image), "--model", str(run_dir), "--json"]) == 0
    assert "trained on fedfer's SYNTHETIC faces" in caplog.text
    real = tmp_path / "real"  # control: the same weights, recorded as trained on a real dataset
    real.mkdir()
    record = torch.load(run_dir / "model.pt", weights_only=False)
    save_model(real / "model.pt", state_dict=record["state_dict"], model="cnn", model_options={}, image_size=48,
               config={**record["config"], "data-path": "/data/fer2013", "data-format": "auto"}, server_round=1)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fedfer"):
        assert main(["predict", str(image), "--model", str(real), "--json"]) == 0
    assert "SYNTHETIC" not in caplog.text


@pytest.mark.parametrize("config,warns", [({"data-path": ""}, True), ({"data-format": "synthetic", "data-path": "x"}, True),
                                          ({"data-path": "/data/fer2013"}, False),
                                          ({"client-data": "site", "data-path": ""}, False), ({}, False)])
def test_only_runs_on_the_embedded_synthetic_faces_get_the_warning(config: dict, warns: bool) -> None:
    from simulation.predict.inference import synthetic_training_warning

    assert (synthetic_training_warning(config, source="m.pt") is not None) is warns


def test_the_python_api_returns_what_the_commands_print_and_raises_their_errors(run_dir: Path, tmp_path: Path,
                                                                                capsys) -> None:
    import fedfer
    from fer_models.config import ConfigError
    from simulation.commands.cmd_predict import ImageReadError

    image = _rgb_png(tmp_path / "face.png")
    got = fedfer.predict([image], model=run_dir)
    assert capsys.readouterr().out == ""  # the API prints nothing on stdout
    assert main(["predict", str(image), "--model", str(run_dir), "--json"]) == 0
    assert got == json.loads(capsys.readouterr().out)["images"]
    scores = fedfer.evaluate(run_dir, out=tmp_path / "e")
    assert scores["accuracy"] == json.loads((tmp_path / "e" / "evaluation.json").read_text())["accuracy"]
    with pytest.raises(ImageReadError, match="missing.png"):
        fedfer.predict([tmp_path / "missing.png"], model=run_dir)
    with pytest.raises(ConfigError, match="num-clients"):
        fedfer.simulate({"num-clients": "abc"})  # refused before anything starts
    with pytest.raises(ValueError, match="invalid arguments"):
        fedfer.run_command(["predict", "--no-such-flag"])


def test_predict_labels_photos_with_an_onnx_export_as_with_its_model_pt(run_dir: Path, tmp_path: Path, capsys) -> None:
    image = _rgb_png(tmp_path / "face.png")
    onnx = tmp_path / "model.onnx"
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(onnx)]) == 0
    capsys.readouterr()
    assert main(["predict", str(image), "--model", str(run_dir), "--json", "--top", "7"]) == 0
    eager = json.loads(capsys.readouterr().out)
    assert main(["predict", str(image), "--model", str(onnx), "--json", "--top", "7"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["model"] == str(onnx) and exported["round"] == eager["round"] == 1
    probs = {t["emotion"]: t["probability"] for t in eager["images"][0]["top"]}
    assert {t["emotion"]: pytest.approx(probs[t["emotion"]], abs=1e-4) for t in exported["images"][0]["top"]} == probs


def _top(capsys) -> tuple[list[dict], str]:
    out = capsys.readouterr()
    return json.loads(out.out)["images"], out.err


def test_predict_face_crop_center_takes_the_documented_square_and_detect_reports_a_photo_without_face(
        run_dir: Path, tmp_path: Path, capsys, caplog) -> None:
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(7)
    photo = tmp_path / "head.png"
    coarse = Image.fromarray(rng.integers(0, 256, size=(10, 12), dtype=np.uint8), "L")
    coarse.resize((240, 200), Image.Resampling.BILINEAR).save(photo)
    # the fixed square, from the documented fractions: side 0.63 x 200 = 126, centre (0.51 x 240, 0.57 x 200)
    side, x, y = 126, round(0.51 * 240 - 63), round(0.57 * 200 - 63)
    square = tmp_path / "square.png"
    crop = np.ascontiguousarray(np.asarray(Image.open(photo))[y:y + side, x:x + side])
    Image.fromarray(cv2.resize(crop, (48, 48), interpolation=cv2.INTER_AREA), "L").save(square)  # a 48x48 face
    assert main(["predict", str(photo), "--model", str(run_dir), "--json", "--face-crop", "center", "--top", "7"]) == 0
    (center,), _ = _top(capsys)
    assert main(["predict", str(square), "--model", str(run_dir), "--json", "--face-crop", "none", "--top", "7"]) == 0
    (cropped,), _ = _top(capsys)
    assert center["face"] == cropped["face"] == "not searched"
    probs = {t["emotion"]: t["probability"] for t in cropped["top"]}
    assert {t["emotion"]: t["probability"] for t in center["top"]} == pytest.approx(probs, abs=1e-6)
    assert main(["predict", str(photo), "--model", str(run_dir), "--json", "--face-crop", "detect"]) == 0
    (detect,), _ = _top(capsys)
    assert detect["face"] == "not found: fixed square used" and f"{photo}: no face found" in caplog.text


def test_predict_finds_the_face_in_a_jaffe_head_photo_by_default(run_dir: Path, shared_data: Path, tmp_path: Path,
                                                                 capsys) -> None:
    from fer_models.data.face_crop import face_square

    tiff = sorted((shared_data / "jaffe").rglob("*.tiff"))[0]
    assert main(["predict", str(tiff), "--model", str(run_dir), "--json", "--top", "7"]) == 0  # auto: 256 > 96
    (auto,), _ = _top(capsys)
    face, found = face_square(np.asarray(Image.open(tiff).convert("L")), mode="detect")
    assert auto["face"] == "detected" and found == 1
    as_face = tmp_path / "face.png"
    Image.fromarray(face, "L").save(as_face)  # the 48x48 face the JAFFE reader trains on
    assert main(["predict", str(as_face), "--model", str(run_dir), "--json", "--top", "7"]) == 0
    (same,), _ = _top(capsys)
    assert same["top"] == auto["top"] and same["face"] == "not searched"
    assert main(["predict", str(tiff), "--model", str(run_dir), "--json", "--top", "7", "--face-crop", "none"]) == 0
    (whole,), _ = _top(capsys)  # the control: the whole head photo, resized, is read differently
    assert whole["top"] != auto["top"]
