"""Reading model.pt files: rebuild, load, and clear errors for damaged or foreign files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fer_models.models import create_model
from server.run_folder import save_model
from simulation.predict.model_io import ModelFileError, load_model_file


def _save(path: Path, *, name: str = "cnn", state: dict | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("cnn")
    save_model(path, state_dict=state if state is not None else model.state_dict(), model=name,
               model_options={}, image_size=48, config={"clip-length": 1, "model": "cnn"}, server_round=4)
    return model


def test_loads_the_saved_model_with_its_info(tmp_path: Path) -> None:
    original = _save(tmp_path / "model.pt").eval()
    model, info = load_model_file(path=tmp_path / "model.pt")
    assert info["model"] == "cnn" and info["round"] == 4 and info["config"]["clip-length"] == 1
    assert not model.training
    x = torch.randn(2, 1, 1, 48, 48)
    torch.testing.assert_close(model(x), original(x))


def test_a_run_folder_means_its_model_pt(tmp_path: Path) -> None:
    _save(tmp_path / "model.pt")
    _, info = load_model_file(path=tmp_path)
    assert info["path"] == tmp_path / "model.pt"


def test_truncated_file_raises_model_file_error(tmp_path: Path) -> None:
    _save(tmp_path / "model.pt")
    data = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="damaged"):
        load_model_file(path=tmp_path / "half.pt")


def test_empty_and_non_torch_files_raise_model_file_error(tmp_path: Path) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("hello, not a model\n" * 20)
    for name in ("empty.pt", "text.pt"):
        with pytest.raises(ModelFileError, match="damaged"):
            load_model_file(path=tmp_path / name)


def test_another_format_raises_model_file_error(tmp_path: Path) -> None:
    torch.save({"format": "someone-else-v3", "weights": torch.zeros(3)}, tmp_path / "other.pt")
    torch.save(create_model("cnn").state_dict(), tmp_path / "bare.pt")
    for name in ("other.pt", "bare.pt"):
        with pytest.raises(ModelFileError, match="not a fedfer model"):
            load_model_file(path=tmp_path / name)


def test_weights_of_another_architecture_name_the_differing_keys(tmp_path: Path) -> None:
    _save(tmp_path / "model.pt", name="cnn_attention")
    with pytest.raises(ModelFileError, match=r"missing keys \['pool\.score"):
        load_model_file(path=tmp_path / "model.pt")


def test_wrong_shapes_are_named(tmp_path: Path) -> None:
    state = create_model("cnn").state_dict()
    state["classifier.weight"] = torch.zeros(3, state["classifier.weight"].shape[1])
    _save(tmp_path / "model.pt", state=state)
    with pytest.raises(ModelFileError, match="classifier.weight"):
        load_model_file(path=tmp_path / "model.pt")


def test_unknown_model_name_and_missing_file_raise_model_file_error(tmp_path: Path) -> None:
    _save(tmp_path / "model.pt", name="resnet9000")
    with pytest.raises(ModelFileError, match="unknown model"):
        load_model_file(path=tmp_path / "model.pt")
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(ModelFileError, match="no model.pt"):
        load_model_file(path=tmp_path / "empty-run")
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model_file(path=tmp_path / "missing.pt")
