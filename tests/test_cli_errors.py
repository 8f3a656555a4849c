"""Bad input stops before anything trains, with one message naming what is wrong."""

from __future__ import annotations

import pytest
from PIL import Image

from simulation.cli import main


def _run(capsys, *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    return rc, capsys.readouterr().err


def test_missing_data_path_is_named(capsys, tmp_path):
    rc, err = _run(capsys, "simulate", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"))
    assert rc == 2 and "nowhere" in err and "Traceback" not in err


def test_image_of_the_wrong_size_is_named(capsys, tmp_path, cache_dir):
    root = tmp_path / "fer"
    for split, cls in (("train", "happy"), ("test", "sad")):
        (root / split / cls).mkdir(parents=True)
        Image.new("L", (48, 48)).save(root / split / cls / f"{split}_ok.png")
    Image.new("L", (64, 64)).save(root / "train" / "happy" / "big.png")
    rc, err = _run(capsys, "simulate", "--data", str(root), "--out", str(tmp_path / "o"))
    assert rc == 2 and "big.png" in err and "48" in err


def test_unknown_key_and_wrong_type_are_named(capsys, tmp_path):
    rc, err = _run(capsys, "simulate", "--set", "local-epoch=2", "--out", str(tmp_path / "o"))
    assert rc == 2 and "local-epoch" in err and "local-epochs" in err
    rc, err = _run(capsys, "simulate", "--set", "batch-size=big", "--out", str(tmp_path / "o"))
    assert rc == 2 and "batch-size" in err and "integer" in err


def test_bad_experiment_file_line_is_named(capsys, tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("num-clients: 2\nseed: [oops\n")
    rc, err = _run(capsys, "simulate", str(exp), "--out", str(tmp_path / "o"))
    assert rc == 2 and "exp.yaml" in err and "line" in err


@pytest.mark.parametrize("model", ["nope"])
def test_unknown_model_lists_the_known_ones(capsys, tmp_path, model):
    rc, err = _run(capsys, "simulate", "--set", f"model={model}", "--out", str(tmp_path / "o"))
    assert rc == 2 and "cnn_rnn" in err
